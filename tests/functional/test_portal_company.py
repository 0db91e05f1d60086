"""Portal company pages: the profile, the verification form and its documents."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fkod.core.auth.models import Partner, PartnerMember
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import TestClient
from fkod.partners.models import VerificationDocument
from tests.functional.portal_pages import (
    add_member,
    csrf_token,
    field_errors,
    input_value,
    log_in,
    post_form,
    signed_in_owner,
)

pytestmark = pytest.mark.shared_app

PDF = b"%PDF-1.4\n% a small test document\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
VERIFICATION = {
    "legal_name": "Acme Learning GmbH", "tax_id": "DE123456789",
    "website": "https://acme.example", "address.line1": "1 Main Street",
    "address.city": "Berlin", "address.postal_code": "10115", "address.country": "DE",
    "contact.name": "Ada Owner", "contact.email": "ada@acme.example",
}


def stored_partner(app, partner_id: str) -> Partner:
    return run_in_transaction(app.registry["db.session_factory"], lambda session: session.get(
        Partner, parse_id("partner", partner_id)))


def stored_documents(app) -> list[VerificationDocument]:
    return run_in_transaction(app.registry["db.session_factory"], lambda session: list(
        session.scalars(sa.select(VerificationDocument).order_by(VerificationDocument.id))))


def upload(web, content: bytes, *, filename: str = "register.pdf",
           content_type: str = "application/pdf", kind: str = "registration", status="*"):
    page = web.get("/portal/company/verification")
    return web.post("/portal/company/verification/documents",
                    [("csrf_token", csrf_token(page)), ("kind", kind)],
                    upload_files=[("file", filename, content, content_type)], status=status)


def test_company_pages_need_login_and_csrf(client):
    for path in ("/portal/company", "/portal/company/verification"):
        response = client.web.get(path, status=303)
        assert "/portal/login?next=" in response.location
    signed_in_owner(client)
    page = client.web.post("/portal/company", {"company_name": "Evil"}, status=403)
    assert "The form expired" in page.text
    client.web.post("/portal/company/verification/documents", {"kind": "tax"}, status=403)
    client.web.put("/portal/company", status=405)


def test_profile_edit_keeps_values_and_escapes(client, app):
    registered = signed_in_owner(client)
    dashboard = client.web.get("/portal")
    assert 'href="/portal/company/verification">Verify the company' in dashboard.text
    assert 'href="/portal/integrations">Publish an integration' in dashboard.text
    page = client.web.get("/portal/company")
    assert input_value(page, "company_name") == "Acme Learning"
    assert 'aria-current="page">Company' in page.text

    invalid = post_form(client.web, "/portal/company", {
        "company_name": "<b>Acme</b> & Co", "company_website": "not a link",
        "contact_phone": "call me", "category": "education"}, status=400)
    assert field_errors(invalid, "company_website")
    assert field_errors(invalid, "contact_phone")
    assert input_value(invalid, "company_name") == "&lt;b&gt;Acme&lt;/b&gt; &amp; Co"
    assert input_value(invalid, "contact_phone") == "call me"
    assert stored_partner(app, registered["partner"]["id"]).company_name == "Acme Learning"

    saved = post_form(client.web, "/portal/company", {
        "company_name": "<b>Acme</b> & Co", "company_website": "https://acme.example",
        "description": "Courses <script>alert(1)</script>", "category": "education"},
        status=303)
    page = client.web.get(saved.location)
    assert "The company profile is saved." in page.text
    assert "<script>alert(1)</script>" not in page.text
    assert "Courses &lt;script&gt;" in page.text
    partner = stored_partner(app, registered["partner"]["id"])
    assert partner.company_name == "<b>Acme</b> & Co"
    assert partner.category == "education"

    partial = post_form(client.web, "/portal/company", {
        "company_name": "Acme", "address.line1": "1 Main Street", "address.country": "de"},
        status=400)
    assert field_errors(partial, "address.city")
    assert field_errors(partial, "address.country")
    assert input_value(partial, "address.line1") == "1 Main Street"
    post_form(client.web, "/portal/company", {
        "company_name": "Acme", "address.line1": "1 Main Street", "address.city": "Berlin",
        "address.country": "DE"}, status=303)
    assert stored_partner(app, registered["partner"]["id"]).address == {
        "line1": "1 Main Street", "city": "Berlin", "country": "DE"}
    assert input_value(client.web.get("/portal/company"), "address.city") == "Berlin"

    # A blank optional field clears it.
    post_form(client.web, "/portal/company", {"company_name": "Acme"}, status=303)
    partner = stored_partner(app, registered["partner"]["id"])
    assert partner.company_website is None
    assert partner.address is None


def test_profile_read_only_role(client, app):
    owner = client.register_partner()
    reader = client.register_partner(company_name="Reader Co")
    add_member(app, owner["partner"]["id"], reader["user"]["id"], "read_only")
    # The portal acts for the first partner a user joined, so the reader leaves its own.
    def leave_own(session):
        session.execute(sa.delete(PartnerMember).where(
            PartnerMember.partner_id == parse_id("partner", reader["partner"]["id"])))
    run_in_transaction(app.registry["db.session_factory"], leave_own)
    log_in(client.web, reader["user"]["email"])
    page = client.web.get("/portal/company")
    assert "can read the profile but not change it" in page.text
    assert 'name="company_name"' not in page.text
    denied = post_form(client.web, "/portal/company", {"company_name": "Taken"},
                       form_page="/portal/company", status=403)
    assert "partner:write" in denied.text
    verification = client.web.get("/portal/company/verification")
    assert "Submit for review" not in verification.text


def test_verification_submit_and_rejection(client, app):
    registered = signed_in_owner(client)
    page = client.web.get("/portal/company/verification")
    assert "Unverified" in page.text or "unverified" in page.text

    missing = dict(VERIFICATION, **{"address.country": "Germany", "website": "http://acme.example"})
    del missing["contact.email"]
    invalid = post_form(client.web, "/portal/company/verification", missing, status=400)
    assert field_errors(invalid, "address.country")
    assert field_errors(invalid, "website") == ["Must be an https:// URL."]
    assert field_errors(invalid, "contact.email")
    assert input_value(invalid, "address.city") == "Berlin"
    assert input_value(invalid, "tax_id") is None
    assert stored_partner(app, registered["partner"]["id"]).verification_status == "unverified"

    done = post_form(client.web, "/portal/company/verification", VERIFICATION, status=303)
    page = client.web.get(done.location)
    assert "The verification is submitted." in page.text
    assert "****6789" in page.text
    assert "DE123456789" not in page.text
    assert "Submit for review" not in page.text

    def reject(session):
        partner = session.get(Partner, parse_id("partner", registered["partner"]["id"]))
        partner.verification_status = "rejected"
        partner.verification_rejection_reason = "The <i>register</i> extract is unreadable."
    run_in_transaction(app.registry["db.session_factory"], reject)
    page = client.web.get("/portal/company/verification")
    assert "The verification was rejected." in page.text
    assert "The &lt;i&gt;register&lt;/i&gt; extract is unreadable." in page.text
    assert "Submit for review" in page.text
    assert input_value(page, "legal_name") == "Acme Learning GmbH"


def test_document_upload_limits(app_factory):
    app = app_factory(**{"fkod.verification.max_document_bytes": "2000"})
    client = TestClient(app)
    signed_in_owner(client)

    uploaded = upload(client.web, PDF, filename="<i>register.pdf", status=303)
    page = client.web.get(uploaded.location)
    assert "&lt;i&gt;register.pdf" in page.text
    [document] = stored_documents(app)
    assert document.content_type == "application/pdf"

    too_large = upload(client.web, PDF + b"x" * 2000, status=413)
    assert field_errors(too_large, "file") == ["Larger than 2000 bytes."]
    far_too_large = upload(client.web, PDF + b"x" * 200_000, status=413)
    assert field_errors(far_too_large, "file") == [
        "The file is larger than the limit of 2000 bytes."]
    wrong_type = upload(client.web, b"GIF89a" + b"\x00" * 20, filename="logo.gif",
                        content_type="image/gif", kind="tax", status=400)
    assert field_errors(wrong_type, "file")
    assert '<option value="tax" selected>' in wrong_type.text
    mismatch = upload(client.web, PNG, filename="scan.pdf", status=400)
    assert field_errors(mismatch, "file") == ["Declared application/pdf, content is image/png."]
    no_file = post_form(client.web, "/portal/company/verification/documents",
                        {"kind": "tax"}, form_page="/portal/company/verification", status=400)
    assert field_errors(no_file, "file") == ["Choose a file to upload."]
    assert len(stored_documents(app)) == 1

    deleted = post_form(client.web,
                        f"/portal/company/verification/documents/doc_{document.id}/delete", {},
                        form_page="/portal/company/verification", status=303)
    assert "The document is deleted." in client.web.get(deleted.location).text
    assert stored_documents(app)[0].deleted_at is not None


@pytest.mark.shared_app(False)
def test_other_partner_document_is_404(client, app):
    _other, token = client.partner_with_token(company_name="Other")
    response = client.web.post("/api/partners/verification/documents", {"kind": "tax"},
                               upload_files=[("file", "a.pdf", PDF, "application/pdf")],
                               headers={"Authorization": f"Bearer {token}"}, status=201)
    signed_in_owner(client)
    page = post_form(client.web, f"/portal/company/verification/documents/"
                                 f"{response.json['id']}/delete", {},
                     form_page="/portal/company/verification", status=404)
    assert "No verification document" in page.text
    assert stored_documents(app)[0].deleted_at is None
