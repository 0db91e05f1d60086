"""Partner verification: the data a partner submits, its documents, and what it may do meanwhile.

``Partner.verification_status`` moves unverified -> submitted when the partner
submits (also rejected -> submitted, to try again), then submitted -> verified
or rejected when an admin decides (``fkod.admin``). A partner that is
submitted or verified cannot submit again (409).

What a partner may do, by state:

* **unverified, submitted or rejected** (``Partner.status`` pending): members log
  in, manage the team and the profile, create test-mode API keys and webhooks,
  call the sandbox with test keys, open support tickets, export their data and
  delete the partner. Live-mode API keys, webhooks and boosts are refused with
  403 ``partner_not_verified`` (:func:`fkod.partners.services.require_live_mode_allowed`),
  and submitting an integration for review with 403 ``partner_not_verified``.
* **verified**: live mode as well, for members whose own email is verified
  (403 ``email_not_verified`` otherwise), and publishing integrations. The
  submitted data and the documents are frozen: submitting again, uploading and
  deleting documents are 409 ``partner_verified``.
* **suspended** (``Partner.status``, set and lifted by an admin): every member
  operation is 403 ``partner_suspended`` and every API key is refused at the
  gateway, whatever the verification state.
* **deleted**: login tokens and API keys are 401 (see
  :mod:`fkod.partners.data_rights`).

The tax id is stored only as a Fernet token in ``Partner.tax_id`` and every
response shows it masked. The rest of the submission (address, contact,
website) is kept in ``Partner.verification_data`` and the legal name in
``Partner.legal_name``. Documents go to the document store
(:mod:`fkod.core.storage`) under a generated key; only their metadata is in
the database, and no operation serves a document back.
"""

from __future__ import annotations

import hashlib
import logging
import re

import sqlalchemy as sa

from fkod.core import audit
from fkod.core.auth.models import Partner
from fkod.core.db import utcnow
from fkod.core.errors import (
    Conflict,
    NotFound,
    PayloadTooLarge,
    ValidationFailed,
    field_error,
)
from fkod.core.ids import public_id
from fkod.core.storage import StorageUnavailable
from fkod.core.webhooks.outbox import publish
from fkod.partners.account_schemas import DOCUMENT_TYPES
from fkod.partners.members import lock_partner
from fkod.partners.models import VerificationDocument
from fkod.partners.services import partner_event_data

log = logging.getLogger(__name__)

MASK = "****"
# Documents a partner may keep at once; deleted ones do not count.
MAX_DOCUMENTS = 20

# The first bytes of each accepted document type.
_SIGNATURES = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)
_EXTENSIONS = {"application/pdf": "pdf", "image/png": "png", "image/jpeg": "jpg"}
_UNSAFE_FILENAME_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def mask(vault, token: str | None) -> str | None:
    """Decrypt a Fernet token and return the value masked, with at most its last 4 characters.

    A value shorter than 8 characters, or a token the vault cannot decrypt,
    is masked entirely, so a short value is never shown for the most part.
    """
    if token is None:
        return None
    try:
        value = vault.decrypt(token)
    except ValueError:
        return MASK
    return MASK + value[-4:] if len(value) >= 8 else MASK


def detect_document_type(data: bytes) -> str | None:
    """Return the content type that the file's first bytes show, or None for other files."""
    for signature, content_type in _SIGNATURES:
        if data.startswith(signature):
            return content_type
    return None


