"""The portal's webhook signature debugger page."""

from __future__ import annotations

import json
import re
import time

import pytest

from fkod.core.webhooks.signing import sign_delivery
from tests.functional.portal_pages import field_errors, post_form, signed_in_owner
from tests.functional.test_portal_webhooks import WEBHOOK_SECRET, add_webhook

pytestmark = pytest.mark.shared_app

BODY = json.dumps({"id": "evt_debug1", "type": "user.created", "created": 1764900000,
                   "livemode": False, "data": {"id": "user_1"}})


def debugger_path(web) -> str:
    listed = web.get("/portal/webhooks").text
    webhook_id = re.search(r'href="/portal/webhooks/(whk_\d+)"', listed).group(1)
    return f"/portal/webhooks/{webhook_id}/debugger"


def test_debugger_explains_valid_and_changed_body(client, make_receiver):
    signed_in_owner(client)
    created = add_webhook(client.web, make_receiver().url)
    secret = WEBHOOK_SECRET.search(created.text).group(1)
    path = debugger_path(client.web)
    headers = sign_delivery([secret], message_id="evt_debug1", timestamp=int(time.time()),
                            body=BODY.encode())

    assert "Check the signature" in client.web.get(path).text
    valid = post_form(client.web, path, {"payload": BODY,
                                         "signature": headers["X-FKOD-Signature"]}, status=200)
    assert "<strong>Valid</strong>" in valid.text
    assert "Not valid" not in valid.text

    standard = post_form(client.web, path, {
        "payload": BODY, "signature": headers["webhook-signature"],
        "timestamp": headers["webhook-timestamp"], "webhook_id": headers["webhook-id"]},
        status=200)
    assert "<strong>Valid</strong>" in standard.text

    changed = post_form(client.web, path, {"payload": BODY.replace("user_1", "user_2"),
                                           "signature": headers["X-FKOD-Signature"]},
                        status=200)
    assert "Not valid" in changed.text
    assert "user_2" in changed.text  # the typed payload is kept


def test_debugger_field_errors_keep_values(client, make_receiver):
    signed_in_owner(client)
    add_webhook(client.web, make_receiver().url)
    path = debugger_path(client.web)

    missing = post_form(client.web, path, {"payload": "<script>x</script>"}, status=400)
    assert field_errors(missing, "signature")
    assert "&lt;script&gt;x&lt;/script&gt;" in missing.text
    assert "<script>x</script>" not in missing.text

    malformed = post_form(client.web, path, {"payload": BODY, "signature": "t=abc,v1=zz"},
                          status=400)
    assert field_errors(malformed, "signature") or field_errors(malformed, "timestamp")


def test_debugger_needs_login_csrf_and_own_endpoint(client, app, make_receiver):
    signed_in_owner(client)
    add_webhook(client.web, make_receiver().url)
    path = debugger_path(client.web)
    client.web.post(path, {"payload": BODY, "signature": "t=1,v1=00"}, status=403)

    other = type(client)(app)
    signed_in_owner(other, company_name="Other Learning")
    other.web.get(path, status=404)

    signed_out = type(client)(app)
    assert "/portal/login?next=" in signed_out.web.get(path, status=303).location
