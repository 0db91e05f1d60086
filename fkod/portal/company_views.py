"""Company pages: the partner's profile, and its verification with the supporting documents.

The profile form saves through the same service as ``PUT /api/partners/me``,
the verification form through the one behind ``POST /api/partners/verify``,
and a document upload through the one behind ``POST
/api/partners/verification/documents``, with the same size and type checks.
"""

from __future__ import annotations

from pyramid.httpexceptions import HTTPSeeOther

from fkod.core.api import MULTIPART_OVERHEAD_BYTES, UploadedFile, read_body
from fkod.core.errors import ApiError, PayloadTooLarge
from fkod.core.ids import parse_id
from fkod.partners import account_schemas, services, verification
from fkod.partners.schemas import PARTNER_CATEGORIES, UpdatePartnerBody
from fkod.portal import forms
from fkod.portal.access import require_member
from fkod.portal.rendering import render

ROUTES = (
    ("portal_company", "/portal/company", "company_profile", ("GET", "POST"),
     "Show the partner's company profile, or save it"),
    ("portal_verification", "/portal/company/verification", "verification_page",
     ("GET", "POST"),
     "Show the company verification with its documents, or submit it for review"),
    ("portal_verification_documents", "/portal/company/verification/documents",
     "document_upload", ("POST",),
     "Upload a verification document (PDF, PNG or JPEG)"),
    ("portal_verification_document_delete",
     "/portal/company/verification/documents/{id}/delete", "document_delete", ("POST",),
     "Delete a verification document while the partner is not verified"),
)

# The profile fields the page edits. A blank optional field is saved as null.
PROFILE_FIELDS = ("company_name", "company_website", "company_logo_url", "description",
                  "category", "contact_email", "contact_phone")
# The parts of the profile's postal address, typed as ``address.<part>``.
ADDRESS_PARTS = ("line1", "line2", "city", "region", "postal_code", "country")
# The verification form's fields, with dots naming the nested address and contact.
VERIFICATION_FIELDS = ("legal_name", "tax_id", "website", "address.line1", "address.line2",
                       "address.city", "address.postal_code", "address.country",
                       "contact.name", "contact.email", "contact.phone")


# Profile ---------------------------------------------------------------------------------


def _profile_values(partner) -> dict:
    values = {name: getattr(partner, name) or "" for name in PROFILE_FIELDS}
    for part in ADDRESS_PARTS:
        values[f"address.{part}"] = (partner.address or {}).get(part) or ""
    return values


def _profile_page(request, form: forms.Form, status: int = 200):
    return render(request, "company.html", status=status, form=form,
                  categories=PARTNER_CATEGORIES, nav="company")


def company_profile(request):
    if request.method == "POST":
        return _save_profile(request)
    member = require_member(request, "partner:read")
    return _profile_page(request, forms.Form(values=_profile_values(member.partner)))


def _save_profile(request):
    member = require_member(request, "partner:write")
    posted = forms.posted_values(request)
    address_names = [f"address.{part}" for part in ADDRESS_PARTS]
    form = forms.Form(values={name: posted.get(name, "")
                              for name in (*PROFILE_FIELDS, *address_names)})
    # A blank optional field clears the stored value, as null does in the API, and
    # an address with every part blank clears the address.
    data = {name: posted.get(name) for name in PROFILE_FIELDS}
    address = {part: posted[f"address.{part}"] for part in ADDRESS_PARTS
               if f"address.{part}" in posted}
    data["address"] = address or None
    if data["company_name"] is None:
        form.add_error("company_name", "Enter the company name.")
        request.tm.doom()
        return _profile_page(request, form, status=400)
    loaded = forms.load(UpdatePartnerBody(), data, form)
    if loaded is None:
        request.tm.doom()
        return _profile_page(request, form, status=400)
    try:
        services.update_partner(request, member.partner, dict(loaded))
    except ApiError as error:
        forms.add_api_error(form, error)
        request.tm.doom()
        return _profile_page(request, form, status=error.status)
    request.portal_session.flash("The company profile is saved.")
    return HTTPSeeOther(location=request.route_path("portal_company"))


# Verification ----------------------------------------------------------------------------


def _verification_values(summary: dict) -> dict:
    """Return the submitted data as form values, for a partner trying again after a rejection.

    The tax id is left out because only its masked form is readable.
    """
    values = {"legal_name": summary["legal_name"] or "", "website": summary["website"] or ""}
    for group in ("address", "contact"):
        for name, value in (summary[group] or {}).items():
            values[f"{group}.{name}"] = value or ""
    return values


