"""Operational event types: what the delivery engine reports to partners about their endpoints.

They belong to the core, not to a plugin, so they are always available. A
partner subscribes to them like any other type (``webhook.*``) on another
endpoint, such as an alerting hook.
"""

from __future__ import annotations

from fkod.core.webhooks.catalog import EventType

ENDPOINT_DISABLED = "webhook.endpoint_disabled"
DELIVERY_EXHAUSTED = "webhook.delivery_exhausted"
ENDPOINT_RECOVERED = "webhook.endpoint_recovered"

_TIMESTAMP = {"type": "string", "format": "date-time"}
_NULLABLE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
_WEBHOOK_ID = {"type": "string", "pattern": "^whk_[0-9]+$"}

_ENDPOINT = {
    "type": "object",
    "required": ["webhook_id", "url", "status"],
    "properties": {
        "webhook_id": _WEBHOOK_ID,
        "url": {"type": "string"},
        "status": {"enum": ["active", "paused", "disabled"]},
        "disabled_reason": {"type": ["string", "null"]},
        "failing_since": _NULLABLE_TIMESTAMP,
    },
}

ENDPOINT_DISABLED_SCHEMA = {
    **_ENDPOINT,
    "required": ["webhook_id", "url", "status", "disabled_reason", "disabled_at"],
    "properties": {**_ENDPOINT["properties"], "disabled_at": _TIMESTAMP},
}

ENDPOINT_RECOVERED_SCHEMA = {
    **_ENDPOINT,
    "required": ["webhook_id", "url", "status", "failing_since", "recovered_at"],
    "properties": {**_ENDPOINT["properties"], "recovered_at": _TIMESTAMP},
}

DELIVERY_EXHAUSTED_SCHEMA = {
    "type": "object",
    "required": ["webhook_id", "event_id", "event_type", "attempts"],
    "properties": {
        "webhook_id": _WEBHOOK_ID,
        "url": {"type": "string"},
        "event_id": {"type": "string", "pattern": "^evt_"},
        "event_type": {"type": "string"},
        "attempts": {"type": "integer", "minimum": 1},
        "last_response_code": {"type": ["integer", "null"]},
        "last_error": {"type": ["string", "null"]},
    },
}

EVENT_TYPES = (
    EventType(
        ENDPOINT_DISABLED,
        "The platform disabled an endpoint: it answered 410 Gone, or every attempt failed "
        "for the configured period. Its queued deliveries wait until it is active again.",
        ENDPOINT_DISABLED_SCHEMA,
        {"webhook_id": "whk_12", "url": "https://hooks.acme.example/fkod", "status": "disabled",
         "disabled_reason": "the receiver answered 410 Gone", "failing_since": None,
         "disabled_at": "2026-06-05T10:00:00Z"},
    ),
    EventType(
        DELIVERY_EXHAUSTED,
        "A delivery failed its last attempt; it stays replayable from the delivery log.",
        DELIVERY_EXHAUSTED_SCHEMA,
        {"webhook_id": "whk_12", "url": "https://hooks.acme.example/fkod",
         "event_id": "evt_5f0c2a9e4b1d7c3a8e6f0b2d", "event_type": "user.created",
         "attempts": 6, "last_response_code": 500, "last_error": "HTTP 500"},
    ),
    EventType(
        ENDPOINT_RECOVERED,
        "An endpoint whose attempts had been failing accepted a delivery again.",
        ENDPOINT_RECOVERED_SCHEMA,
        {"webhook_id": "whk_12", "url": "https://hooks.acme.example/fkod", "status": "active",
         "disabled_reason": None, "failing_since": "2026-06-05T08:00:00Z",
         "recovered_at": "2026-06-05T10:00:00Z"},
    ),
)
