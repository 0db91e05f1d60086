"""Partner verification: submission, documents, masking and the limits on unverified partners."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
import sqlalchemy as sa
import webtest

from fkod.core.auth.models import Partner
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import TestClient, auth_header, verify_partner
from fkod.core.webhooks.models import Event
from fkod.partners.models import VerificationDocument
from tests.envelope import assert_envelope
from tests.functional.test_members import ROLES, audit_actions, make_team

pytestmark = pytest.mark.shared_app

VERIFY = "/api/partners/verify"
VERIFICATION = "/api/partners/verification"
DOCUMENTS = "/api/partners/verification/documents"
TAX_ID = "DE-987654321-XK"
BANK_ACCOUNT = "DE89370400440532013000"

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x11" * 64 + b"\xff\xd9"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 64


def verification_body(**changes) -> dict:
    body = {
        "legal_name": "Acme Learning GmbH",
        "tax_id": TAX_ID,
        "address": {"line1": "Hauptstrasse 1", "line2": "Floor 3", "city": "Berlin",
                    "postal_code": "10115", "country": "DE"},
        "contact": {"name": "Ada Admin", "email": "ada@acme.example", "phone": "+49 30 1234567"},
        "website": "https://acme.example",
    }
    body.update(changes)
    return body


def in_db(app, work):
    return run_in_transaction(app.registry["db.session_factory"], work)


def stored_partner(app, partner_id: str) -> Partner:
    return in_db(app, lambda session: session.get(Partner, parse_id("partner", partner_id)))


def set_partner(app, partner_id: str, **values) -> None:
    def work(session):
        partner = session.get(Partner, parse_id("partner", partner_id))
        for name, value in values.items():
            setattr(partner, name, value)

    in_db(app, work)


def stored_documents(app, partner_id: str) -> list[VerificationDocument]:
    return in_db(app, lambda session: list(session.scalars(
        sa.select(VerificationDocument)
        .where(VerificationDocument.partner_id == parse_id("partner", partner_id))
        .order_by(VerificationDocument.id))))


def upload(client: TestClient, token: str, data: bytes, *, filename: str = "document.pdf",
           content_type: str = "application/pdf", kind: str = "registration", status=201):
    return client.web.post(DOCUMENTS, params={"kind": kind},
                           upload_files=[("file", filename, data, content_type)],
                           headers=auth_header(token), status=status)


def raw_multipart(client: TestClient, token: str, body: bytes, boundary: str = "XyZ123"):
    request = webtest.TestRequest.blank(DOCUMENTS, method="POST", body=body,
                                        headers=auth_header(token))
    request.environ["CONTENT_TYPE"] = f"multipart/form-data; boundary={boundary}"
    return client.web.do_request(request, status="*", expect_errors=True)


def part(name: str, value: bytes, filename: str | None = None,
         content_type: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    headers = f"Content-Disposition: {disposition}\r\n"
    if content_type is not None:
        headers += f"Content-Type: {content_type}\r\n"
    return b"--XyZ123\r\n" + headers.encode() + b"\r\n" + value + b"\r\n"


@pytest.fixture
def app(app_factory, tmp_path):
    return app_factory(**{"fkod.storage.local_directory": str(tmp_path / "documents")})


@pytest.fixture
def owner(client) -> tuple[dict, str]:
    return client.partner_with_token()


# Submission --------------------------------------------------------------------------------


def test_submit_from_unverified(client, app, owner):
    partner, token = owner

    submitted = client.web.post_json(VERIFY, verification_body(),
                                     headers=auth_header(token)).json

    assert submitted["verification_status"] == "submitted"
    assert submitted["legal_name"] == "Acme Learning GmbH"
    assert submitted["tax_id"] == "****1-XK"
    assert submitted["address"]["country"] == "DE"
    assert submitted["contact"]["email"] == "ada@acme.example"
    assert submitted["website"] == "https://acme.example/"
    assert submitted["verification_submitted_at"].endswith("Z")
    stored = stored_partner(app, partner["id"])
    assert stored.verification_status == "submitted"
    assert stored.verification_submitted_at is not None
    assert app.registry["webhook_vault"].decrypt(stored.tax_id) == TAX_ID
    assert TAX_ID not in json.dumps(stored.verification_data)


def test_submit_from_rejected(client, app, owner):
    partner, token = owner
    set_partner(app, partner["id"], verification_status="rejected",
                verification_rejection_reason="The registration extract is unreadable.")
    before = client.web.get(VERIFICATION, headers=auth_header(token)).json
    assert before["verification_rejection_reason"] == "The registration extract is unreadable."

    submitted = client.web.post_json(VERIFY, verification_body(),
                                     headers=auth_header(token)).json

    assert submitted["verification_status"] == "submitted"
    assert submitted["verification_rejection_reason"] is None


@pytest.mark.parametrize(("status", "code"), [("submitted", "verification_in_review"),
                                              ("verified", "partner_verified")])
def test_submit_refused(client, app, owner, status, code):
    partner, token = owner
    set_partner(app, partner["id"], verification_status=status)

    response = client.web.post_json(VERIFY, verification_body(), headers=auth_header(token),
                                    status=409)

    assert_envelope(response, 409, code)
    assert stored_partner(app, partner["id"]).tax_id is None


def test_submit_twice_refused(client, owner):
    _partner, token = owner
    client.web.post_json(VERIFY, verification_body(), headers=auth_header(token))

    response = client.web.post_json(VERIFY, verification_body(), headers=auth_header(token),
                                    status=409)

    assert_envelope(response, 409, "verification_in_review")


INVALID_SUBMISSIONS = {
    "country_unassigned": ({"address": {"line1": "x", "city": "y", "postal_code": "1",
                                        "country": "ZZ"}}, "address.country"),
    "country_lowercase": ({"address": {"line1": "x", "city": "y", "postal_code": "1",
                                       "country": "de"}}, "address.country"),
    "country_alpha3": ({"address": {"line1": "x", "city": "y", "postal_code": "1",
                                    "country": "DEU"}}, "address.country"),
    "postal_code_missing": ({"address": {"line1": "x", "city": "y", "country": "DE"}},
                            "address.postal_code"),
    "website_http": ({"website": "http://acme.example"}, "website"),
    "website_javascript": ({"website": "javascript:alert(1)"}, "website"),
    "website_credentials": ({"website": "https://user:pw@acme.example"}, "website"),
    "contact_email_invalid": ({"contact": {"name": "Ada", "email": "not-an-email"}},
                              "contact.email"),
    "contact_name_missing": ({"contact": {"email": "ada@acme.example"}}, "contact.name"),
    "tax_id_symbols": ({"tax_id": "12<script>"}, "tax_id"),
    "tax_id_short": ({"tax_id": "123"}, "tax_id"),
    "legal_name_newline": ({"legal_name": "Acme\nBcc: x@y"}, "legal_name"),
}


@pytest.mark.parametrize(("changes", "field"), list(INVALID_SUBMISSIONS.values()),
                         ids=list(INVALID_SUBMISSIONS))
def test_submit_invalid_rejected(client, app, owner, changes, field):
    partner, token = owner

    response = client.web.post_json(VERIFY, verification_body(**changes),
                                    headers=auth_header(token), status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert field in [error["name"] for error in body["errors"]]
    assert stored_partner(app, partner["id"]).verification_status == "unverified"


@pytest.mark.shared_app(False)
def test_submit_publishes_update_and_audits(client, app, owner):
    partner, token = owner

    client.web.post_json(VERIFY, verification_body(), headers=auth_header(token))

    events = in_db(app, lambda session: list(session.scalars(
        sa.select(Event).where(Event.type == "partner.updated"))))
    assert len(events) == 1
    assert events[0].payload["data"]["verification_status"] == "submitted"
    assert TAX_ID not in json.dumps(events[0].payload)
    assert "partner.verification_submitted" in audit_actions(app, partner["id"])


def test_verification_permissions(client, subtests):
    team = make_team(client)
    for role in ROLES:
        with subtests.test(role=role):
            read = client.web.get(VERIFICATION, headers=team.headers(role), status="*")
            write = client.web.post_json(DOCUMENTS, {"kind": "tax", "filename": "t.pdf",
                                                     "content_type": "application/pdf",
                                                     "content_base64": ""},
                                         headers=team.headers(role), status="*")

            assert read.status_int == 200
            if role in ("owner", "admin"):
                assert_envelope(write, 400, "empty_document")
            else:
                assert_envelope(write, 403, "missing_permission")


# Masking ------------------------------------------------------------------------------------


def test_tax_id_never_in_clear(client, app, owner):
    partner, token = owner
    headers = auth_header(token)
    set_partner(app, partner["id"],
                bank_account=app.registry["webhook_vault"].encrypt(BANK_ACCOUNT))
    responses = [client.web.post_json(VERIFY, verification_body(), headers=headers)]
    upload(client, token, PDF)

    responses += [
        client.web.get(VERIFICATION, headers=headers),
        client.web.get("/api/partners/me", headers=headers),
        client.web.put_json("/api/partners/me", {"description": "Courses."}, headers=headers),
        client.web.get(DOCUMENTS, headers=headers),
        client.web.get("/api/partners/export", headers=headers),
    ]

    for response in responses:
        assert TAX_ID.encode() not in response.body, response.request.path
        assert BANK_ACCOUNT.encode() not in response.body, response.request.path
    exported = responses[-1].json
    assert exported["partner"]["tax_id"] == "****1-XK"
    assert exported["partner"]["bank_account"] == "****3000"
    assert exported["verification"]["tax_id"] == "****1-XK"


def test_short_tax_id_fully_masked(client, owner):
    _partner, token = owner

    submitted = client.web.post_json(VERIFY, verification_body(tax_id="12345"),
                                     headers=auth_header(token)).json

    assert submitted["tax_id"] == "****"


# Documents ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "content_type", "filename"), [
    (PDF, "application/pdf", "registration.pdf"),
    (PNG, "image/png", "scan.png"),
    (JPEG, "image/jpeg", "photo.jpg"),
], ids=["pdf", "png", "jpeg"])
def test_upload_accepted_types(client, app, owner, data, content_type, filename):
    partner, token = owner

    uploaded = upload(client, token, data, filename=filename, content_type=content_type,
                      kind="identity").json

    assert uploaded["id"].startswith("doc_")
    assert uploaded["kind"] == "identity"
    assert uploaded["filename"] == filename
    assert uploaded["content_type"] == content_type
    assert uploaded["size"] == len(data)
    assert uploaded["sha256"] == hashlib.sha256(data).hexdigest()
    assert set(uploaded) == {"id", "kind", "filename", "content_type", "size", "sha256",
                             "uploaded_by", "created_at"}
    [stored] = stored_documents(app, partner["id"])
    assert app.registry["document_storage"].open(stored.storage_key) == data
    assert stored.storage_key not in json.dumps(uploaded)


def test_upload_as_json_base64(client, app, owner):
    partner, token = owner
    body = {"kind": "tax", "filename": "tax.png", "content_type": "image/png",
            "content_base64": base64.b64encode(PNG).decode()}

    uploaded = client.web.post_json(DOCUMENTS, body, headers=auth_header(token),
                                    status=201).json

    assert uploaded["content_type"] == "image/png"
    [stored] = stored_documents(app, partner["id"])
    assert app.registry["document_storage"].open(stored.storage_key) == PNG


def test_renamed_executable_rejected(client, app, owner, tmp_path):
    partner, token = owner

    response = upload(client, token, EXE, filename="invoice.pdf", status=400)

    body = assert_envelope(response, 400, "unsupported_document_type")
    assert body["errors"][0]["name"] == "file"
    assert stored_documents(app, partner["id"]) == []
    assert not (tmp_path / "documents").exists() or not any(
        path.is_file() for path in (tmp_path / "documents").rglob("*"))


@pytest.mark.parametrize(("data", "declared"), [
    (PNG, "application/pdf"), (PDF, "image/jpeg"), (JPEG, "image/png"),
    (PDF, "application/octet-stream"), (PDF, "text/plain"),
], ids=["png_as_pdf", "pdf_as_jpeg", "jpeg_as_png", "octet_stream", "text_plain"])
def test_declared_type_must_match(client, app, owner, data, declared):
    partner, token = owner

    response = upload(client, token, data, content_type=declared, status=400)

    assert_envelope(response, 400, "document_type_mismatch")
    assert stored_documents(app, partner["id"]) == []


def test_empty_document_rejected(client, owner):
    _partner, token = owner

    response = upload(client, token, b"", status=400)

    assert_envelope(response, 400, "empty_document")


@pytest.fixture
def small_limit_app(app_factory, tmp_path):
    return app_factory(**{"fkod.storage.local_directory": str(tmp_path / "small"),
                          "fkod.verification.max_document_bytes": "2048"})


def test_document_over_limit_rejected(small_limit_app):
    client = TestClient(small_limit_app)
    partner, token = client.partner_with_token()
    at_limit = PDF + b"0" * (2048 - len(PDF))

    upload(client, token, at_limit)
    response = upload(client, token, at_limit + b"0", status=413)

    body = assert_envelope(response, 413, "document_too_large")
    assert "2048" in body["message"]
    assert len(stored_documents(small_limit_app, partner["id"])) == 1


def test_body_far_over_limit_rejected(small_limit_app):
    client = TestClient(small_limit_app)
    _partner, token = client.partner_with_token()

    response = upload(client, token, PDF + b"0" * 200_000, status=413)

    assert_envelope(response, 413, "payload_too_large")


def test_json_body_limit_bounds_base64(small_limit_app):
    client = TestClient(small_limit_app)
    _partner, token = client.partner_with_token()
    body = {"kind": "tax", "filename": "big.pdf", "content_type": "application/pdf",
            "content_base64": base64.b64encode(PDF + b"0" * 2_000_000).decode()}

    response = client.web.post_json(DOCUMENTS, body, headers=auth_header(token), status=413)

    assert_envelope(response, 413, "payload_too_large")


MALFORMED_FORMS = {
    "missing_file": (part("kind", b"tax") + b"--XyZ123--\r\n", "validation_failed"),
    "unknown_kind": (part("kind", b"passport") + part("file", PDF, "a.pdf", "application/pdf")
                     + b"--XyZ123--\r\n", "validation_failed"),
    "file_twice": (part("kind", b"tax") + part("file", PDF, "a.pdf", "application/pdf")
                   + part("file", PDF, "b.pdf", "application/pdf") + b"--XyZ123--\r\n",
                   "validation_failed"),
    "file_as_text": (part("kind", b"tax") + part("file", PDF) + b"--XyZ123--\r\n",
                     "validation_failed"),
    "truncated": (part("kind", b"tax") + part("file", PDF, "a.pdf", "application/pdf")[:-20],
                  "invalid_multipart"),
    "unknown_field": (part("kind", b"tax") + part("file", PDF, "a.pdf", "application/pdf")
                      + part("owner_id", b"1") + b"--XyZ123--\r\n", "validation_failed"),
    "type_field_with_file": (part("kind", b"tax") + part("file", PDF, "a.pdf", "application/pdf")
                             + part("content_type", b"image/png") + b"--XyZ123--\r\n",
                             "validation_failed"),
    "many_parts": (b"".join(part(f"f{index}", b"x") for index in range(30)) + b"--XyZ123--\r\n",
                   "invalid_multipart"),
}


@pytest.mark.parametrize(("body", "code"), list(MALFORMED_FORMS.values()),
                         ids=list(MALFORMED_FORMS))
def test_malformed_form_rejected(client, app, owner, body, code):
    partner, token = owner

    response = raw_multipart(client, token, body)

    assert_envelope(response, 400, code)
    assert stored_documents(app, partner["id"]) == []


def test_form_without_boundary_rejected(client, owner):
    _partner, token = owner
    request = webtest.TestRequest.blank(DOCUMENTS, method="POST", body=b"--x--",
                                        headers=auth_header(token))
    request.environ["CONTENT_TYPE"] = "multipart/form-data"

    response = client.web.do_request(request, status="*", expect_errors=True)

    assert_envelope(response, 400, "invalid_multipart")


def test_well_formed_raw_form_accepted(client, owner):
    _partner, token = owner
    body = part("kind", b"bank") + part("file", PDF, "bank.pdf", "application/pdf") \
        + b"--XyZ123--\r\n"

    response = raw_multipart(client, token, body)

    assert response.status_int == 201, response.body[:300]
    assert response.json["kind"] == "bank"


@pytest.mark.parametrize(("filename", "kept"), [
    ("../../etc/passwd.pdf", "passwd.pdf"),
    ("C:\\fakepath\\statement.pdf", "statement.pdf"),
    ("bad\x07name.pdf", "badname.pdf"),
    ("/", "registration.pdf"),
])
def test_filename_cleaned(client, app, owner, filename, kept):
    partner, token = owner

    uploaded = upload(client, token, PDF, filename=filename).json

    assert uploaded["filename"] == kept
    [stored] = stored_documents(app, partner["id"])
    assert ".." not in stored.storage_key
    assert "/" not in stored.storage_key


def test_documents_listed_and_deleted(client, app, owner):
    partner, token = owner
    first = upload(client, token, PDF, kind="registration").json
    second = upload(client, token, PNG, content_type="image/png", filename="b.png",
                    kind="tax").json

    listed = client.web.get(DOCUMENTS, headers=auth_header(token)).json
    assert [item["id"] for item in listed["data"]] == [first["id"], second["id"]]

    client.web.delete(f"{DOCUMENTS}/{first['id']}", headers=auth_header(token), status=204)

    listed = client.web.get(DOCUMENTS, headers=auth_header(token)).json
    assert [item["id"] for item in listed["data"]] == [second["id"]]
    summary = client.web.get(VERIFICATION, headers=auth_header(token)).json
    assert [item["id"] for item in summary["documents"]] == [second["id"]]
    deleted = stored_documents(app, partner["id"])[0]
    assert deleted.deleted_at is not None
    with pytest.raises(KeyError):
        app.registry["document_storage"].open(deleted.storage_key)
    response = client.web.delete(f"{DOCUMENTS}/{first['id']}", headers=auth_header(token),
                                 status=404)
    assert_envelope(response, 404, "not_found")
    actions = audit_actions(app, partner["id"])
    assert actions.count("verification.document_uploaded") == 2
    assert "verification.document_deleted" in actions


def test_documents_frozen_once_verified(client, app, owner):
    partner, token = owner
    uploaded = upload(client, token, PDF).json
    set_partner(app, partner["id"], verification_status="verified")

    deleted = client.web.delete(f"{DOCUMENTS}/{uploaded['id']}", headers=auth_header(token),
                                status=409)
    added = upload(client, token, PDF, status=409)

    assert_envelope(deleted, 409, "partner_verified")
    assert_envelope(added, 409, "partner_verified")
    [stored] = stored_documents(app, partner["id"])
    assert app.registry["document_storage"].open(stored.storage_key) == PDF


@pytest.mark.parametrize("status", ["submitted", "rejected"])
def test_documents_deletable_before_verification(client, app, owner, status):
    partner, token = owner
    uploaded = upload(client, token, PDF).json
    set_partner(app, partner["id"], verification_status=status)

    client.web.delete(f"{DOCUMENTS}/{uploaded['id']}", headers=auth_header(token), status=204)


def test_document_count_bounded(client, owner):
    _partner, token = owner
    for _ in range(20):
        upload(client, token, PDF)

    response = upload(client, token, PDF, status=409)

    assert_envelope(response, 409, "too_many_documents")


def test_other_partners_document_not_found(client, app, owner):
    _partner, token = owner
    other_partner, other_token = client.partner_with_token()
    theirs = upload(client, other_token, PDF).json

    response = client.web.delete(f"{DOCUMENTS}/{theirs['id']}", headers=auth_header(token),
                                 status=404)

    assert_envelope(response, 404, "not_found")
    assert client.web.get(DOCUMENTS, headers=auth_header(token)).json["data"] == []
    assert len(stored_documents(app, other_partner["id"])) == 1


def test_no_route_serves_documents(client, owner):
    _partner, token = owner
    uploaded = upload(client, token, PDF).json

    response = client.web.get(f"{DOCUMENTS}/{uploaded['id']}", headers=auth_header(token),
                              status=405)

    assert_envelope(response, 405, "method_not_allowed")


# What an unverified partner may do ------------------------------------------------------------


def test_unverified_partner_limited_to_test_mode(client, app, owner, make_receiver):
    partner, token = owner
    headers = auth_header(token)
    receiver = make_receiver()
    webhook = {"url": receiver.url, "event_types": ["partner.verified"]}

    live_key = client.web.post_json("/api/partners/api-keys",
                                    {"key_name": "live", "scopes": ["users:read"],
                                     "mode": "live"}, headers=headers, status=403)
    live_hook = client.web.post_json("/api/partners/webhooks", {**webhook, "mode": "live"},
                                     headers=headers, status=403)

    assert_envelope(live_key, 403, "partner_not_verified")
    assert_envelope(live_hook, 403, "partner_not_verified")
    client.create_key(token, mode="test")
    client.web.post_json("/api/partners/webhooks", webhook, headers=headers, status=201)

    client.web.post_json(VERIFY, verification_body(), headers=headers)
    response = client.web.post_json("/api/partners/api-keys",
                                    {"key_name": "live", "scopes": ["users:read"],
                                     "mode": "live"}, headers=headers, status=403)
    assert_envelope(response, 403, "partner_not_verified")

    set_partner(app, partner["id"], verification_status="verified", status="active")
    response = client.web.post_json("/api/partners/api-keys",
                                    {"key_name": "live", "scopes": ["users:read"],
                                     "mode": "live"}, headers=headers, status=403)
    assert_envelope(response, 403, "email_not_verified")

    verify_partner(app, partner["id"])
    assert client.create_key(token, mode="live")["key"].startswith("sk_live_")


def test_suspended_partner_blocked(client, app, owner):
    partner, token = owner
    set_partner(app, partner["id"], status="suspended")

    responses = [
        client.web.get(VERIFICATION, headers=auth_header(token), status=403),
        client.web.post_json(VERIFY, verification_body(), headers=auth_header(token),
                             status=403),
        upload(client, token, PDF, status=403),
    ]

    for response in responses:
        assert_envelope(response, 403, "partner_suspended")
