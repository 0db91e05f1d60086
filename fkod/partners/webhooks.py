"""A partner's webhook endpoints: create, change, delete, test, secrets and deliveries.

An endpoint that is deleted keeps its row and its deliveries but is a 404
everywhere. Replaying a delivery and recovering failed ones start a new run of
attempts on the existing delivery row, with a conditional update on its
current status, so a replay racing the delivery worker never runs a delivery
twice. Deliveries are enqueued after the commit; the sweeper finds any that
were not, because they are pending and due.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time

import sqlalchemy as sa
from sqlalchemy import orm

from fkod.core import audit, jsonutil
from fkod.core.auth.models import Partner
from fkod.core.db import utcnow
from fkod.core.errors import Conflict, NotFound, RateLimited, ValidationFailed, field_error
from fkod.core.ids import public_id
from fkod.core.ratelimit import LimitCheck, RateLimiterUnavailable
from fkod.core.webhooks import signing
from fkod.core.webhooks.catalog import EVENT_NAME, check_event_patterns, pattern_matches
from fkod.core.webhooks.delivery import (
    RESERVED_HEADERS,
    previous_secret_active,
    signing_secret_tokens,
)
from fkod.core.webhooks.http import post_webhook
from fkod.core.webhooks.models import Event, Webhook, WebhookAttempt, WebhookEvent
from fkod.core.webhooks.outbox import DELIVER_ACTOR, build_payload, new_event_id
from fkod.core.webhooks.urls import RESOLVER_KEY, UnsafeUrl, validate_webhook_url
from fkod.partners.services import require_live_mode_allowed

log = logging.getLogger(__name__)

# The maximum number of deliveries one request enqueues. The sweeper enqueues
# the rest, because they are due.
MAX_ENQUEUED = 1000
MAX_RECOVERY_DAYS = 30
TEST_RESPONSE_CHARS = 1024


# Checks -----------------------------------------------------------------------


def check_webhook_url(request, url: str) -> str:
    settings = request.registry.settings
    try:
        return validate_webhook_url(
            url,
            allow_loopback=settings["fkod.webhooks.allow_loopback"],
            require_https=settings["fkod.webhooks.require_https"],
            resolver=request.registry.get(RESOLVER_KEY),
        )
    except UnsafeUrl as exc:
        raise ValidationFailed(exc.message, code="invalid_webhook_url",
                               errors=[field_error("body", "url", exc.message)]) from None


def _check_headers(headers: dict) -> dict:
    errors = []
    for name, value in headers.items():
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
            errors.append(field_error("body", f"headers.{name}", "not a valid header name"))
        elif name.lower() in RESERVED_HEADERS:
            errors.append(field_error("body", f"headers.{name}", "set by the platform; choose "
                                                                 "another header"))
        elif not (value.isascii() and value.isprintable()):
            errors.append(field_error("body", f"headers.{name}",
                                      "must be printable ASCII, without line breaks"))
    if errors:
        raise ValidationFailed(errors[0]["description"], errors=errors)
    return headers


def _audit(request, action: str, webhook: Webhook, details: dict | None = None) -> None:
    audit.record(request, action, partner_id=webhook.partner_id, target_type="webhook",
                 target_id=public_id("whk", webhook.id), details=details)


def _enqueue_after_commit(request, delivery_ids: list[int]) -> None:
    tasks = request.registry["tasks"]
    for delivery_id in delivery_ids[:MAX_ENQUEUED]:
        tasks.send_after_commit(request.tm, DELIVER_ACTOR, delivery_id)


# Endpoints --------------------------------------------------------------------


def create_webhook(request, partner: Partner, data: dict) -> tuple[Webhook, str]:
    """Subscribe a URL to event types; return the endpoint and its new signing secret."""
    patterns = data.get("event_types") or [data["event_type"]]
    patterns = check_event_patterns(request.registry["plugins"], patterns)
    require_live_mode_allowed(partner, data["mode"], "webhooks", request.user)
    url = check_webhook_url(request, data["url"])
    headers = _check_headers(data.get("headers") or {})

    secret = signing.generate_secret()
    webhook = Webhook(
        partner_id=partner.id, event_type=patterns[0], event_types=patterns, url=url,
        secret_key=request.registry["webhook_vault"].encrypt(secret), headers=headers,
        status="active", retry_count=data["retry_count"], retry_delay=data["retry_delay"],
        livemode=data["mode"] == "live", description=data.get("description"),
    )
    request.dbsession.add(webhook)
    request.dbsession.flush()
    _audit(request, "webhook.created", webhook)
    log.info("webhook created", extra={"partner_id": partner.id, "webhook_id": webhook.id})
    return webhook, secret


def webhooks_query(partner: Partner):
    return sa.select(Webhook).where(Webhook.partner_id == partner.id,
                                    Webhook.status != "deleted")


def get_webhook(request, webhook_id: int, *, for_update: bool = False) -> Webhook:
    """Return an endpoint of the caller's partner; raise a 404 for a deleted or foreign one."""
    query = webhooks_query(request.partner).where(Webhook.id == webhook_id)
    if for_update:
        query = query.with_for_update()
    webhook = request.dbsession.scalar(query)
    if webhook is None:
        raise NotFound(f"No webhook endpoint with id whk_{webhook_id}.")
    return webhook