def clean_filename(filename: str, content_type: str, kind: str) -> str:
    """Keep the last path segment of a client's file name, without control characters."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = _UNSAFE_FILENAME_CHARACTERS.sub("", name).strip()[:255]
    return name or f"{kind}.{_EXTENSIONS[content_type]}"


def _require_not_verified(partner: Partner, action: str) -> None:
    if partner.verification_status == "verified":
        raise Conflict(f"The partner is verified, so its verification documents can no longer "
                       f"be {action}.", code="partner_verified")


# Submission --------------------------------------------------------------------------


def submit_verification(request, data: dict) -> Partner:
    """Store the submitted data, the tax id encrypted, and mark the verification submitted."""
    partner = lock_partner(request)
    if partner.verification_status == "submitted":
        raise Conflict("The verification was already submitted and is being reviewed.",
                       code="verification_in_review")
    if partner.verification_status == "verified":
        raise Conflict("The partner is already verified.", code="partner_verified")

    now = utcnow()
    previous_status = partner.verification_status
    partner.legal_name = data["legal_name"]
    partner.tax_id = request.registry["webhook_vault"].encrypt(data["tax_id"])
    partner.verification_data = {
        "address": data["address"], "contact": data["contact"], "website": data["website"]}
    partner.verification_status = "submitted"
    partner.verification_submitted_at = now
    partner.verification_rejection_reason = None
    partner.updated_at = now
    request.dbsession.flush()

    payload = partner_event_data(partner)
    payload["changed_fields"] = ["verification_status"]
    publish(request, "partner.updated", payload, livemode=True, partner_ids=[partner.id])
    audit.record(request, "partner.verification_submitted", partner_id=partner.id,
                 target_type="partner", target_id=public_id("partner", partner.id),
                 details={"previous_status": previous_status,
                          "documents": len(active_documents(request, partner))})
    log.info("verification submitted", extra={"partner_id": partner.id,
                                              "user_id": request.user.id})
    return partner


def verification_summary(request, partner: Partner) -> dict:
    """Return the verification as partner members read it, with the tax id masked."""
    submitted = partner.verification_data or {}
    return {
        "verification_status": partner.verification_status,
        "legal_name": partner.legal_name,
        "tax_id": mask(request.registry["webhook_vault"], partner.tax_id),
        "address": submitted.get("address"),
        "contact": submitted.get("contact"),
        "website": submitted.get("website"),
        "verification_submitted_at": partner.verification_submitted_at,
        "verified_at": partner.verified_at,
        "verification_rejection_reason": partner.verification_rejection_reason,
        "documents": active_documents(request, partner),
    }


# Documents -------------------------------------------------------------------------------


def active_documents(request, partner: Partner) -> list[VerificationDocument]:
    return list(request.dbsession.scalars(
        sa.select(VerificationDocument)
        .where(VerificationDocument.partner_id == partner.id,
               VerificationDocument.deleted_at.is_(None))
        .order_by(VerificationDocument.id)))


def check_document(data: bytes, declared_type: str, max_bytes: int) -> str:
    """Return the document's content type; raise when it is empty, too large or not accepted."""
    if not data:
        raise ValidationFailed("The document is empty.", code="empty_document",
                               errors=[field_error("body", "file", "empty")])
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"The document is {len(data)} bytes; the limit is {max_bytes} "
                              "bytes.", code="document_too_large",
                              errors=[field_error("body", "file", f"larger than {max_bytes} "
                                                                  "bytes")])
    detected = detect_document_type(data)
    if detected is None:
        raise ValidationFailed(
            "The document is not a PDF, PNG or JPEG file: its first bytes match none of them.",
            code="unsupported_document_type",
            errors=[field_error("body", "file", f"must be one of {', '.join(DOCUMENT_TYPES)}")])
    if declared_type != detected:
        raise ValidationFailed(
            f"The document was declared as {declared_type or 'no type'}, but its content is "
            f"{detected}; send it with the type it has.", code="document_type_mismatch",
            errors=[field_error("body", "file", f"declared {declared_type or 'no type'}, "
                                                f"content is {detected}")])
    return detected


def _delete_stored_unless_committed(request, key: str) -> None:
    """Delete a stored document again when the request's transaction does not commit."""
    storage = request.registry["document_storage"]

    def clean_up(*_args) -> None:
        try:
            storage.delete(key)
        except StorageUnavailable:
            # Logged by the store; the leftover file is referenced by no row.
            log.warning("stored document not deleted after a rollback",
                        extra={"storage_key": key})

    current = request.tm.get()
    current.addAfterCommitHook(lambda committed: None if committed else clean_up())
    current.addAfterAbortHook(clean_up)


def delete_stored_after_commit(request, keys: list[str]) -> None:
    """Delete documents from the store once the request's transaction commits."""
    storage = request.registry["document_storage"]

    def delete(committed: bool) -> None:
        if not committed:
            return
        for key in keys:
            try:
                storage.delete(key)
            except StorageUnavailable:
                # Logged by the store; the row is marked deleted, so only the file is left.
                log.warning("stored document not deleted", extra={"storage_key": key})

    request.tm.get().addAfterCommitHook(delete)


def upload_document(request, *, kind: str, filename: str, declared_type: str,
                    data: bytes) -> VerificationDocument:
    """Check a document by its bytes, store it and record its metadata."""
    partner = lock_partner(request)
    _require_not_verified(partner, "changed")
    content_type = check_document(
        data, declared_type, request.registry.settings["fkod.verification.max_document_bytes"])
    if len(active_documents(request, partner)) >= MAX_DOCUMENTS:
        raise Conflict(f"The partner already has {MAX_DOCUMENTS} documents; delete one first.",
                       code="too_many_documents")

    key = request.registry["document_storage"].put(data, content_type)
    _delete_stored_unless_committed(request, key)
    document = VerificationDocument(
        partner_id=partner.id, kind=kind, filename=clean_filename(filename, content_type, kind),
        content_type=content_type, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
        storage_key=key, uploaded_by_user_id=request.user.id)
    request.dbsession.add(document)
    request.dbsession.flush()

    audit.record(request, "verification.document_uploaded", partner_id=partner.id,
                 target_type="verification_document", target_id=public_id("doc", document.id),
                 details={"kind": kind, "content_type": content_type, "size": len(data),
                          "sha256": document.sha256})
    log.info("verification document uploaded", extra={
        "partner_id": partner.id, "document_id": document.id, "size": len(data)})
    return document


def delete_document(request, document_id: int) -> None:
    """Mark a document deleted and remove it from the store once that commits."""
    partner = lock_partner(request)
    _require_not_verified(partner, "deleted")
    document = request.dbsession.scalar(
        sa.select(VerificationDocument)
        .where(VerificationDocument.id == document_id,
               VerificationDocument.partner_id == partner.id,
               VerificationDocument.deleted_at.is_(None)))
    if document is None:
        raise NotFound(f"No verification document with id doc_{document_id}.")

    document.deleted_at = utcnow()
    delete_stored_after_commit(request, [document.storage_key])
    audit.record(request, "verification.document_deleted", partner_id=partner.id,
                 target_type="verification_document", target_id=public_id("doc", document.id),
                 details={"kind": document.kind, "sha256": document.sha256})
    log.info("verification document deleted", extra={"partner_id": partner.id,
                                                      "document_id": document.id})
