"""Publishing events: the transactional outbox.

:func:`publish_event` writes the event and one delivery row per matching
webhook endpoint in the caller's transaction, so the change and its events
commit or roll back together. The deliveries are enqueued after the commit;
if that enqueue is lost, the sweeper finds them because they are due.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterable

import sqlalchemy as sa


from fkod.core import jsonutil
from fkod.core.webhooks.catalog import pattern_matches
from fkod.core.webhooks.models import Event, Webhook, WebhookEvent

log = logging.getLogger(__name__)

DELIVER_ACTOR = "deliver_webhook"


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


def build_payload(event_id: str, event_type: str, data: dict, request_id: str | None,
                  created: int) -> dict:
    """The body partners receive: id, type, created (Unix seconds), data and request.id.

    ``data`` goes through the API's JSON encoding once here, so timestamps and
    decimals read the same in the stored event and in every delivery.
    """
    return {
        "id": event_id,
        "type": event_type,
        "created": created,
        "data": json.loads(jsonutil.dumps(data)),
        "request": {"id": request_id},
    }


def matching_webhooks(session, event_type: str, livemode: bool,
                      partner_ids: Iterable[int]) -> list[Webhook]:
    partner_ids = sorted(set(partner_ids))
    if not partner_ids:
        return []
    candidates = session.scalars(
        sa.select(Webhook).where(
            Webhook.partner_id.in_(partner_ids),
            Webhook.status == "active",
            Webhook.livemode.is_(livemode),
        ).order_by(Webhook.id)
    )
    return [
        webhook for webhook in candidates
        if any(pattern_matches(pattern, event_type) for pattern in webhook.event_types or ())
    ]


def publish_event(session, *, event_type: str, data: dict, livemode: bool,
                  partner_ids: Iterable[int], request_id: str | None,
                  catalog=None) -> tuple[Event, list[WebhookEvent]]:
    """Write an event and its deliveries; return them. The caller commits."""
    if catalog is not None and catalog.get(event_type) is None:
        raise ValueError(f"event type {event_type} is not in the catalog")

    event_id = new_event_id()
    payload = build_payload(event_id, event_type, data, request_id, int(time.time()))
    event = Event(public_id=event_id, type=event_type, payload=payload, livemode=livemode,
                  request_id=request_id)
    session.add(event)
    session.flush()

    deliveries = []
    for webhook in matching_webhooks(session, event_type, livemode, partner_ids):
        delivery = WebhookEvent(
            webhook_id=webhook.id, event_id=event.id, event_type=event_type,
            event_data=payload, status="pending", next_retry_at=event.created_at,
        )
        session.add(delivery)
        deliveries.append(delivery)
    session.flush()
    log.info("event published", extra={"event_id": event_id, "event_type": event_type,
                                        "deliveries": len(deliveries)})
    return event, deliveries


def publish(request, event_type: str, data: dict, *, livemode: bool,
            partner_ids: Iterable[int]) -> Event:
    """Publish from a request: its session and id, deliveries enqueued after its commit.

    When the marketplace is set up, the plugin hook calls the event causes
    (:mod:`fkod.marketplace.reactions`) are stored in the same transaction.
    """
    registry = request.registry
    event, deliveries = publish_event(
        request.dbsession, event_type=event_type, data=data, livemode=livemode,
        partner_ids=partner_ids, request_id=request.request_id,
        catalog=registry["plugins"].event_catalog,
    )
    tasks = registry["tasks"]
    for delivery in deliveries:
        tasks.send_after_commit(request.tm, DELIVER_ACTOR, delivery.id)
    reactor = registry.get("integration_reactor")
    if reactor is not None:
        reactor.record_reactions(request.dbsession, request.tm, event)
    return event