def _due_deliveries(session, webhook_id: int, now: dt.datetime) -> list[int]:
    return list(session.scalars(
        sa.select(WebhookEvent.id)
        .where(WebhookEvent.webhook_id == webhook_id, WebhookEvent.status == "pending",
               sa.or_(WebhookEvent.next_retry_at.is_(None), WebhookEvent.next_retry_at <= now))
        .order_by(WebhookEvent.next_retry_at, WebhookEvent.id)
        .limit(MAX_ENQUEUED)
    ))


def update_webhook(request, webhook_id: int, data: dict) -> Webhook:
    """Change the given fields and return the endpoint.

    Setting a disabled endpoint active re-enables it. Once the endpoint is
    active again, its due pending deliveries are enqueued after the commit.
    """
    webhook = get_webhook(request, webhook_id, for_update=True)
    if "event_type" in data:
        data["event_types"] = [data.pop("event_type")]
    if "event_types" in data:
        data["event_types"] = check_event_patterns(request.registry["plugins"],
                                                   data["event_types"])
    if "url" in data:
        data["url"] = check_webhook_url(request, data["url"])
    if "headers" in data:
        data["headers"] = _check_headers(data["headers"])

    changed = sorted(name for name, value in data.items() if getattr(webhook, name) != value)
    if not changed:
        return webhook
    previous_status = webhook.status
    for name in changed:
        setattr(webhook, name, data[name])
    if "event_types" in changed:
        webhook.event_type = webhook.event_types[0]
    if previous_status == "disabled" and webhook.status != "disabled":
        webhook.disabled_reason = None
        webhook.disabled_at = None
        webhook.failing_since = None
    now = utcnow()
    webhook.updated_at = now
    request.dbsession.flush()

    if previous_status != "active" and webhook.status == "active":
        _enqueue_after_commit(request, _due_deliveries(request.dbsession, webhook.id, now))
    _audit(request, "webhook.updated", webhook, {"fields": changed})
    log.info("webhook updated", extra={"partner_id": webhook.partner_id,
                                       "webhook_id": webhook.id, "fields": changed})
    return webhook


def delete_webhook(request, webhook_id: int) -> None:
    """Mark the endpoint deleted. Its row and deliveries stay, and nothing more is sent to it."""
    webhook = get_webhook(request, webhook_id, for_update=True)
    webhook.status = "deleted"
    webhook.updated_at = utcnow()
    _audit(request, "webhook.deleted", webhook)
    log.info("webhook deleted", extra={"partner_id": webhook.partner_id,
                                       "webhook_id": webhook.id})


# Secrets ----------------------------------------------------------------------


def signing_secrets(vault, webhook: Webhook, now: dt.datetime) -> list[str]:
    """Return the secrets a delivery is signed with: the replaced one while it overlaps, then
    the current one."""
    return [vault.decrypt(token) for token in signing_secret_tokens(webhook, now)]


