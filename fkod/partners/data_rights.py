"""Data rights: the export of everything the platform keeps about a partner, and deletion.

Both are for owners only.

**Export** returns one JSON document. Its lists are not paginated, but each is
bounded by :data:`EXPORT_LIMITS`, with the newest items first where a limit can
cut. ``truncated`` names the lists that reached their limit. Deliveries come from
the last :data:`DELIVERY_WINDOW_DAYS` days only and without their payloads,
because each payload is an event the partner can fetch on its own. The
document never holds a secret: no API key or its hash, no webhook signing
secret, custom webhook header values masked, the tax id and the bank account
masked to their last 4 characters, no storage key of a document.

**Deletion**, confirmed by the partner's exact ``company_name``, runs in one
transaction:

* every API key is revoked, every OAuth application deleted with its tokens,
  and every webhook endpoint deleted, pending
  invitations are revoked, and published integrations are unpublished;
* member users are anonymised (email replaced by a placeholder, name, password,
  second factor and mailed tokens removed, status ``deleted``), except a user
  who is also a member of another partner that is not deleted: that account
  stays as it is;
* the partner's contact email and phone, address, tax id, bank account and
  verification data are cleared; documents are marked deleted with their file
  names replaced, and their files are removed from the store after the commit;
* ``deletion_requested_at`` and ``deleted_at`` are set, so from then on every
  login token of the partner is 401, and so is every API key: at once in this
  process and within ``fkod.gateway.key_cache_seconds`` in the others.

Kept, because billing and tax law require them or because they are the
security record: usage rows (``api_usage``, ``api_usage_hourly``), revenue rows
(``partner_revenue``) and invoices; the audit log; support tickets, whose text
stays as written; the company and legal names that identify the partner in
those records. Users the partner created through the F-KOD API belong to its
tenancy and are not touched here.
"""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa
from sqlalchemy import orm

from fkod.core import audit
from fkod.core.auth.models import (
    ApiKey,
    Partner,
    PartnerMember,
    User,
    UserToken,
)
from fkod.core.auth.oauth_models import OAuthClient
from fkod.core.db import utcnow
from fkod.core.errors import ValidationFailed, field_error
from fkod.core.ids import public_id
from fkod.core.mail import send_after_commit
from fkod.core.webhooks.models import Webhook, WebhookEvent
from fkod.marketplace.models import Integration
from fkod.partners import account_schemas, schemas, ticket_schemas
from fkod.partners.audit_views import PartnerAuditEntrySchema
from fkod.partners.members import invitations_query, lock_partner, members_query, require_owner
from fkod.partners.models import (
    PartnerInvitation,
    SupportTicket,
    TicketEvidence,
    TicketMessage,
    VerificationDocument,
)
from fkod.partners.verification import (
    MASK,
    delete_stored_after_commit,
    mask,
    verification_summary,
)

log = logging.getLogger(__name__)

# Maximum number of items in each list of an export.
EXPORT_LIMITS = {
    "members": 1000,
    "invitations": 1000,
    "api_keys": 1000,
    "webhooks": 1000,
    "deliveries": 1000,
    "tickets": 200,
    "messages_per_ticket": 500,
    "evidence_per_ticket": 100,
    "integrations": 500,
    "audit_log": 5000,
}
DELIVERY_WINDOW_DAYS = 30
DELETED_FILENAME = "(deleted)"
# Integration statuses that list an integration or put it in the review queue.
LISTED_INTEGRATION_STATUSES = ("published", "in_review")


def anonymised_email(user_id: int) -> str:
    # .invalid is reserved (RFC 2606), so the address can never receive mail.
    return f"deleted-user-{user_id}@deleted.invalid"


# Export ------------------------------------------------------------------------------------


class _Bounded:
    """Runs list queries with a limit each and remembers which ones reached it."""

    def __init__(self, session):
        self.session = session
        self.truncated: list[str] = []

    def rows(self, name: str, select, limit: int | None = None) -> list:
        limit = EXPORT_LIMITS[name] if limit is None else limit
        found = list(self.session.scalars(select.limit(limit + 1)).unique())
        if len(found) > limit:
            if name not in self.truncated:
                self.truncated.append(name)
            found = found[:limit]
        return found


def _partner_section(request, partner: Partner) -> dict:
    vault = request.registry["webhook_vault"]
    data = schemas.PartnerSchema().dump(partner)
    data.update(tax_id=mask(vault, partner.tax_id), bank_account=mask(vault, partner.bank_account),
                legal_name=partner.legal_name)
    return data


def _webhooks_section(bounded: _Bounded, partner: Partner) -> list[dict]:
    webhooks = bounded.rows("webhooks", sa.select(Webhook).where(Webhook.partner_id == partner.id)
                            .order_by(Webhook.id.desc()))
    dumped = schemas.WebhookSchema(many=True).dump(webhooks)
    for item in dumped:
        # Custom headers often carry the receiver's own credentials.
        item["headers"] = {name: MASK for name in item.get("headers") or {}}
    return dumped


