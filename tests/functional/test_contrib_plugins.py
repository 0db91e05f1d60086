"""The packages of plugins_contrib/, installed in the environment and found through entry points.

The integration hooks are called directly with an InstallContext, as the
marketplace calls them, against receivers on 127.0.0.1.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import time
import urllib.parse

import fkod_csv_export
import fkod_slack
import pytest
from fkod_stripe.provider import StripeProvider

from fkod.core.billing.providers import (
    CustomerDetails,
    PaymentProvider,
    PaymentProviderError,
    WebhookSignatureError,
    payment_providers,
)
from fkod.core.db import run_in_transaction
from fkod.core.integrations import InstallContext, IntegrationError
from fkod.core.testing import TestClient, auth_header
from tests.receivers import Reply

pytestmark = pytest.mark.shared_app

CONTRIB_PLUGINS = ("slack", "stripe", "csv_export", "paypal")
WEBHOOK_SECRET = "whsec_test_contrib_secret"


def install_context(slug: str, config: dict, *, install_id: str = "inst_1",
                    user_id: str = "user_1") -> InstallContext:
    return InstallContext(install_id=install_id, integration_slug=slug, user_id=user_id,
                          config=config, granted_scopes=())


def completion_event(event_id: str = "evt_1", title: str = "Design Thinking 101") -> dict:
    return {"id": event_id, "type": "course.completed", "created": 1780000000,
            "livemode": False,
            "data": {"course": {"id": "course_9", "title": title, "level": "beginner"},
                     "user_id": "user_1", "completed_at": "2026-06-05T10:00:00Z"}}


def set_enabled(app, name: str, enabled: bool) -> None:
    host = app.registry["plugins"]
    run_in_transaction(app.registry["db.session_factory"],
                       lambda session: host.set_enabled(session, name, enabled))


# Discovery -------------------------------------------------------------------


def test_contrib_plugins_discovered(app):
    plugins = app.registry["plugins"].plugins
    for name in CONTRIB_PLUGINS:
        assert name in plugins, f"{name} is not installed; run make install"
        assert plugins[name].status == "loaded", plugins[name].error
        assert plugins[name].version == "1.0.0"


def test_contrib_integration_manifests(app):
    host = app.registry["plugins"]
    manifests = dict(host.call_each("fkod_register_integrations"))
    slack, = manifests["slack"]
    export, = manifests["csv_export"]
    assert slack.publisher == "fkod-labs"
    assert slack.category == "communication"
    assert slack.config_schema["properties"]["webhook_url"]["writeOnly"] is True
    for event_type in (*slack.event_types, *export.event_types):
        assert host.event_catalog.get(event_type) is not None, event_type


# Stripe ----------------------------------------------------------------------


def test_stripe_provider_listed(app_factory):
    app = app_factory(**{"fkod_stripe.webhook_secret": WEBHOOK_SECRET})
    providers = payment_providers(app.registry)
    listed = [(item.provider.name, item.plugin) for item in providers.list()]
    assert ("stripe", "stripe") in listed
    assert isinstance(providers.get("stripe"), StripeProvider)
    assert isinstance(providers.get("stripe"), PaymentProvider)
    assert providers.rejected == []


def test_stripe_provider_hidden_when_disabled(app):
    set_enabled(app, "stripe", False)
    providers = payment_providers(app.registry)
    assert providers.get("stripe") is None
    assert "stripe" not in [item.provider.name for item in providers.list()]
    set_enabled(app, "stripe", True)
    assert providers.get("stripe") is not None


def sign(body: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


STRIPE_EVENT = json.dumps({
    "id": "evt_1Stripe", "object": "event", "type": "invoice.paid", "created": 1780000000,
    "livemode": False, "api_version": "2024-06-20",
    "data": {"object": {"id": "in_1", "object": "invoice", "amount_paid": 1250}},
}).encode()


def test_stripe_webhook_verified(app_factory):
    app = app_factory(**{"fkod_stripe.webhook_secret": WEBHOOK_SECRET})
    provider = payment_providers(app.registry).get("stripe")
    event = provider.verify_webhook(STRIPE_EVENT, {"Stripe-Signature": sign(STRIPE_EVENT)})
    assert event.id == "evt_1Stripe"
    assert event.type == "invoice.paid"
    assert event.data["amount_paid"] == 1250
    assert event.livemode is False


@pytest.mark.parametrize(("body", "header"), [
    (STRIPE_EVENT.replace(b"1250", b"9999"), sign(STRIPE_EVENT)),
    (STRIPE_EVENT, sign(STRIPE_EVENT, secret="whsec_other")),
    (STRIPE_EVENT, sign(STRIPE_EVENT, timestamp=int(time.time()) - 301)),
    (STRIPE_EVENT, "t=1,v1=00"),
    (b"not json", sign(b"not json")),
    (b'{"id": "evt_2"}', sign(b'{"id": "evt_2"}')),
], ids=["tampered", "wrong-secret", "too-old", "garbage", "not-json", "not-an-event"])
def test_stripe_webhook_rejected(app_factory, body, header):
    app = app_factory(**{"fkod_stripe.webhook_secret": WEBHOOK_SECRET})
    provider = payment_providers(app.registry).get("stripe")
    with pytest.raises(WebhookSignatureError):
        provider.verify_webhook(body, {"stripe-signature": header})


@pytest.mark.shared_app(False)
def test_stripe_webhook_without_header_or_secret(app):
    provider = payment_providers(app.registry).get("stripe")
    with pytest.raises(WebhookSignatureError, match="secret"):
        provider.verify_webhook(STRIPE_EVENT, {"Stripe-Signature": sign(STRIPE_EVENT)})
    configured = StripeProvider(api_key="", webhook_secret=WEBHOOK_SECRET)
    with pytest.raises(WebhookSignatureError, match="header is missing"):
        configured.verify_webhook(STRIPE_EVENT, {})


def test_stripe_customer_created_on_fake_server(make_receiver):
    customer = {"id": "cus_Test1", "object": "customer", "livemode": False,
                "email": "owner@acme.example"}
    fake = make_receiver(Reply(200, json.dumps(customer).encode(),
                               headers=(("Request-Id", "req_1"),)))
    provider = StripeProvider(api_key="sk_test_fake", webhook_secret="",
                              api_base=f"http://127.0.0.1:{fake.port}")
    created = provider.create_customer(CustomerDetails(
        reference="partner_42", email="owner@acme.example", name="Acme Learning"))
    assert created.provider_customer_id == "cus_Test1"
    request, = fake.wait_for(1, timeout=10)
    assert request.method == "POST"
    assert request.path == "/v1/customers"
    assert request.header("Authorization") == "Bearer sk_test_fake"
    assert request.header("Idempotency-Key") == "fkod-customer-partner_42"
    form = urllib.parse.parse_qs(request.body.decode())
    assert form["metadata[fkod_reference]"] == ["partner_42"]
    assert form["email"] == ["owner@acme.example"]


def test_stripe_refuses_live_record_with_test_key():
    provider = StripeProvider(api_key="sk_test_fake", webhook_secret="")
    with pytest.raises(PaymentProviderError, match="live-mode"):
        provider.create_customer(CustomerDetails(reference="partner_1", email="a@b.example",
                                                 name="A", livemode=True))


# Slack -----------------------------------------------------------------------


@pytest.fixture
def slack_receiver(make_receiver):
    return make_receiver(200)


@pytest.fixture
def slack_app(app_factory, slack_receiver):
    return app_factory(**{"fkod_slack.allowed_url_prefixes":
                          f"http://127.0.0.1:{slack_receiver.port}/"})


def check_slack_message(body: bytes) -> dict:
    """Check the incoming-webhook format: text plus header, section and context blocks."""
    message = json.loads(body)
    assert isinstance(message["text"], str) and message["text"]
    kinds = [block["type"] for block in message["blocks"]]
    assert kinds == ["header", "section", "context"]
    header, section, context = message["blocks"]
    assert header["text"]["type"] == "plain_text"
    assert 0 < len(header["text"]["text"]) <= 150
    assert section["text"]["type"] == "mrkdwn"
    assert 0 < len(section["text"]["text"]) <= 3000
    assert context["elements"][0]["type"] == "mrkdwn"
    return message


def test_slack_posts_chosen_event(slack_app, slack_receiver):
    install = install_context("slack-notifications", {"webhook_url": slack_receiver.url,
                                                      "events": ["course.completed"]})
    fkod_slack.fkod_integration_installed(install)
    fkod_slack.fkod_integration_event(install, completion_event(title="Cats & <Dogs>"))

    request, = slack_receiver.wait_for(1, timeout=10)
    assert request.method == "POST"
    assert request.header("Content-Type") == "application/json"
    message = check_slack_message(request.body)
    assert "Cats &amp; &lt;Dogs&gt;" in message["blocks"][1]["text"]["text"]
    assert message["blocks"][0]["text"]["text"] == "[test] Course completed"


def test_slack_skips_unchosen_event(slack_app, slack_receiver):
    install = install_context("slack-notifications", {"webhook_url": slack_receiver.url,
                                                      "events": ["user.created"]})
    fkod_slack.fkod_integration_event(install, completion_event(event_id="evt_unchosen"))
    time.sleep(0.2)
    assert len(slack_receiver) == 0


def test_slack_redelivered_event_posted_once(slack_app, slack_receiver):
    install = install_context("slack-notifications", {"webhook_url": slack_receiver.url},
                              install_id="inst_77")
    event = completion_event(event_id="evt_twice")
    fkod_slack.fkod_integration_event(install, event)
    fkod_slack.fkod_integration_event(install, event)
    slack_receiver.wait_for(1, timeout=10)
    time.sleep(0.2)
    assert len(slack_receiver) == 1


def test_slack_error_status_raises(app_factory, make_receiver):
    failing = make_receiver(Reply(500, b"internal_error"))
    app_factory(**{"fkod_slack.allowed_url_prefixes": f"http://127.0.0.1:{failing.port}/"})
    install = install_context("slack-notifications", {"webhook_url": failing.url},
                              install_id="inst_500")
    with pytest.raises(fkod_slack.SlackDeliveryFailed, match="500"):
        fkod_slack.fkod_integration_event(install, completion_event(event_id="evt_500"))
    # A failed post is not remembered, so the platform's retry posts again.
    with pytest.raises(fkod_slack.SlackDeliveryFailed):
        fkod_slack.fkod_integration_event(install, completion_event(event_id="evt_500"))
    assert len(failing.wait_for(2, timeout=10)) == 2


@pytest.mark.parametrize("url", [
    "https://evil.example/services/T000/B000/XXX",
    "http://hooks.slack.com/services/T000/B000/XXX",
    "https://hooks.slack.com.evil.example/services/T000/B000/XXX",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.5/services/",
    "http://127.0.0.1:9/services/",
    "file:///etc/passwd",
    "",
])
def test_slack_refuses_url(slack_app, url):
    install = install_context("slack-notifications", {"webhook_url": url})
    with pytest.raises(IntegrationError):
        fkod_slack.fkod_integration_installed(install)


@pytest.mark.shared_app(False)
def test_slack_default_prefix_refuses_loopback(app, slack_receiver):
    install = install_context("slack-notifications", {"webhook_url": slack_receiver.url})
    with pytest.raises(IntegrationError, match=r"hooks\.slack\.com"):
        fkod_slack.fkod_integration_installed(install)
    accepted = install_context("slack-notifications",
                               {"webhook_url": "https://hooks.slack.com/services/T0/B0/abc"})
    fkod_slack.fkod_integration_installed(accepted)


# CSV export ------------------------------------------------------------------


@pytest.mark.shared_app(False)
def test_csv_export_download(app, tmp_path):
    client = TestClient(app)
    registered = client.register_partner()
    user_id = registered["user"]["id"]
    token = client.login(registered["user"]["email"])
    install = install_context("csv-export", {"delimiter": "comma"}, install_id="inst_5",
                              user_id=user_id)

    fkod_csv_export.fkod_integration_installed(install)
    fkod_csv_export.fkod_integration_event(install, completion_event("evt_a", "=HYPERLINK(1)"))
    fkod_csv_export.fkod_integration_event(install, completion_event("evt_a", "=HYPERLINK(1)"))
    fkod_csv_export.fkod_integration_event(install, completion_event("evt_b", "Second"))
    assert (tmp_path / "csv-exports" / "inst_5" / "completions.csv").exists()

    response = client.web.get("/api/plugins/csv-export/installs/inst_5/completions.csv",
                              headers=auth_header(token), status=200)
    assert response.content_type == "text/csv"
    assert "inst_5" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0][0] == "event_id"
    assert [row[0] for row in rows[1:]] == ["evt_a", "evt_b"]
    assert rows[1][4] == "'=HYPERLINK(1)"

    fkod_csv_export.fkod_integration_uninstalled(install)
    client.web.get("/api/plugins/csv-export/installs/inst_5/completions.csv",
                   headers=auth_header(token), status=404)


def test_csv_export_other_user_gets_404(app):
    client = TestClient(app)
    owner = client.register_partner()
    other = client.register_partner()
    install = install_context("csv-export", {}, install_id="inst_6",
                              user_id=owner["user"]["id"])
    fkod_csv_export.fkod_integration_installed(install)

    other_token = client.login(other["user"]["email"])
    response = client.web.get("/api/plugins/csv-export/installs/inst_6/completions.csv",
                              headers=auth_header(other_token), status=404)
    assert response.json["code"] == "not_found"
    client.web.get("/api/plugins/csv-export/installs/inst_6/completions.csv", status=401)
    client.web.get("/api/plugins/csv-export/installs/..%2Fetc/completions.csv",
                   headers=auth_header(other_token), status=404)


def test_csv_export_route_gated(app):
    client = TestClient(app)
    owner = client.register_partner()
    token = client.login(owner["user"]["email"])
    install = install_context("csv-export", {}, install_id="inst_8",
                              user_id=owner["user"]["id"])
    fkod_csv_export.fkod_integration_installed(install)
    set_enabled(app, "csv_export", False)
    client.web.get("/api/plugins/csv-export/installs/inst_8/completions.csv",
                   headers=auth_header(token), status=404)


def test_csv_export_refuses_bad_delimiter(app):
    with pytest.raises(IntegrationError, match="separator"):
        fkod_csv_export.fkod_integration_installed(
            install_context("csv-export", {"delimiter": "pipe"}, install_id="inst_9"))
