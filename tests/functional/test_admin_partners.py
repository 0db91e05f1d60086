"""Admin partner lists and details: filters, literal search, sorted pages, masking, records."""

from __future__ import annotations

import datetime as dt

import pytest

from fkod.admin.testing import admin_with_headers
from fkod.core.auth.models import Partner
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.ids import parse_id
from fkod.core.testing import auth_header
from fkod.partners.models import SupportTicket
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

PARTNERS = "/api/admin/partners"


@pytest.fixture
def headers(client) -> dict:
    return admin_with_headers(client, "readonly")[1]


def update_partner(app, partner_id: str, **values) -> None:
    def work(session):
        row = session.get(Partner, parse_id("partner", partner_id))
        for name, value in values.items():
            setattr(row, name, value)

    run_in_transaction(app.registry["db.session_factory"], work)


def register(client, company_name: str, **fields) -> dict:
    return client.register_partner(company_name=company_name, **fields)["partner"]


def names(response) -> list[str]:
    return [item["company_name"] for item in response.json["data"]]


def all_pages(client, headers: dict, query: str) -> list[list[str]]:
    """Follow next_cursor from the first page to the last; return each page's names."""
    pages = []
    cursor = None
    while True:
        suffix = f"&cursor={cursor}" if cursor else ""
        response = client.web.get(f"{PARTNERS}?{query}{suffix}", headers=headers)
        pages.append(names(response))
        cursor = response.json["next_cursor"]
        assert response.json["has_more"] is (cursor is not None)
        if cursor is None:
            return pages


# Lists --------------------------------------------------------------------------------


def test_list_newest_first_by_default(client, headers):
    for name in ("first", "second", "third"):
        register(client, name)

    response = client.web.get(PARTNERS, headers=headers)

    assert names(response) == ["third", "second", "first"]
    item = response.json["data"][0]
    assert item["id"].startswith("partner_")
    assert item["status"] == "pending"
    assert item["verification_status"] == "unverified"
    assert item["plan"] == "free"


@pytest.mark.shared_app(False)
def test_list_filters_by_status(client, app, headers):
    register(client, "pending one")
    suspended = register(client, "suspended one")
    submitted = register(client, "submitted one")
    update_partner(app, suspended["id"], status="suspended")
    update_partner(app, submitted["id"], verification_status="submitted")

    by_status = client.web.get(f"{PARTNERS}?status=suspended", headers=headers)
    by_verification = client.web.get(f"{PARTNERS}?verification_status=submitted",
                                     headers=headers)
    both = client.web.get(f"{PARTNERS}?status=pending&verification_status=unverified",
                          headers=headers)

    assert names(by_status) == ["suspended one"]
    assert names(by_verification) == ["submitted one"]
    assert names(both) == ["pending one"]


def test_search_matches_literally(client, headers):
    for name in ("acme_sync", "acmeXsync", "100% uptime", "100 uptime", "back\\slash"):
        register(client, name)

    def search(text: str) -> list[str]:
        return sorted(names(client.web.get(PARTNERS, {"q": text}, headers=headers)))

    assert search("acme_sync") == ["acme_sync"]
    assert search("_") == ["acme_sync"]
    assert search("%") == ["100% uptime"]
    assert search("100%") == ["100% uptime"]
    assert search("\\") == ["back\\slash"]
    assert search("ACME") == ["acmeXsync", "acme_sync"]


def test_search_covers_contact_email(client, headers):
    register(client, "Zeta Learning", contact_email="billing@zeta.example")
    register(client, "Other Learning")

    response = client.web.get(PARTNERS, {"q": "@ZETA."}, headers=headers)

    assert names(response) == ["Zeta Learning"]


@pytest.mark.shared_app(False)
def test_sort_by_company_name_pages(client, headers):
    for name in ("delta", "alpha", "echo", "bravo", "charlie", "bravo"):
        register(client, name)

    ascending = all_pages(client, headers, "sort=company_name&limit=2")
    descending = all_pages(client, headers, "sort=-company_name&limit=4")

    assert ascending == [["alpha", "bravo"], ["bravo", "charlie"], ["delta", "echo"]]
    assert descending == [["echo", "delta", "charlie", "bravo"], ["bravo", "alpha"]]


@pytest.mark.shared_app(False)
def test_sort_created_at_pages(client, headers):
    for name in ("one", "two", "three"):
        register(client, name)

    assert all_pages(client, headers, "sort=created_at&limit=2") == [["one", "two"], ["three"]]
    assert all_pages(client, headers, "limit=2") == [["three", "two"], ["one"]]