def _deliveries_section(bounded: _Bounded, partner: Partner, now: dt.datetime) -> list[dict]:
    since = now - dt.timedelta(days=DELIVERY_WINDOW_DAYS)
    deliveries = bounded.rows("deliveries", sa.select(WebhookEvent)
                              .join(Webhook, Webhook.id == WebhookEvent.webhook_id)
                              .options(orm.joinedload(WebhookEvent.event))
                              .where(Webhook.partner_id == partner.id,
                                     WebhookEvent.created_at >= since)
                              .order_by(WebhookEvent.id.desc()))
    return schemas.DeliverySchema(many=True).dump(deliveries)


def _tickets_section(bounded: _Bounded, partner: Partner) -> list[dict]:
    tickets = bounded.rows("tickets", sa.select(SupportTicket)
                           .where(SupportTicket.partner_id == partner.id)
                           .order_by(SupportTicket.id.desc()))
    result = []
    for ticket in tickets:
        item = ticket_schemas.TicketSchema().dump(ticket)
        messages = bounded.rows("messages_per_ticket", sa.select(TicketMessage)
                                .where(TicketMessage.ticket_id == ticket.id)
                                .order_by(TicketMessage.id))
        evidence = bounded.rows("evidence_per_ticket", sa.select(TicketEvidence)
                                .where(TicketEvidence.ticket_id == ticket.id)
                                .order_by(TicketEvidence.id))
        item["messages"] = ticket_schemas.MessageSchema(many=True).dump(messages)
        item["evidence"] = ticket_schemas.EvidenceSchema(many=True).dump(evidence)
        result.append(item)
    return result


def export_partner(request) -> dict:
    """Collect everything the platform keeps about the caller's partner; owners only."""
    require_owner(request, "Only an owner can export the partner's data.")
    partner = request.partner
    session = request.dbsession
    bounded = _Bounded(session)
    now = utcnow()

    result = {
        "exported_at": now,
        "partner": _partner_section(request, partner),
        "verification": account_schemas.VerificationSchema().dump(
            verification_summary(request, partner)),
        "members": account_schemas.MemberSchema(many=True).dump(bounded.rows(
            "members", members_query(partner).order_by(PartnerMember.id))),
        "invitations": account_schemas.InvitationSchema(many=True).dump(bounded.rows(
            "invitations", invitations_query(partner, None)
            .order_by(PartnerInvitation.id.desc()))),
        "api_keys": schemas.ApiKeySchema(many=True).dump(bounded.rows(
            "api_keys", sa.select(ApiKey).where(ApiKey.partner_id == partner.id)
            .order_by(ApiKey.id.desc()))),
        "webhooks": _webhooks_section(bounded, partner),
        "deliveries": _deliveries_section(bounded, partner, now),
        "tickets": _tickets_section(bounded, partner),
        "integrations": account_schemas.IntegrationSummarySchema(many=True).dump(bounded.rows(
            "integrations", sa.select(Integration).where(Integration.partner_id == partner.id)
            .order_by(Integration.id.desc()))),
        "audit_log": PartnerAuditEntrySchema(many=True).dump(bounded.rows(
            "audit_log", sa.select(audit.AuditEntry)
            .where(audit.AuditEntry.partner_id == partner.id)
            .order_by(audit.AuditEntry.id.desc()))),
    }
    result["limits"] = {**EXPORT_LIMITS, "delivery_window_days": DELIVERY_WINDOW_DAYS}
    result["truncated"] = bounded.truncated

    audit.record(request, "partner.exported", partner_id=partner.id, target_type="partner",
                 target_id=public_id("partner", partner.id),
                 details={"truncated": bounded.truncated})
    log.info("partner data exported", extra={"partner_id": partner.id,
                                             "user_id": request.user.id})
    return result


# Deletion ----------------------------------------------------------------------------------


def _delete_applications(request, partner: Partner, now: dt.datetime) -> int:
    """Delete the partner's OAuth applications, revoking their tokens and consents."""
    from fkod.core.oauth.server import forget_cached_tokens
    from fkod.developers.applications import retire_application

    applications = request.dbsession.scalars(
        sa.select(OAuthClient).where(OAuthClient.partner_id == partner.id,
                                     OAuthClient.status != "deleted")).all()
    for application in applications:
        retire_application(request.dbsession, application, now)
    forget_cached_tokens(request)
    return len(applications)


def _revoke_api_keys(request, partner: Partner, now: dt.datetime) -> int:
    keys = request.dbsession.scalars(
        sa.select(ApiKey).where(ApiKey.partner_id == partner.id)).all()
    revoked = 0
    for key in keys:
        if key.status != "revoked":
            key.status = "revoked"
            key.revoked_at = now
            key.updated_at = now
            revoked += 1
        if key.previous_key_hash is not None:
            key.previous_key_expires_at = now

    cache = request.registry["key_cache"]
    key_ids = [key.id for key in keys]

    def forget(_committed=None) -> None:
        for key_id in key_ids:
            cache.invalidate_key(key_id)

    forget()
    request.tm.get().addAfterCommitHook(forget)
    return revoked


