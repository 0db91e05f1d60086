"""Reviews of integrations: who may write one, edits, the rating, replies and moderation."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from fkod.admin.testing import admin_with_headers
from fkod.core.audit import AuditEntry
from fkod.core.auth.models import PartnerMember
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import TestClient
from fkod.marketplace.models import IntegrationReview
from tests.conftest import STACK
from tests.envelope import assert_envelope
from tests.functional.test_marketplace_installs import (
    GOOD_CONFIG,
    add_integration,
    count_rows,
    install,
    install_url,
    make_customer,
    make_publisher,
    stored_integration,
)

pytestmark = pytest.mark.shared_app


@pytest.fixture
def publisher(client):
    return make_publisher(client)


@pytest.fixture
def integration(app, publisher) -> str:
    return add_integration(app, publisher.partner_id, plugin_name=None)


def review_url(integration_id: str) -> str:
    return f"/api/marketplace/integrations/{integration_id}/review"


def reviews_url(integration_id: str) -> str:
    return f"/api/marketplace/integrations/{integration_id}/reviews"


def installed_customer(client, integration_id: str, name: str = "Ada Lovelace"):
    customer = make_customer(client, name)
    install(client, customer, integration_id, GOOD_CONFIG)
    return customer


def review(client, customer, integration_id: str, rating: int = 5, status: int = 201, **fields):
    return client.web.post_json(review_url(integration_id), {"rating": rating, **fields},
                                headers=customer.headers, status=status)


def rating_of(app, integration_id: str) -> tuple[Decimal | None, int]:
    stored = stored_integration(app, integration_id)
    return stored.rating, stored.review_count


# Writing ------------------------------------------------------------------------------------


def test_review_created(client, app, integration):
    customer = installed_customer(client, integration)
    body = review(client, customer, integration, 4, title="Handy", body="Saves time.").json
    assert body["id"].startswith("rev_")
    assert body["rating"] == 4
    assert body["title"] == "Handy"
    assert body["author"] == {"display_name": "Ada Lovelace"}
    assert body["still_installed"] is True
    assert body["reply"] is None
    assert rating_of(app, integration) == (Decimal("4.00"), 1)


def test_review_needs_install(client, app, integration):
    customer = make_customer(client)
    response = review(client, customer, integration, status=403)
    assert_envelope(response, 403, "not_installed")
    assert rating_of(app, integration) == (None, 0)


def test_uninstalled_customer_may_review(client, integration):
    customer = installed_customer(client, integration)
    client.web.delete(install_url(integration), headers=customer.headers, status=204)
    body = review(client, customer, integration, 3).json
    assert body["still_installed"] is False


def test_own_partner_cannot_review(client, app, publisher, integration):
    member = installed_customer(client, integration)
    with Session(app.registry["db.engine"]) as session, session.begin():
        session.add(PartnerMember(partner_id=publisher.partner_id,
                                  user_id=parse_id("user", member.user_id), role="developer"))
    response = review(client, member, integration, status=403)
    assert_envelope(response, 403, "own_integration")


def test_second_review_conflicts(client, app, integration):
    customer = installed_customer(client, integration)
    review(client, customer, integration, 5)
    response = review(client, customer, integration, 1, status=409)
    assert_envelope(response, 409, "review_exists")
    assert "PUT" in response.json["message"]
    assert rating_of(app, integration) == (Decimal("5.00"), 1)


@pytest.mark.parametrize("body, field", [
    ({"rating": 0}, "rating"), ({"rating": 6}, "rating"), ({"rating": "5"}, "rating"),
    ({"rating": 4.5}, "rating"), ({"rating": True}, "rating"), ({}, "rating"),
    ({"rating": 3, "title": "x" * 201}, "title"), ({"rating": 3, "body": "x" * 5001}, "body"),
    ({"rating": 3, "status": "hidden"}, "status"),
])
def test_review_body_checked(client, integration, body, field):
    customer = installed_customer(client, integration)
    response = client.web.post_json(review_url(integration), body, headers=customer.headers,
                                    status=400)
    assert_envelope(response, 400, "validation_failed")
    assert [error["name"] for error in response.json["errors"]] == [field]


def test_edit_and_delete_follow_rating(client, app, integration):
    first = installed_customer(client, integration)
    second = installed_customer(client, integration, "Grace Hopper")
    review(client, first, integration, 5)
    review(client, second, integration, 4)
    assert rating_of(app, integration) == (Decimal("4.50"), 2)

    body = client.web.put_json(review_url(integration), {"rating": 2},
                               headers=first.headers).json
    assert body["rating"] == 2
    assert body["title"] is None
    assert rating_of(app, integration) == (Decimal("3.00"), 2)

    client.web.put_json(review_url(integration), {"title": "Changed"}, headers=first.headers)
    assert rating_of(app, integration) == (Decimal("3.00"), 2)

    client.web.delete(review_url(integration), headers=second.headers, status=204)
    assert rating_of(app, integration) == (Decimal("2.00"), 1)
    client.web.delete(review_url(integration), headers=first.headers, status=204)
    assert rating_of(app, integration) == (None, 0)
    client.web.delete(review_url(integration), headers=first.headers, status=404)
    client.web.put_json(review_url(integration), {"rating": 1}, headers=first.headers,
                        status=404)


def test_rating_rounds_half_up(client, app, integration):
    # 5, 5 and 4 average 4.666…, which is stored as 4.67.
    for rating in (5, 5, 4):
        review(client, installed_customer(client, integration), integration, rating)
    assert rating_of(app, integration) == (Decimal("4.67"), 3)
    other = add_integration(app, stored_integration(app, integration).partner_id,
                            plugin_name=None)
    for rating in (5, 4, 4, 4, 4, 4, 4, 4):
        review(client, installed_customer(client, other), other, rating)
    # 33 / 8 = 4.125, which rounds half up to 4.13.
    assert rating_of(app, other) == (Decimal("4.13"), 8)


def test_review_of_unlisted_not_found(client, app, publisher):
    draft = add_integration(app, publisher.partner_id, plugin_name=None, status="draft")
    customer = make_customer(client)
    review(client, customer, draft, status=404)
    client.web.get(reviews_url(draft), status=404)


# Listing ------------------------------------------------------------------------------------


def test_list_sorted_and_paginated(client, app, integration):
    ratings = [3, 5, 1, 4]
    for number, rating in enumerate(ratings):
        review(client, installed_customer(client, integration, f"Customer {number}"),
               integration, rating)
    newest = client.web.get(reviews_url(integration)).json
    assert [item["rating"] for item in newest["data"]] == [4, 1, 5, 3]
    assert newest["has_more"] is False

    first = client.web.get(reviews_url(integration) + "?sort=-rating&limit=3").json
    assert [item["rating"] for item in first["data"]] == [5, 4, 3]
    rest = client.web.get(reviews_url(integration) +
                          f"?sort=-rating&limit=3&cursor={first['next_cursor']}").json
    assert [item["rating"] for item in rest["data"]] == [1]
    ascending = client.web.get(reviews_url(integration) + "?sort=rating").json
    assert [item["rating"] for item in ascending["data"]] == [1, 3, 4, 5]


def test_list_query_checked(client, integration):
    response = client.web.get(reviews_url(integration) + "?sort=author", status=400)
    assert response.json["errors"][0]["name"] == "sort"
    client.web.get(reviews_url(integration) + "?limit=0", status=400)


# Replies ------------------------------------------------------------------------------------


def reply_url(integration_id: str, review_id: str) -> str:
    return f"/api/partners/integrations/{integration_id}/reviews/{review_id}/reply"


def test_partner_reply_replaced(client, app, publisher, integration):
    customer = installed_customer(client, integration)
    review_id = review(client, customer, integration, 2).json["id"]
    body = client.web.post_json(reply_url(integration, review_id), {"text": "Fixed in 1.1."},
                                headers=publisher.headers).json
    assert body["reply"]["text"] == "Fixed in 1.1."
    client.web.post_json(reply_url(integration, review_id), {"text": "Fixed in 1.2."},
                         headers=publisher.headers)
    listed = client.web.get(reviews_url(integration)).json["data"]
    assert listed[0]["reply"]["text"] == "Fixed in 1.2."
    assert count_rows(app, AuditEntry, AuditEntry.action == "review.replied") == 2


def test_reply_other_partner_not_found(client, app, publisher, integration):
    customer = installed_customer(client, integration)
    review_id = review(client, customer, integration).json["id"]
    stranger = make_publisher(client)
    response = client.web.post_json(reply_url(integration, review_id), {"text": "Hi"},
                                    headers=stranger.headers, status=404)
    assert_envelope(response, 404, "not_found")

    own = add_integration(app, stranger.partner_id, plugin_name=None)
    client.web.post_json(reply_url(own, review_id), {"text": "Hi"}, headers=stranger.headers,
                         status=404)
    client.web.post_json(reply_url(integration, "rev_999999"), {"text": "Hi"},
                         headers=publisher.headers, status=404)


def test_reply_needs_role(client, app, publisher, integration):
    customer = installed_customer(client, integration)
    review_id = review(client, customer, integration).json["id"]
    with Session(app.registry["db.engine"]) as session, session.begin():
        session.execute(sa.update(PartnerMember)
                        .where(PartnerMember.partner_id == publisher.partner_id)
                        .values(role="billing"))
    response = client.web.post_json(reply_url(integration, review_id), {"text": "Hi"},
                                    headers=publisher.headers, status=403)
    assert_envelope(response, 403, "missing_permission")


def test_reply_text_required(client, publisher, integration):
    customer = installed_customer(client, integration)
    review_id = review(client, customer, integration).json["id"]
    response = client.web.post_json(reply_url(integration, review_id), {"text": "  "},
                                    headers=publisher.headers, status=400)
    assert response.json["errors"][0]["name"] == "text"


# Moderation ---------------------------------------------------------------------------------


def test_admin_hides_review(client, app, integration):
    kept = installed_customer(client, integration)
    hidden = installed_customer(client, integration)
    review(client, kept, integration, 5)
    review_id = review(client, hidden, integration, 1).json["id"]
    assert rating_of(app, integration) == (Decimal("3.00"), 2)

    _admin, headers = admin_with_headers(client, "support")
    body = client.web.put_json(f"/api/admin/reviews/{review_id}",
                               {"status": "hidden", "reason": "Spam"}, headers=headers).json
    assert body["status"] == "hidden"
    assert body["moderation_reason"] == "Spam"
    assert rating_of(app, integration) == (Decimal("5.00"), 1)
    listed = client.web.get(reviews_url(integration)).json["data"]
    assert [item["id"] for item in listed] != [review_id]
    assert len(listed) == 1
    assert count_rows(app, AuditEntry, AuditEntry.action == "review.moderated") == 1

    client.web.put_json(f"/api/admin/reviews/{review_id}",
                        {"status": "visible", "reason": "Appeal accepted"}, headers=headers)
    assert rating_of(app, integration) == (Decimal("3.00"), 2)


def test_hidden_review_survives_delete(client, app, integration):
    customer = installed_customer(client, integration)
    review_id = review(client, customer, integration, 1, body="Buy my course").json["id"]
    _admin, headers = admin_with_headers(client, "support")
    client.web.put_json(f"/api/admin/reviews/{review_id}",
                        {"status": "hidden", "reason": "Spam"}, headers=headers)

    client.web.delete(review_url(integration), headers=customer.headers, status=204)
    again = review(client, customer, integration, 1, status=409)

    assert again.json["code"] == "review_exists"
    assert client.web.get(reviews_url(integration)).json["data"] == []
    assert rating_of(app, integration) == (None, 0)
    stored = run_in_transaction(app.registry["db.session_factory"], lambda session: session.get(
        IntegrationReview, int(review_id.removeprefix("rev_"))))
    assert stored.status == "hidden"
    assert stored.body is None


def test_moderation_checks(client, integration):
    customer = installed_customer(client, integration)
    review_id = review(client, customer, integration).json["id"]
    _admin, finance = admin_with_headers(client, "finance")
    response = client.web.put_json(f"/api/admin/reviews/{review_id}",
                                   {"status": "hidden", "reason": "Spam"}, headers=finance,
                                   status=403)
    assert_envelope(response, 403, "missing_permission")
    _admin, support = admin_with_headers(client, "support")
    response = client.web.put_json(f"/api/admin/reviews/{review_id}", {"status": "gone"},
                                   headers=support, status=400)
    assert {error["name"] for error in response.json["errors"]} == {"status", "reason"}
    client.web.put_json("/api/admin/reviews/rev_999999", {"status": "hidden", "reason": "x"},
                        headers=support, status=404)
    client.web.put_json(f"/api/admin/reviews/{review_id}", {"status": "hidden", "reason": "x"},
                        headers=customer.headers, status=401)


# Concurrency ----------------------------------------------------------------------------------


@pytest.mark.skipif(STACK != "production", reason="row locks are tested on PostgreSQL")
def test_concurrent_reviews_exact(app, integration):
    client = TestClient(app)
    customers = [installed_customer(client, integration, f"C{number}") for number in range(8)]
    ratings = [5, 4, 3, 5, 2, 5, 1, 4]
    barrier = threading.Barrier(len(customers))
    failures = []

    def post(customer, rating):
        own_client = TestClient(app)
        barrier.wait()
        try:
            review(own_client, customer, integration, rating)
        except Exception as exc:  # reported below with the failing customer
            failures.append((customer.user_id, exc))

    pairs = zip(customers, ratings, strict=True)
    threads = [threading.Thread(target=post, args=pair) for pair in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    # 29 / 8 = 3.625, which rounds half up to 3.63.
    assert rating_of(app, integration) == (Decimal("3.63"), 8)
