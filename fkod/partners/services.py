"""Partner accounts, API keys and webhook endpoints: the logic behind the partner API."""

from __future__ import annotations

import logging
import re
import unicodedata

import sqlalchemy as sa

from fkod.core.auth.models import PLATFORM_NAMESPACE, Partner, PartnerMember, User
from fkod.core.billing.models import Plan
from fkod.core.db import utcnow
from fkod.core.errors import Conflict, Forbidden, ValidationFailed, field_error
from fkod.core.webhooks import signing
from fkod.core.webhooks.catalog import EVENT_PATTERN
from fkod.core.webhooks.delivery import RESERVED_HEADERS
from fkod.core.webhooks.models import Webhook
from fkod.core.webhooks.outbox import publish
from fkod.core.webhooks.urls import UnsafeUrl, validate_webhook_url
from fkod.partners.schemas import PartnerSchema

log = logging.getLogger(__name__)


def partner_event_data(partner: Partner) -> dict:
    return PartnerSchema().dump(partner)


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:80] or "partner"


# Partners ---------------------------------------------------------------------


def register_partner(request, data: dict) -> tuple[Partner, User]:
    """Create the owner user, the partner and the owner membership; emit partner.created."""
    session = request.dbsession
    email = data.pop("email")
    password = data.pop("password")
    name = data.pop("name", None)

    exists = session.scalar(sa.select(User.id).where(
        User.email_namespace == PLATFORM_NAMESPACE, User.email == email))
    if exists is not None:
        raise Conflict("An account with this email already exists; log in instead.",
                       code="email_taken", errors=[field_error("body", "email", "already registered")])

    user = User(email=email, name=name, password_hash=request.registry["password_hasher"].hash(password),
                email_namespace=PLATFORM_NAMESPACE, livemode=True)
    session.add(user)
    session.flush()
    default_plan = session.scalar(sa.select(Plan).where(Plan.is_default.is_(True)).limit(1))
    partner = Partner(user_id=user.id, status="pending", verification_status="unverified",
                      plan_id=default_plan.id if default_plan else None, **data)
    session.add(partner)
    session.flush()
    session.add(PartnerMember(partner_id=partner.id, user_id=user.id, role="owner"))
    try:
        session.flush()
    except sa.exc.IntegrityError:
        # Two registrations with one email raced past the check above.
        raise Conflict("An account with this email already exists; log in instead.",
                       code="email_taken") from None

    publish(request, "partner.created", partner_event_data(partner), livemode=True,
            partner_ids=[partner.id])
    log.info("partner registered", extra={"partner_id": partner.id, "user_id": user.id})
    return partner, user


def update_partner(request, partner: Partner, data: dict) -> Partner:
    changed = sorted(name for name, value in data.items() if getattr(partner, name) != value)
    for name in changed:
        setattr(partner, name, data[name])
    if changed:
        partner.updated_at = utcnow()
        request.dbsession.flush()
        payload = partner_event_data(partner)
        payload["changed_fields"] = changed
        publish(request, "partner.updated", payload, livemode=True, partner_ids=[partner.id])
    return partner


def require_live_mode_allowed(partner: Partner, mode: str, what: str) -> None:
    if mode == "live" and partner.verification_status != "verified":
        raise Forbidden(
            f"Live-mode {what} need a verified partner; use mode test until verification "
            "is approved.",
            code="partner_not_verified",
            errors=[field_error("body", "mode", "live mode requires a verified partner")],
        )


# Webhooks ---------------------------------------------------------------------


def _check_event_patterns(request, patterns: list[str]) -> list[str]:
    host = request.registry["plugins"]
    errors = []
    for pattern in patterns:
        if not EVENT_PATTERN.match(pattern):
            errors.append(field_error("body", "event_types",
                                      f"{pattern!r} is not an event type name or pattern"))
        elif not host.event_catalog.matching(pattern, host.is_enabled):
            errors.append(field_error(
                "body", "event_types",
                f"{pattern!r} matches no available event type; see GET /api/webhooks/available-events",
            ))
    if errors:
        raise ValidationFailed(errors[0]["description"], code="invalid_event_type", errors=errors)
    return list(dict.fromkeys(patterns))


def check_webhook_url(request, url: str) -> str:
    settings = request.registry.settings
    try:
        return validate_webhook_url(
            url,
            allow_loopback=settings["fkod.webhooks.allow_loopback"],
            require_https=settings["fkod.webhooks.require_https"],
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


def create_webhook(request, partner: Partner, data: dict) -> tuple[Webhook, str]:
    """Subscribe a URL to event types; return the endpoint and its new signing secret."""
    patterns = data.get("event_types") or [data["event_type"]]
    patterns = _check_event_patterns(request, patterns)
    require_live_mode_allowed(partner, data["mode"], "webhooks")
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
    log.info("webhook created", extra={"partner_id": partner.id, "webhook_id": webhook.id})
    return webhook, secret


def webhooks_query(partner: Partner):
    return sa.select(Webhook).where(Webhook.partner_id == partner.id,
                                    Webhook.status != "deleted")