def rotate_secret(request, webhook_id: int, overlap_seconds: int | None) -> tuple[Webhook, str]:
    """Give the endpoint a new secret, and sign deliveries with both for ``overlap_seconds``.

    A secret replaced by an earlier rotation stops being used now, so
    deliveries carry at most two signatures per scheme.
    """
    webhook = get_webhook(request, webhook_id, for_update=True)
    if overlap_seconds is None:
        overlap_seconds = request.registry.settings["fkod.webhooks.secret_overlap_seconds"]
    now = utcnow()
    secret = signing.generate_secret()

    webhook.previous_secret_key = webhook.secret_key
    webhook.previous_secret_expires_at = now + dt.timedelta(seconds=overlap_seconds)
    webhook.secret_key = request.registry["webhook_vault"].encrypt(secret)
    webhook.secret_rotated_at = now
    webhook.updated_at = now

    _audit(request, "webhook.secret_rotated", webhook, {"overlap_seconds": overlap_seconds})
    log.info("webhook secret rotated", extra={"partner_id": webhook.partner_id,
                                              "webhook_id": webhook.id,
                                              "overlap_seconds": overlap_seconds})
    return webhook, secret


def reveal_secret(request, webhook_id: int) -> dict:
    """Audit the reveal and return the current secret, and the replaced one while it signs."""
    webhook = get_webhook(request, webhook_id)
    vault = request.registry["webhook_vault"]
    previous = None
    if previous_secret_active(webhook, utcnow()):
        previous = vault.decrypt(webhook.previous_secret_key)

    _audit(request, "webhook.secret_revealed", webhook,
           {"previous_secret_included": previous is not None})
    return {"id": webhook.id, "secret": vault.decrypt(webhook.secret_key),
            "previous_secret": previous,
            "previous_secret_expires_at": webhook.previous_secret_expires_at}


# Test events ------------------------------------------------------------------


def _test_event_type(request, webhook: Webhook, name: str | None):
    """Return the catalog entry to send: ``name``, or the first one the endpoint covers."""
    host = request.registry["plugins"]
    available = host.event_catalog.available(host.is_enabled)
    covered = [item for item in available
               if any(pattern_matches(pattern, item.name) for pattern in webhook.event_types)]
    if name is None:
        if not covered:
            raise Conflict("No available event type matches the endpoint's event_types; a "
                           "plugin they relied on may be disabled.", code="no_event_type")
        return covered[0]

    if not EVENT_NAME.match(name):
        problem = "is not an event type name such as user.created"
    elif all(item.name != name for item in available):
        problem = "is not an available event type; see GET /api/webhooks/available-events"
    elif all(item.name != name for item in covered):
        problem = "is not covered by the endpoint's event_types"
    else:
        return next(item for item in covered if item.name == name)
    raise ValidationFailed(f"Event type {name!r} {problem}.", code="invalid_event_type",
                           errors=[field_error("body", "event_type", f"{name!r} {problem}")])


def _limit_test_sends(request, partner_id: int) -> None:
    """Raise 429 when the partner has sent its allowance of test events this minute.

    A test event waits for the receiver inside the request, so without a limit a
    slow receiver could hold many request threads at once.
    """
    check = LimitCheck(f"webhook-tests:{partner_id}",
                       request.registry.settings["fkod.webhooks.test_sends_per_minute"], 60)
    try:
        decision = request.registry["rate_limiter"].hit([check])
    except RateLimiterUnavailable:
        log.warning("webhook test sends not limited: the rate limiter is unavailable")
        return
    if not decision.allowed:
        raise RateLimited(
            f"Too many test events this minute; retry in {decision.retry_after} seconds.",
            code="rate_limited", retry_after=decision.retry_after)


