"""The webhook signature debugger: ``POST /api/webhooks/{id}/verify``.

A partner member sends what a receiver got from one of the partner's endpoints, and
the response says whether the signature is valid and, when it is not, why (see
:mod:`fkod.core.webhooks.debugger`). Nothing is written to the database.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import sqlalchemy as sa
from cornice import Service
from marshmallow import ValidationError, fields

from fkod.core import jsonutil
from fkod.core.api import AUTH_MEMBER, operation
from fkod.core.errors import NotFound, ValidationFailed, field_error
from fkod.core.ids import parse_id, public_id
from fkod.core.schemas import BodySchema, ResponseSchema
from fkod.core.webhooks import debugger
from fkod.core.webhooks.models import Event, Webhook, WebhookAttempt, WebhookEvent

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 1024 * 1024
# Other endpoints whose current secret is tried when nothing else explains a mismatch.
MAX_OTHER_ENDPOINTS = 20

verify = Service(name="webhook_verify", path="/api/webhooks/{id}/verify",
                 description="Check a webhook signature a receiver got and explain a failure")


class RawString(fields.String):
    """A string kept exactly as sent: not trimmed, NUL characters allowed.

    ``max_bytes`` bounds its UTF-8 length.
    """

    def __init__(self, *, max_bytes: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.max_bytes = max_bytes

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if self.max_bytes is not None and len(text.encode("utf-8")) > self.max_bytes:
            raise ValidationError(f"Longer than {self.max_bytes} bytes in UTF-8.")
        return text


class VerifyWebhookBody(BodySchema):
    payload = RawString(required=True, max_bytes=MAX_PAYLOAD_BYTES, metadata={
        "description": "The request body exactly as the receiver got it."})
    signature = RawString(required=True, metadata={
        "description": "The X-FKOD-Signature value (t=<unix seconds>,v1=<hex>) or the "
                       "webhook-signature value (v1,<base64>, space-separated) as received."})
    timestamp = RawString(load_default=None, allow_none=True, metadata={
        "description": "The webhook-timestamp value; required with a webhook-signature value "
                       "and, with an X-FKOD-Signature value, equal to its t= if given."})
    webhook_id = RawString(load_default=None, allow_none=True, metadata={
        "description": "The webhook-id value; required with a webhook-signature value."})


class VerifyWebhookSchema(ResponseSchema):
    valid = fields.Boolean(metadata={"description": "Whether the signature verifies."})
    scheme = fields.String(metadata={"description": "fkod or standard, from the signature."})
    reason = fields.String(metadata={
        "description": "valid, timestamp_outside_tolerance, retired_secret, body_modified, "
                       "body_reserialized, wrong_key_form or signature_mismatch."})
    message = fields.String(metadata={"description": "What was found and what to do."})
    details = fields.Dict(metadata={
        "description": "Facts behind the reason: timestamps, the secret that matched (current "
                       "or previous), where the body differs. Never a secret or a signature."})


@operation(verify, "POST",
           summary="Check a webhook signature a receiver got, and say why it does not verify",
           auth=AUTH_MEMBER, permission="webhooks:read", body=VerifyWebhookBody,
           response=VerifyWebhookSchema,
           errors=((404, "not_found"), (400, debugger.MALFORMED_SIGNATURE),
                   (400, debugger.MALFORMED_TIMESTAMP), (400, debugger.MALFORMED_WEBHOOK_ID)))
def verify_webhook_signature(request):
    webhook = partner_webhook(request, request.matchdict["id"])
    try:
        return check_signature(request, webhook, request.validated)
    except debugger.MalformedInput as exc:
        raise ValidationFailed(exc.message, code=exc.code,
                               errors=[field_error("body", exc.field, exc.description)]) from None


def check_signature(request, webhook: Webhook, body: dict) -> debugger.Diagnosis:
    """Diagnose the fields of a VerifyWebhookBody against ``webhook``'s secrets.

    Raises debugger.MalformedInput for a signature, timestamp or webhook id
    that cannot be checked. The portal's debugger page calls this too.
    """
    payload = body["payload"].encode("utf-8")
    # Parsed before any lookup, so a malformed webhook_id never reaches a query.
    headers = debugger.parse_signature(body["signature"], body["timestamp"],
                                       body["webhook_id"])
    diagnosis = debugger.diagnose(
        payload=payload, signature_header=body["signature"], timestamp=body["timestamp"],
        message_id=body["webhook_id"], secrets=_secrets(request, webhook),
        delivery=_stored_delivery(request, webhook, headers.message_id, payload),
        now=int(time.time()),
        tolerance_seconds=request.registry.settings[
            "fkod.webhooks.signature_tolerance_seconds"],
    )
    log.info("webhook signature checked", extra={
        "webhook_id": webhook.id, "scheme": diagnosis.scheme, "reason": diagnosis.reason})
    return diagnosis


def partner_webhook(request, value: str) -> Webhook:
    webhook_id = parse_id("whk", value, noun="webhook endpoint")
    webhook = request.dbsession.scalar(sa.select(Webhook).where(
        Webhook.id == webhook_id, Webhook.partner_id == request.partner.id,
        Webhook.status != "deleted"))
    if webhook is None:
        raise NotFound(f"No webhook endpoint with id {value!r}.")
    return webhook


def _secrets(request, webhook: Webhook) -> list[debugger.SigningSecret]:
    """Return the endpoint's current and previous secrets, then other endpoints' secrets."""
    vault = request.registry["webhook_vault"]
    secrets = [debugger.SigningSecret(vault.decrypt(webhook.secret_key), debugger.CURRENT)]
    if webhook.previous_secret_key:
        secrets.append(debugger.SigningSecret(
            vault.decrypt(webhook.previous_secret_key), debugger.PREVIOUS,
            expires_at=_unix(webhook.previous_secret_expires_at),
            rotated_at=_unix(webhook.secret_rotated_at)))

    others = request.dbsession.scalars(
        sa.select(Webhook)
        .where(Webhook.partner_id == webhook.partner_id, Webhook.id != webhook.id,
               Webhook.status != "deleted")
        .order_by(Webhook.id.desc())
        .limit(MAX_OTHER_ENDPOINTS))
    for other in others:
        try:
            secret = vault.decrypt(other.secret_key)
        except ValueError:
            # Only sharpens a mismatch message, so an unreadable secret is skipped.
            log.warning("webhook secret cannot be decrypted", extra={"webhook_id": other.id})
            continue
        mode = "live" if other.livemode else "test"
        secrets.append(debugger.SigningSecret(
            secret, debugger.OTHER_ENDPOINT,
            endpoint=f"{public_id('whk', other.id)}, {mode} mode"))
    return secrets


def _stored_delivery(request, webhook: Webhook, message_id: str | None,
                     payload: bytes) -> debugger.StoredDelivery | None:
    """Find the endpoint's delivery of the event named by ``message_id`` or the payload's id."""
    for event_id in dict.fromkeys([message_id, debugger.event_id_in(payload)]):
        if event_id is None:
            continue
        delivery = request.dbsession.scalar(
            sa.select(WebhookEvent)
            .join(Event, Event.id == WebhookEvent.event_id)
            .where(Event.public_id == event_id, WebhookEvent.webhook_id == webhook.id)
            .order_by(WebhookEvent.id.desc())
            .limit(1))
        if delivery is None:
            continue
        attempts = request.dbsession.execute(
            sa.select(WebhookAttempt.attempt, WebhookAttempt.signed_at)
            .where(WebhookAttempt.delivery_id == delivery.id,
                   WebhookAttempt.signed_at.is_not(None))
            .order_by(WebhookAttempt.attempt))
        return debugger.StoredDelivery(
            event_id=event_id, body=jsonutil.dumps(delivery.event_data),
            signed_attempts=tuple((row.attempt, row.signed_at) for row in attempts))
    return None


def _unix(moment: dt.datetime | None) -> int | None:
    """Return Unix seconds of a naive UTC timestamp from a TIMESTAMP column."""
    if moment is None:
        return None
    return int(moment.replace(tzinfo=dt.UTC).timestamp())


def includeme(config):
    config.add_cornice_service(verify)
