"""Portal webhook pages: create, test event, delivery log and replay, secret reveal and rotation.
"""

from __future__ import annotations

import re
import time

import sqlalchemy as sa

from fkod.core.audit import AuditEntry
from fkod.core.db import run_in_transaction
from fkod.core.testing import TestClient, auth_header
from fkod.core.webhooks.models import Webhook
from tests.functional.portal_pages import (
    add_member,
    csrf_token,
    field_errors,
    input_value,
    log_in,
    post_form,
    signed_in_owner,
)
from tests.receivers import Reply

WEBHOOK_SECRET = re.compile(r'id="webhook-secret" value="(whsec_[A-Za-z0-9+/=]+)"')
API_KEY_SECRET = re.compile(r'id="api-key-secret" value="(sk_test_[A-Za-z0-9_-]+)"')


def in_db(app, work):
    return run_in_transaction(app.registry["db.session_factory"], work)


def stored_webhooks(app) -> list[Webhook]:
    return in_db(app, lambda session: list(session.scalars(sa.select(Webhook)
                                                           .order_by(Webhook.id))))


def add_webhook(web, url: str, event_types=("user.created",), mode: str = "test", status=200):
    fields = [("url", url), ("mode", mode)] + [("event_types", name) for name in event_types]
    return post_form(web, "/portal/webhooks", fields, form_page="/portal/webhooks/new",
                     status=status)


def test_webhook_pages_need_login(client):
    for path in ("/portal/webhooks", "/portal/webhooks/new", "/portal/webhooks/whk_1",
                 "/portal/webhooks/whk_1/deliveries/evt_1"):
        assert "/portal/login?next=" in client.web.get(path, status=303).location


def test_create_webhook_and_send_test(client, app, make_receiver):
    signed_in_owner(client)
    receiver = make_receiver(Reply(204))
    assert "No webhook endpoints yet" in client.web.get("/portal/webhooks").text

    created = add_webhook(client.web, receiver.url)
    secret = WEBHOOK_SECRET.search(created.text).group(1)
    assert created.headers["Cache-Control"] == "no-store"
    [webhook] = stored_webhooks(app)
    assert webhook.event_types == ["user.created"]
    assert receiver.url in client.web.get("/portal/webhooks").text

    detail_path = f"/portal/webhooks/whk_{webhook.id}"
    detail = client.web.get(detail_path)
    assert secret not in detail.text
    sent = post_form(client.web, f"{detail_path}/test", {"event_type": "user.created"},
                     form_page=detail_path, status=303).follow()
    [request] = receiver.wait_for(1, timeout=10)
    assert request.header("webhook-signature") is not None
    message = re.search(r"Test event user.created \(evt_\w+\) sent; the receiver answered 204 "
                        r"in \d+ ms\.", sent.text)
    assert message is not None, sent.text

    not_covered = post_form(client.web, f"{detail_path}/test", {"event_type": "course.created"},
                            form_page=detail_path, status=303).follow()
    assert "The test event was not sent: Event type &#39;course.created&#39; is not covered by " \
        "the endpoint" in not_covered.text


def test_create_webhook_field_errors(client, app):
    signed_in_owner(client)
    page = add_webhook(client.web, "ftp://example.test/hook", status=400)
    assert field_errors(page, "url")
    assert input_value(page, "url") == "ftp://example.test/hook"
    assert 'value="user.created" checked' in page.text

    no_events = add_webhook(client.web, "http://127.0.0.1:9/x", event_types=(), status=400)
    assert field_errors(no_events, "event_types") == ["Choose at least one event type."]
    assert input_value(no_events, "url") == "http://127.0.0.1:9/x"

    unknown = add_webhook(client.web, "http://127.0.0.1:9/x", event_types=("nope.nothing",),
                          status=400)
    assert field_errors(unknown, "event_types")
    assert stored_webhooks(app) == []