def send_test_event(request, webhook_id: int, event_type: str | None) -> dict:
    """POST a signed sample event to the endpoint now and report the receiver's response.

    The event gets a fresh id and is not stored, so it has no delivery and is
    never retried. Paused and disabled endpoints can be tested too.
    """
    webhook = get_webhook(request, webhook_id)
    chosen = _test_event_type(request, webhook, event_type)
    settings = request.registry.settings
    _limit_test_sends(request, webhook.partner_id)
    event_id = new_event_id()
    body = jsonutil.dumps(build_payload(event_id, chosen.name, chosen.sample,
                                        request.request_id, int(time.time())))

    headers = {name: value for name, value in (webhook.headers or {}).items()
               if name.lower() not in RESERVED_HEADERS}
    headers["Content-Type"] = "application/json"
    secrets = signing_secrets(request.registry["webhook_vault"], webhook, utcnow())
    headers.update(signing.sign_delivery(secrets, message_id=event_id,
                                         timestamp=int(time.time()), body=body))

    partner_id, url = webhook.partner_id, webhook.url
    # End the request's transaction before calling out, so a slow receiver does
    # not hold a database connection, or on SQLite the write lock, meanwhile.
    # pyramid_tm commits the fresh transaction begun here as usual.
    request.tm.commit()
    request.tm.begin()
    result = post_webhook(url, body, headers,
                          timeout_seconds=settings["fkod.webhooks.timeout_seconds"],
                          allow_loopback=settings["fkod.webhooks.allow_loopback"],
                          connect_timeout_seconds=settings["fkod.webhooks.connect_timeout_seconds"],
                          max_response_bytes=settings["fkod.webhooks.max_response_bytes"],
                          resolver=request.registry.get(RESOLVER_KEY))
    success = result.status_code is not None and 200 <= result.status_code < 300
    log.info("webhook test event sent", extra={
        "partner_id": partner_id, "webhook_id": webhook_id, "event_id": event_id,
        "status_code": result.status_code, "error": result.error})
    return {"event_id": event_id, "event_type": chosen.name, "success": success,
            "status_code": result.status_code, "latency_ms": result.duration_ms,
            "response_body": (result.body or "")[:TEST_RESPONSE_CHARS], "error": result.error}


# Deliveries -------------------------------------------------------------------


def _event_type_condition(pattern: str):
    """Return the SQL condition for an event type name or pattern, or None for ``*``."""
    if pattern == "*":
        return None
    if "*" not in pattern:
        return WebhookEvent.event_type == pattern
    # Event type names contain "_", which LIKE would read as any one character.
    like = pattern.replace("_", "\\_").replace("*", "%")
    return WebhookEvent.event_type.like(like, escape="\\")


def deliveries_query(partner: Partner, filters: dict, *, webhook_id: int | None = None):
    """Select the deliveries to the partner's endpoints that are not deleted, filtered."""
    query = (
        sa.select(WebhookEvent)
        .join(Webhook, Webhook.id == WebhookEvent.webhook_id)
        .where(Webhook.partner_id == partner.id, Webhook.status != "deleted")
        .options(orm.joinedload(WebhookEvent.event).load_only(Event.public_id),
                 orm.defer(WebhookEvent.event_data), orm.defer(WebhookEvent.response_body))
    )
    webhook_id = filters.get("webhook_id", webhook_id)
    if webhook_id is not None:
        query = query.where(WebhookEvent.webhook_id == webhook_id)
    if filters.get("status") is not None:
        query = query.where(WebhookEvent.status == filters["status"])
    if filters.get("event_type") is not None:
        condition = _event_type_condition(filters["event_type"])
        if condition is not None:
            query = query.where(condition)
    if filters.get("created_after") is not None:
        query = query.where(WebhookEvent.created_at >= filters["created_after"])
    if filters.get("created_before") is not None:
        query = query.where(WebhookEvent.created_at < filters["created_before"])
    return query


def get_delivery(request, webhook: Webhook, event_id: str) -> WebhookEvent:
    delivery = request.dbsession.scalar(
        sa.select(WebhookEvent)
        .join(Event, Event.id == WebhookEvent.event_id)
        .where(WebhookEvent.webhook_id == webhook.id, Event.public_id == event_id)
        .order_by(WebhookEvent.id)
        .limit(1)
    )
    if delivery is None:
        raise NotFound(f"No delivery of event {event_id} to webhook endpoint "
                       f"whk_{webhook.id}.")
    return delivery


def delivery_with_attempts(request, webhook_id: int,
                           event_id: str) -> tuple[WebhookEvent, list[WebhookAttempt]]:
    """Return one delivery and its attempts, oldest first."""
    delivery = get_delivery(request, get_webhook(request, webhook_id), event_id)
    attempts = request.dbsession.scalars(
        sa.select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery.id)
        .order_by(WebhookAttempt.id)
    ).all()
    return delivery, list(attempts)