def _verification_page(request, form: forms.Form | None = None,
                       upload: forms.Form | None = None, status: int = 200):
    member = request.portal_member
    summary = verification.verification_summary(request, member.partner)
    if form is None:
        form = forms.Form(values=_verification_values(summary))
    return render(request, "verification.html", status=status, summary=summary, form=form,
                  upload=upload or forms.Form(values={"kind": "registration"}),
                  can_submit=summary["verification_status"] in ("unverified", "rejected"),
                  can_change_documents=summary["verification_status"] != "verified",
                  document_kinds=account_schemas.DOCUMENT_KINDS,
                  max_document_bytes=_max_document_bytes(request), nav="company")


def _max_document_bytes(request) -> int:
    return request.registry.settings["fkod.verification.max_document_bytes"]


def verification_page(request):
    if request.method == "POST":
        return _submit_verification(request)
    require_member(request, "partner:read")
    return _verification_page(request)


def _nest(values: dict) -> dict:
    """Turn ``address.city`` style keys into the nested objects the API's schema takes."""
    data: dict = {}
    for key, value in values.items():
        group, _, name = key.partition(".")
        if name:
            data.setdefault(group, {})[name] = value
        else:
            data[key] = value
    return data


def _submit_verification(request):
    require_member(request, "partner:write")
    posted = forms.posted_values(request)
    typed = {name: posted.get(name, "") for name in VERIFICATION_FIELDS if name != "tax_id"}
    form = forms.Form(values=typed)
    data = _nest({name: posted[name] for name in VERIFICATION_FIELDS if name in posted})
    data.setdefault("address", {})
    data.setdefault("contact", {})
    loaded = forms.load(account_schemas.SubmitVerificationBody(), data, form)
    if loaded is None:
        request.tm.doom()
        return _verification_page(request, form=form, status=400)
    try:
        verification.submit_verification(request, dict(loaded))
    except ApiError as error:
        forms.add_api_error(form, error)
        request.tm.doom()
        return _verification_page(request, form=form, status=error.status)
    request.portal_session.flash("The verification is submitted. An F-KOD admin reviews it, "
                                 "and this page shows the outcome.")
    return HTTPSeeOther(location=request.route_path("portal_verification"))


def _too_large_member(request):
    """Check the member for an upload whose body was too large to read.

    The body and its CSRF token are never read, so the request is checked as a
    page view. The page only shows an error and changes nothing.
    """
    method = request.method
    request.method = "GET"
    try:
        return require_member(request, "partner:write")
    finally:
        request.method = method


def document_upload(request):
    max_bytes = _max_document_bytes(request)
    upload = forms.Form(values={"kind": ""})
    try:
        # The same bound as the API's multipart upload: the file plus room for the other parts.
        read_body(request, max_bytes + MULTIPART_OVERHEAD_BYTES)
    except PayloadTooLarge:
        request.body = b""
        _too_large_member(request)
        upload.add_error("file", f"The file is larger than the limit of {max_bytes} bytes.")
        return _verification_page(request, upload=upload, status=413)

    require_member(request, "partner:write")
    upload.values["kind"] = request.POST.get("kind", "")
    part = request.POST.get("file")
    data = {"kind": upload.values["kind"]}
    if getattr(part, "filename", None):
        data["file"] = UploadedFile(filename=part.filename,
                                    content_type=(part.type or "").lower(), data=part.value)
    else:
        upload.add_error("file", "Choose a file to upload.")
    loaded = forms.load(account_schemas.UploadDocumentBody(), data, upload) \
        if upload.valid else None
    if loaded is None:
        request.tm.doom()
        return _verification_page(request, upload=upload, status=400)

    file = loaded["file"]
    try:
        document = verification.upload_document(
            request, kind=loaded["kind"], filename=file.filename,
            declared_type=file.content_type, data=file.data)
    except ApiError as error:
        forms.add_api_error(upload, error)
        request.tm.doom()
        return _verification_page(request, upload=upload, status=error.status)
    request.portal_session.flash(f"The document {document.filename} is uploaded.")
    return HTTPSeeOther(location=request.route_path("portal_verification"))


def document_delete(request):
    require_member(request, "partner:write")
    document_id = parse_id("doc", request.matchdict["id"], noun="verification document")
    try:
        verification.delete_document(request, document_id)
    except ApiError as error:
        if error.status == 404:
            raise
        request.tm.doom()
        request.portal_session.flash(f"The document was not deleted: {error.message}", "error")
        return HTTPSeeOther(location=request.route_path("portal_verification"))
    request.portal_session.flash("The document is deleted.")
    return HTTPSeeOther(location=request.route_path("portal_verification"))
