"""Built-in plugin: the partner.*, integration.*, payment.* and support.* event types."""

from __future__ import annotations

from fkod.core.hookspecs import hookimpl
from fkod.core.webhooks.catalog import EventType
from fkod.partners.ticket_schemas import SUPPORT_EVENT_TYPES

_NULLABLE_STRING = {"type": ["string", "null"]}
_TIMESTAMP = {"type": "string", "format": "date-time"}

PARTNER_DATA_SCHEMA = {
    "type": "object",
    "required": ["id", "company_name", "status", "verification_status"],
    "properties": {
        "id": {"type": "string", "pattern": "^partner_[0-9]+$"},
        "slug": _NULLABLE_STRING,
        "company_name": {"type": "string"},
        "company_website": _NULLABLE_STRING,
        "company_logo_url": _NULLABLE_STRING,
        "description": _NULLABLE_STRING,
        "category": _NULLABLE_STRING,
        "status": {"enum": ["pending", "active", "suspended"]},
        "verification_status": {"enum": ["unverified", "submitted", "verified", "rejected"]},
        "contact_email": _NULLABLE_STRING,
        "contact_phone": _NULLABLE_STRING,
        "address": {"type": ["object", "null"]},
        "plan": {"type": ["object", "null"]},
        "created_at": _TIMESTAMP,
        "updated_at": _TIMESTAMP,
        "changed_fields": {"type": "array", "items": {"type": "string"}},
    },
}

PARTNER_SAMPLE = {
    "id": "partner_42",
    "slug": "acme-learning",
    "company_name": "Acme Learning",
    "company_website": "https://acme.example",
    "company_logo_url": None,
    "description": "Course recommendations for teams.",
    "category": "education",
    "status": "active",
    "verification_status": "verified",
    "contact_email": "dev@acme.example",
    "contact_phone": None,
    "address": None,
    "plan": {"code": "free", "name": "Free"},
    "created_at": "2026-06-05T10:00:00Z",
    "updated_at": "2026-06-05T10:00:00Z",
}

INTEGRATION_DATA_SCHEMA = {
    "type": "object",
    "required": ["id", "name", "status", "partner_id"],
    "properties": {
        "id": {"type": "string", "pattern": "^int_[0-9]+$"},
        "partner_id": {"type": "string", "pattern": "^partner_[0-9]+$"},
        "name": {"type": "string"},
        "slug": _NULLABLE_STRING,
        "description": _NULLABLE_STRING,
        "category": _NULLABLE_STRING,
        "version": _NULLABLE_STRING,
        "status": {"enum": ["draft", "in_review", "published", "rejected", "unpublished"]},
        "pricing_model": {"enum": ["free", "freemium", "paid"]},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "event_types": {"type": "array", "items": {"type": "string"}},
        "submitted_at": {"type": ["string", "null"], "format": "date-time"},
        "published_at": {"type": ["string", "null"], "format": "date-time"},
        "created_at": _TIMESTAMP,
        "updated_at": _TIMESTAMP,
        "changed_fields": {"type": "array", "items": {"type": "string"}},
    },
}

INTEGRATION_SAMPLE = {
    "id": "int_7",
    "partner_id": "partner_42",
    "name": "Acme Course Sync",
    "slug": "acme-course-sync",
    "description": "Keeps Acme's catalog in step with F-KOD courses.",
    "category": "content",
    "version": "1.2.0",
    "status": "published",
    "pricing_model": "free",
    "scopes": ["courses:read"],
    "event_types": ["course.*"],
    "submitted_at": "2026-06-05T09:00:00Z",
    "published_at": "2026-06-05T10:00:00Z",
    "created_at": "2026-06-05T10:00:00Z",
    "updated_at": "2026-06-05T10:00:00Z",
}

INSTALL_DATA_SCHEMA = {
    "type": "object",
    "required": ["integration", "user_id"],
    "properties": {
        "integration": INTEGRATION_DATA_SCHEMA,
        "user_id": {"type": "string", "pattern": "^user_[0-9]+$"},
        "installed_at": _TIMESTAMP,
    },
}

PAYMENT_DATA_SCHEMA = {
    "type": "object",
    "required": ["id", "invoice_id", "amount", "currency", "status"],
    "properties": {
        "id": {"type": "string", "pattern": "^pay_[0-9]+$"},
        "invoice_id": {"type": "string", "pattern": "^inv_[0-9]+$"},
        "amount": {"type": "string", "pattern": "^[0-9]+[.][0-9]{2}$"},
        "currency": {"const": "USD"},
        "status": {"const": "succeeded"},
        "provider": {"type": "string"},
        "period": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
        "succeeded_at": {"type": ["string", "null"], "format": "date-time"},
    },
}

PAYMENT_SAMPLE = {
    "id": "pay_12",
    "invoice_id": "inv_34",
    "amount": "149.00",
    "currency": "USD",
    "status": "succeeded",
    "provider": "stripe",
    "period": "2026-11",
    "succeeded_at": "2026-12-02T09:30:00Z",
}


@hookimpl
def fkod_register_event_types():
    return [
        EventType("partner.created", "A partner account was registered.",
                  PARTNER_DATA_SCHEMA, PARTNER_SAMPLE),
        EventType("partner.updated", "A partner changed its profile; changed_fields lists what.",
                  PARTNER_DATA_SCHEMA, {**PARTNER_SAMPLE, "changed_fields": ["description"]}),
        EventType("partner.verified", "F-KOD approved the partner's verification.",
                  PARTNER_DATA_SCHEMA, PARTNER_SAMPLE),
        EventType("integration.created", "A partner created an integration draft.",
                  INTEGRATION_DATA_SCHEMA, {**INTEGRATION_SAMPLE, "status": "draft",
                                             "submitted_at": None, "published_at": None}),
        EventType("integration.updated",
                  "A partner changed an integration; changed_fields lists what.",
                  INTEGRATION_DATA_SCHEMA, {**INTEGRATION_SAMPLE, "changed_fields": ["name"]}),
        EventType("integration.published", "An integration passed review and is listed.",
                  INTEGRATION_DATA_SCHEMA, INTEGRATION_SAMPLE),
        EventType("integration.installed", "A customer installed an integration.",
                  INSTALL_DATA_SCHEMA,
                  {"integration": INTEGRATION_SAMPLE, "user_id": "user_123",
                   "installed_at": "2026-06-05T10:00:00Z"}),
        EventType("payment.processed",
                  "A payment succeeded: a partner's invoice, or a customer's invoice for "
                  "installs of the partner's paid integrations.",
                  PAYMENT_DATA_SCHEMA, PAYMENT_SAMPLE),
        *SUPPORT_EVENT_TYPES,
    ]
