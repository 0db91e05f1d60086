"""A partner's onboarding checklist, computed from its data on every read.

The steps, in order: the company is verified, an API key exists, a key has
made a call, a webhook endpoint exists, and an integration is published.
Revoked keys and deleted endpoints still count, because the step was done.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from fkod.core.auth.models import ApiKey, Partner
from fkod.core.webhooks.models import Webhook
from fkod.marketplace.models import Integration


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    title: str
    done: bool


def onboarding_steps(session, partner: Partner) -> list[Step]:
    """Return the checklist of ``partner`` with each step's state; one query per step."""
    def exists(query) -> bool:
        return session.scalar(sa.select(query.exists())) or False

    has_key = exists(sa.select(ApiKey.id).where(ApiKey.partner_id == partner.id))
    # ``last_used`` is written from the usage buffer, within about a second of the call.
    has_called = exists(sa.select(ApiKey.id).where(ApiKey.partner_id == partner.id,
                                                   ApiKey.last_used.is_not(None)))
    has_webhook = exists(sa.select(Webhook.id).where(Webhook.partner_id == partner.id))
    has_published = exists(sa.select(Integration.id).where(
        Integration.partner_id == partner.id, Integration.status == "published"))
    return [
        Step("verify_company", "Verify the company", partner.verification_status == "verified"),
        Step("create_key", "Create an API key", has_key),
        Step("first_call", "Make a first API call", has_called),
        Step("add_webhook", "Add a webhook endpoint", has_webhook),
        Step("publish_integration", "Publish an integration", has_published),
    ]