def test_delivery_log_and_replay(client, app, make_receiver):
    signed_in_owner(client)
    receiver = make_receiver(Reply(500), Reply(200))
    add_webhook(client.web, receiver.url)
    [webhook] = stored_webhooks(app)
    key_page = post_form(client.web, "/portal/keys", [("key_name", "k"), ("mode", "test"),
                                                      ("scopes", "users:write")],
                         form_page="/portal/keys/new", status=200)
    key = API_KEY_SECRET.search(key_page.text).group(1)

    client.web.post_json("/api/v1/users", {"email": "learner@example.test", "name": "L"},
                         headers=auth_header(key), status=201)
    receiver.wait_for(1, timeout=10)
    detail_path = f"/portal/webhooks/whk_{webhook.id}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        detail = client.web.get(detail_path)
        if "<td>500</td>" in detail.text:
            break
        time.sleep(0.1)
    event_id = re.search(r'/deliveries/(evt_\w+)"', detail.text).group(1)
    assert "<td>500</td>" in detail.text

    delivery_path = f"{detail_path}/deliveries/{event_id}"
    delivery = client.web.get(delivery_path)
    assert delivery.text.count('<tr class="attempt">') == 1
    replayed = post_form(client.web, f"{delivery_path}/replay", {}, form_page=delivery_path,
                         status=303).follow()
    assert f"Delivery {event_id} is queued again." in replayed.text
    receiver.wait_for(2, timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        delivery = client.web.get(delivery_path)
        if delivery.text.count('<tr class="attempt">') == 2:
            break
        time.sleep(0.1)
    assert delivery.text.count('<tr class="attempt">') == 2
    assert "succeeded" in delivery.text

    client.web.get(f"{detail_path}/deliveries/evt_missing", status=404)
    client.web.get(f"{detail_path}/deliveries/not-an-id", status=404)


def test_reveal_and_rotate_secret(client, app):
    signed_in_owner(client)
    created = add_webhook(client.web, "http://127.0.0.1:9/hook")
    first = WEBHOOK_SECRET.search(created.text).group(1)
    [webhook] = stored_webhooks(app)
    detail_path = f"/portal/webhooks/whk_{webhook.id}"

    revealed = post_form(client.web, f"{detail_path}/secret", {}, form_page=detail_path,
                         status=200)
    assert WEBHOOK_SECRET.search(revealed.text).group(1) == first
    assert revealed.headers["Cache-Control"] == "no-store"
    actions = in_db(app, lambda session: list(session.scalars(sa.select(AuditEntry.action))))
    assert "webhook.secret_revealed" in actions

    rotated = post_form(client.web, f"{detail_path}/rotate-secret", {"overlap_seconds": "3600"},
                        form_page=detail_path, status=200)
    second = WEBHOOK_SECRET.search(rotated.text).group(1)
    assert second != first
    assert "Deliveries also carry a signature with the old secret until" in rotated.text
    again = post_form(client.web, f"{detail_path}/secret", {}, form_page=detail_path, status=200)
    assert first in again.text
    assert second in again.text

    invalid = post_form(client.web, f"{detail_path}/rotate-secret", {"overlap_seconds": "-5"},
                        form_page=detail_path, status=303).follow()
    assert "The secret was not rotated" in invalid.text


def test_webhook_forms_refuse_bad_csrf(client, app):
    signed_in_owner(client)
    add_webhook(client.web, "http://127.0.0.1:9/hook")
    [webhook] = stored_webhooks(app)
    base = f"/portal/webhooks/whk_{webhook.id}"
    for path in ("/portal/webhooks", f"{base}/test", f"{base}/secret", f"{base}/rotate-secret",
                 f"{base}/deliveries/evt_1/replay"):
        client.web.post(path, {"url": "http://127.0.0.1:9/x", "event_types": "user.created"},
                        status=403)
        client.web.post(path, {"csrf_token": "forged"}, status=403)
    assert len(stored_webhooks(app)) == 1
    assert stored_webhooks(app)[0].secret_key == webhook.secret_key


def test_billing_member_cannot_reveal_or_write(client, app):
    owner = signed_in_owner(client)
    add_webhook(client.web, "http://127.0.0.1:9/hook")
    [webhook] = stored_webhooks(app)
    user = client.web.post_json("/api/auth/register", {
        "email": "billing@acme.example", "password": "correct horse battery staple"}).json
    add_member(app, owner["partner"]["id"], user["id"], "billing")

    other = TestClient(app)
    log_in(other.web, "billing@acme.example")
    detail = other.web.get(f"/portal/webhooks/whk_{webhook.id}")
    assert "Reveal secret" not in detail.text
    assert "Send test event" not in detail.text
    token = csrf_token(detail)
    denied = other.web.post(f"/portal/webhooks/whk_{webhook.id}/secret", {"csrf_token": token},
                            status=403)
    assert "does not grant the permission webhooks:reveal_secret" in denied.text
    other.web.get("/portal/webhooks/new", status=403)