@pytest.mark.shared_app(False)
def test_sort_verification_queue(client, app, headers):
    now = utcnow()
    late = register(client, "late")
    never = register(client, "never")
    early = register(client, "early")
    update_partner(app, late["id"], verification_submitted_at=now - dt.timedelta(hours=1))
    update_partner(app, early["id"], verification_submitted_at=now - dt.timedelta(days=2))

    oldest_first = all_pages(client, headers, "sort=verification_submitted_at&limit=1")
    newest_first = all_pages(client, headers, "sort=-verification_submitted_at&limit=1")

    assert never["company_name"] == "never"
    assert oldest_first == [["early"], ["late"], ["never"]]
    assert newest_first == [["never"], ["late"], ["early"]]


@pytest.mark.parametrize("query,field", [
    ("status=closed", "status"),
    ("verification_status=approved", "verification_status"),
    ("sort=name", "sort"),
    ("sort=company_name%3BSELECT 1", "sort"),
    ("sort=(select 1)", "sort"),
    ("sort=partners.tax_id", "sort"),
    ("sort=company_name desc", "sort"),
    ("sort=--company_name", "sort"),
    ("q=", "q"),
    ("q=" + "x" * 201, "q"),
    ("limit=0", "limit"),
    ("limit=101", "limit"),
    ("limit=1.5", "limit"),
    ("limit=abc", "limit"),
    ("cursor=not-a-cursor", "cursor"),
    ("page=2", "page"),
    ("status=active&status=pending", "status"),
])
def test_list_rejects_bad_query(client, headers, query, field):
    response = client.web.get(f"{PARTNERS}?{query}", headers=headers, status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert field in [error["name"] for error in body["errors"]]


def test_sort_cursor_of_unknown_partner_rejected(client, headers):
    from fkod.core.api import encode_cursor

    response = client.web.get(f"{PARTNERS}?sort=company_name&cursor={encode_cursor(999999)}",
                              headers=headers, status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert body["errors"][0]["name"] == "cursor"


# Details ------------------------------------------------------------------------------


def test_detail_shows_members_plan_and_overrides(client, headers):
    registered = client.register_partner(company_name="Detail Co")
    partner_id = registered["partner"]["id"]

    body = client.web.get(f"{PARTNERS}/{partner_id}", headers=headers).json

    assert body["id"] == partner_id
    assert body["owner_id"] == registered["user"]["id"]
    assert body["members"] == [{
        "id": registered["user"]["id"], "email": registered["user"]["email"], "name": None,
        "role": "owner", "created_at": body["members"][0]["created_at"]}]
    assert body["plan"] == {"code": "free", "name": "Free", "requests_per_hour": 100,
                            "requests_per_day": 1000}
    assert body["rate_limit_overrides"] is None
    assert body["commission_rate"] is None
    assert body["effective_rate_limits"] == {"hourly": 100, "daily": 1000}
    assert body["tax_id"] is None
    assert body["bank_account"] is None


@pytest.mark.parametrize("stored,shown", [
    ("DE123456789", "****6789"),
    ("GB29NWBK60161331926819", "****6819"),
    ("1234567", "****"),
    ("", "****"),
])
def test_detail_masks_encrypted_values(client, app, headers, stored, shown):
    partner = register(client, "Masked Co")
    vault = app.registry["webhook_vault"]
    tax_token = vault.encrypt(stored)
    bank_token = vault.encrypt(stored)
    update_partner(app, partner["id"], tax_id=tax_token, bank_account=bank_token)

    response = client.web.get(f"{PARTNERS}/{partner['id']}", headers=headers)

    assert response.json["tax_id"] == shown
    assert response.json["bank_account"] == shown
    assert tax_token not in response.text
    assert bank_token not in response.text
    if len(stored) > 4:
        assert stored not in response.text


def test_detail_masks_unreadable_token(client, app, headers):
    partner = register(client, "Garbled Co")
    update_partner(app, partner["id"], tax_id="gAAAAAnot-a-fernet-token-1234")

    response = client.web.get(f"{PARTNERS}/{partner['id']}", headers=headers)

    assert response.json["tax_id"] == "****"


@pytest.mark.parametrize("partner_id", ["partner_999999", "partner_abc", "user_1", "partner_",
                                        "partner_99999999999"])
def test_detail_unknown_partner(client, headers, partner_id):
    response = client.web.get(f"{PARTNERS}/{partner_id}", headers=headers, status=404)

    assert_envelope(response, 404, "not_found")


# A partner's records ------------------------------------------------------------------


def test_api_keys_listed_without_secrets(client, headers):
    partner, token = client.partner_with_token()
    active_key = client.create_key(token)
    revoked = client.create_key(token)
    client.web.delete(f"/api/partners/api-keys/{revoked['id']}", headers=auth_header(token))

    response = client.web.get(f"{PARTNERS}/{partner['id']}/api-keys", headers=headers)
    active = client.web.get(f"{PARTNERS}/{partner['id']}/api-keys?status=active",
                            headers=headers)
    live = client.web.get(f"{PARTNERS}/{partner['id']}/api-keys?mode=live", headers=headers)

    assert [item["id"] for item in response.json["data"]] == [revoked["id"], active_key["id"]]
    assert [item["id"] for item in active.json["data"]] == [active_key["id"]]
    assert live.json["data"] == []
    for item in response.json["data"]:
        assert "key" not in item
        assert "key_hash" not in item
    assert active_key["key"] not in response.text
    assert active_key["key_prefix"] in response.text


def test_api_keys_of_other_partner_not_listed(client, headers):
    partner, _token = client.partner_with_token()
    _other, other_token = client.partner_with_token()
    client.create_key(other_token)

    response = client.web.get(f"{PARTNERS}/{partner['id']}/api-keys", headers=headers)

    assert response.json["data"] == []


def test_webhooks_listed_without_secrets(client, headers):
    partner, token = client.partner_with_token()
    created = client.web.post_json("/api/partners/webhooks", {
        "url": "http://127.0.0.1:9/hooks", "event_types": ["partner.verified"]},
        headers=auth_header(token), status=201).json

    response = client.web.get(f"{PARTNERS}/{partner['id']}/webhooks", headers=headers)
    paused = client.web.get(f"{PARTNERS}/{partner['id']}/webhooks?status=paused",
                            headers=headers)

    [item] = response.json["data"]
    assert item["id"] == created["id"]
    assert item["url"] == "http://127.0.0.1:9/hooks"
    assert "secret" not in item
    assert "secret_key" not in item
    assert created["secret"] not in response.text
    assert paused.json["data"] == []


def test_webhook_header_values_masked(client, headers):
    partner, token = client.partner_with_token()
    client.web.post_json("/api/partners/webhooks", {
        "url": "http://127.0.0.1:9/hooks", "event_types": ["partner.verified"],
        "headers": {"Authorization": "Bearer receiver-credential-7f3a"}},
        headers=auth_header(token), status=201)

    response = client.web.get(f"{PARTNERS}/{partner['id']}/webhooks", headers=headers)

    [item] = response.json["data"]
    assert item["headers"] == {"Authorization": "****"}
    assert "receiver-credential-7f3a" not in response.text


def test_tickets_listed_per_partner(client, app, headers):
    partner = register(client, "Ticket Co")
    other = register(client, "Other Co")

    def work(session):
        for owner, title in ((partner, "Keys fail"), (other, "Not mine"), (partner, "Slow")):
            session.add(SupportTicket(partner_id=parse_id("partner", owner["id"]), title=title,
                                      description="Details", priority="high"))

    run_in_transaction(app.registry["db.session_factory"], work)

    response = client.web.get(f"{PARTNERS}/{partner['id']}/tickets", headers=headers)

    assert [item["title"] for item in response.json["data"]] == ["Slow", "Keys fail"]
    assert response.json["data"][0]["id"].startswith("tkt_")
    assert response.json["data"][0]["status"] == "open"


@pytest.mark.parametrize("path,query,field", [
    ("api-keys", "status=deleted", "status"),
    ("api-keys", "mode=prod", "mode"),
    ("webhooks", "status=gone", "status"),
    ("webhooks", "mode=prod", "mode"),
    ("tickets", "limit=-1", "limit"),
    ("tickets", "status=open", "status"),
])
def test_records_reject_bad_query(client, headers, path, query, field):
    partner = register(client, "Query Co")

    response = client.web.get(f"{PARTNERS}/{partner['id']}/{path}?{query}", headers=headers,
                              status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert field in [error["name"] for error in body["errors"]]


@pytest.mark.parametrize("path", ["api-keys", "webhooks", "tickets"])
def test_records_of_unknown_partner(client, headers, path):
    response = client.web.get(f"{PARTNERS}/partner_999999/{path}", headers=headers, status=404)

    assert_envelope(response, 404, "not_found")
