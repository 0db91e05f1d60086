"""Cornice services of partner verification: submitting the data and managing documents.

Documents are named ``doc_…``; another partner's document is a 404. A document
is uploaded as ``multipart/form-data`` (the one operation of the partner API
that takes it) or as base64 in a JSON body. No operation returns a document's
content.
"""

from __future__ import annotations

import sqlalchemy as sa
from cornice import Service

from fkod.core.api import AUTH_MEMBER, Dumped, PageQuery, operation, paginate
from fkod.core.ids import parse_id
from fkod.partners import account_schemas as schemas
from fkod.partners import verification
from fkod.partners.models import VerificationDocument

verify = Service(name="partner_verify", path="/api/partners/verify",
                 description="Submit the partner's data for verification")
status = Service(name="partner_verification", path="/api/partners/verification",
                 description="The partner's verification state, data and documents")
documents = Service(name="partner_verification_documents",
                    path="/api/partners/verification/documents",
                    description="Documents that support the verification")
document = Service(name="partner_verification_document",
                   path="/api/partners/verification/documents/{id}",
                   description="One verification document")

SERVICES = (verify, status, documents, document)
PARTNER_VERIFIED = ((409, "partner_verified"),)


def _summary(request) -> Dumped:
    return Dumped(schemas.VerificationSchema().dump(
        verification.verification_summary(request, request.partner)))


@operation(verify, "POST", summary="Submit the legal name, tax id, address, contact and website "
                                   "for review; allowed while unverified or rejected",
           auth=AUTH_MEMBER, permission="partner:write", body=schemas.SubmitVerificationBody,
           response=schemas.VerificationSchema,
           errors=((409, "verification_in_review"), *PARTNER_VERIFIED))
def submit_verification(request):
    verification.submit_verification(request, dict(request.validated))
    return _summary(request)


@operation(status, "GET", summary="Get the verification state, the submitted data with the tax "
                                  "id masked, the documents and any rejection reason",
           auth=AUTH_MEMBER, permission="partner:read", response=schemas.VerificationSchema)
def get_verification(request):
    return _summary(request)


@operation(documents, "POST", summary="Upload a PDF, PNG or JPEG document, as multipart/form-"
                                      "data (file, kind) or JSON with content_base64",
           auth=AUTH_MEMBER, permission="partner:write", body=schemas.UploadDocumentBody,
           multipart_max_bytes_setting="fkod.verification.max_document_bytes",
           response=schemas.DocumentSchema, status=201,
           errors=((400, "invalid_multipart"), (400, "empty_document"),
                   (400, "unsupported_document_type"), (400, "document_type_mismatch"),
                   (413, "document_too_large"), (409, "too_many_documents"),
                   (503, "storage_unavailable"), *PARTNER_VERIFIED))
def upload_document(request):
    data = request.validated
    if "file" in data:
        upload = data["file"]
        filename, declared_type, content = upload.filename, upload.content_type, upload.data
    else:
        filename, declared_type = data["filename"], data["content_type"].lower()
        content = data["content_base64"]
    return verification.upload_document(request, kind=data["kind"], filename=filename,
                                        declared_type=declared_type, data=content)


@operation(documents, "GET", summary="List the verification documents' metadata, oldest first",
           auth=AUTH_MEMBER, permission="partner:read", query=PageQuery,
           response=schemas.DocumentSchema, paginated=True)
def list_documents(request):
    select = sa.select(VerificationDocument).where(
        VerificationDocument.partner_id == request.partner.id,
        VerificationDocument.deleted_at.is_(None))
    return paginate(select, VerificationDocument.id, request.query, request.dbsession,
                    descending=False)


@operation(document, "DELETE", summary="Delete a document; allowed until the partner is verified",
           auth=AUTH_MEMBER, permission="partner:write", status=204,
           errors=((404, "not_found"), (503, "storage_unavailable"), *PARTNER_VERIFIED))
def delete_document(request):
    verification.delete_document(request, parse_id("doc", request.matchdict["id"],
                                                   noun="verification document"))


def includeme(config):
    config.include("fkod.core.storage")
    for service in SERVICES:
        config.add_cornice_service(service)