def response_body_redactor(webhook: Webhook, *, show_header_values: bool):
    """Return a function that hides the endpoint's custom header values in a response body.

    A receiver that echoes its request stores those values in its response body, so
    members who may not see the values get **** in their place there too.
    """
    values = sorted({value for value in (webhook.headers or {}).values() if value},
                    key=len, reverse=True)
    if show_header_values or not values:
        return lambda text: text

    def redact(text: str | None) -> str | None:
        for value in values if text else ():
            text = text.replace(value, "****")
        return text

    return redact


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds") + "Z"


def _new_run_values(now: dt.datetime) -> dict:
    """Column values that start a new run of attempts on a finished delivery."""
    return {"status": "pending", "attempts": 0, "next_retry_at": now, "completed_at": None,
            "locked_until": None, "replay_count": WebhookEvent.replay_count + 1,
            "replayed_at": now}


def _require_active(webhook: Webhook) -> None:
    if webhook.status != "active":
        raise Conflict(f"The webhook endpoint is {webhook.status}; set its status to active "
                       "to send deliveries.", code="webhook_not_active")


def replay_delivery(request, webhook_id: int, event_id: str) -> WebhookEvent:
    """Send a delivery again: now if it is pending, in a new run if it is finished."""
    webhook = get_webhook(request, webhook_id)
    delivery = get_delivery(request, webhook, event_id)
    session = request.dbsession
    now = utcnow()

    # The update matches only the status read here. If the worker changed the
    # status in between, the delivery is read again and judged on its new status.
    for _read in range(3):
        if delivery.status == "delivering":
            raise Conflict("The delivery is being attempted right now; replay it once the "
                           "attempt has finished.", code="delivery_in_progress")
        _require_active(webhook)
        replayed_status = delivery.status
        values = {"next_retry_at": now} if replayed_status == "pending" else _new_run_values(now)
        updated = session.execute(
            sa.update(WebhookEvent)
            .where(WebhookEvent.id == delivery.id, WebhookEvent.status == replayed_status)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        session.refresh(delivery)
        if updated.rowcount == 1:
            break
    else:
        raise Conflict("The delivery kept changing state; replay it again.",
                       code="delivery_in_progress")

    _enqueue_after_commit(request, [delivery.id])
    _audit(request, "webhook.event_replayed", webhook,
           {"event_id": event_id, "previous_status": replayed_status})
    log.info("webhook delivery replayed", extra={
        "partner_id": webhook.partner_id, "webhook_id": webhook.id,
        "delivery_id": delivery.id, "previous_status": replayed_status})
    return delivery


def recover_deliveries(request, webhook_id: int, since: dt.datetime,
                       until: dt.datetime | None) -> int:
    """Start a new run for every failed delivery created in [since, until) and count them."""
    now = utcnow()
    if until is None:
        until = now
    if since < now - dt.timedelta(days=MAX_RECOVERY_DAYS):
        raise ValidationFailed(
            f"since must be within the last {MAX_RECOVERY_DAYS} days.",
            errors=[field_error("body", "since", f"more than {MAX_RECOVERY_DAYS} days ago")])
    if since >= until:
        raise ValidationFailed("since must be earlier than until (now when until is omitted).",
                               errors=[field_error("body", "since", "not earlier than until")])
    webhook = get_webhook(request, webhook_id)
    _require_active(webhook)

    recovered = request.dbsession.execute(
        sa.update(WebhookEvent)
        .where(WebhookEvent.webhook_id == webhook.id, WebhookEvent.status == "failed",
               WebhookEvent.created_at >= since, WebhookEvent.created_at < until)
        .values(**_new_run_values(now))
        .returning(WebhookEvent.id)
        .execution_options(synchronize_session=False)
    ).scalars().all()

    _enqueue_after_commit(request, sorted(recovered))
    _audit(request, "webhook.recovered", webhook, {
        "since": _iso(since), "until": _iso(until), "recovered": len(recovered)})
    log.info("webhook deliveries recovered", extra={
        "partner_id": webhook.partner_id, "webhook_id": webhook.id,
        "recovered": len(recovered)})
    return len(recovered)