def _delete_webhooks(request, partner: Partner, now: dt.datetime) -> int:
    result = request.dbsession.execute(
        sa.update(Webhook).where(Webhook.partner_id == partner.id, Webhook.status != "deleted")
        .values(status="deleted", updated_at=now))
    return result.rowcount


def _anonymise_members(request, partner: Partner, now: dt.datetime) -> int:
    """Anonymise the member users who belong to no other live partner; return how many."""
    session = request.dbsession
    other_memberships = (
        sa.select(PartnerMember.user_id)
        .join(Partner, Partner.id == PartnerMember.partner_id)
        .where(PartnerMember.partner_id != partner.id, Partner.deleted_at.is_(None))
    )
    users = session.scalars(
        sa.select(User).join(PartnerMember, PartnerMember.user_id == User.id)
        .where(PartnerMember.partner_id == partner.id, User.id.not_in(other_memberships))).all()

    for user in users:
        user.email = anonymised_email(user.id)
        user.name = None
        user.archetype = None
        user.password_hash = None
        user.pending_email = None
        user.totp_secret = None
        user.totp_enabled_at = None
        user.totp_last_step = None
        user.status = "deleted"
        user.tokens_valid_after = now
        user.updated_at = now
    if users:
        session.execute(sa.delete(UserToken).where(UserToken.user_id.in_([u.id for u in users])))
    return len(users)


def _clear_partner_data(request, partner: Partner, now: dt.datetime) -> int:
    """Clear personal and financial fields and documents; return how many documents it deleted."""
    session = request.dbsession
    partner.contact_email = None
    partner.contact_phone = None
    partner.address = None
    partner.tax_id = None
    partner.bank_account = None
    partner.verification_data = None

    documents = session.scalars(sa.select(VerificationDocument).where(
        VerificationDocument.partner_id == partner.id)).all()
    deleted_now = 0
    for document in documents:
        if document.deleted_at is None:
            document.deleted_at = now
            deleted_now += 1
        document.filename = DELETED_FILENAME
    # Files of documents deleted earlier are deleted again; the store ignores missing keys.
    delete_stored_after_commit(request, [document.storage_key for document in documents])

    pending = session.scalars(invitations_query(partner, "pending")).all()
    for invitation in pending:
        invitation.revoked_at = now
    invitations = session.scalars(invitations_query(partner, None)).all()
    for invitation in invitations:
        invitation.email = f"deleted-invitation-{invitation.id}@deleted.invalid"

    session.execute(
        sa.update(Integration)
        .where(Integration.partner_id == partner.id,
               Integration.status.in_(LISTED_INTEGRATION_STATUSES))
        .values(status="unpublished", updated_at=now))
    return deleted_now


def _mail_owner(request, email: str, company_name: str) -> None:
    send_after_commit(
        request, to=email, subject=f"{company_name} was deleted from F-KOD",
        body=(f"The partner account {company_name} was deleted at your request. Its API keys "
              "and webhooks no longer work, and the personal data of its members was "
              "removed.\n\nBilling records are kept as the law requires."),
    )


def delete_partner(request, confirm: str) -> dict:
    """Delete the caller's partner as the module docstring describes; owners only."""
    require_owner(request, "Only an owner can delete the partner.")
    partner = lock_partner(request)
    if confirm != partner.company_name:
        raise ValidationFailed(
            "The confirmation does not match the partner's company name; send it exactly as "
            "GET /api/partners/me shows it.", code="confirmation_mismatch",
            errors=[field_error("body", "confirm", "does not match company_name")])

    now = utcnow()
    caller_email = request.user.email
    partner.deletion_requested_at = now
    partner.deleted_at = now
    partner.updated_at = now
    summary = {
        "id": partner.id,
        "deletion_requested_at": now,
        "deleted_at": now,
        "api_keys_revoked": _revoke_api_keys(request, partner, now),
        "oauth_apps_deleted": _delete_applications(request, partner, now),
        "webhooks_deleted": _delete_webhooks(request, partner, now),
    }
    summary["users_anonymised"] = _anonymise_members(request, partner, now)
    summary["documents_deleted"] = _clear_partner_data(request, partner, now)
    request.dbsession.flush()

    counts = {name: value for name, value in summary.items()
              if name.endswith(("_revoked", "_deleted", "_anonymised"))}
    audit.record(request, "partner.deleted", partner_id=partner.id, target_type="partner",
                 target_id=public_id("partner", partner.id), details=counts)
    _mail_owner(request, caller_email, partner.company_name)
    log.info("partner deleted", extra={"partner_id": partner.id, "user_id": request.user.id,
                                       **counts})
    return summary
