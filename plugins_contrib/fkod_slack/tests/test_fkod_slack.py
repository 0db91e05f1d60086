"""The Slack plugin's hooks against a small Slack stand-in on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fkod_slack
import pytest
from fkod_slack.messages import EVENT_TYPES, build_message

from fkod.core.integrations import IntegrationError, IntegrationManifest
from fkod.core.settings import ConfigurationError


class _SlackStandIn(BaseHTTPRequestHandler):
    """Accept a post as Slack does: 200 "ok" for JSON with text and blocks, 400 otherwise."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append(body)
        try:
            message = json.loads(body)
            valid = (isinstance(message.get("text"), str)
                     and isinstance(message.get("blocks"), list))
        except ValueError:
            valid = False
        self.send_response(200 if valid else 400)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok" if valid else b"no")

    def log_message(self, *args):
        pass


@pytest.fixture
def slack():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlackStandIn)
    server.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fkod_slack.configure({"fkod_slack.allowed_url_prefixes":
                          f"http://127.0.0.1:{server.server_port}/",
                          "fkod.webhooks.allow_loopback": True})
    yield server
    server.shutdown()
    server.server_close()
    fkod_slack.configure({})


def context(config, install_id="inst_1"):
    from fkod.core.integrations import InstallContext

    return InstallContext(install_id=install_id, integration_slug=fkod_slack.SLUG,
                          user_id="user_1", config=config, granted_scopes=())


def event(event_type="user.created", event_id="evt_slack_package_1"):
    return {"id": event_id, "type": event_type, "created": 1780000000, "livemode": True,
            "data": {"id": "user_5", "email": "ada@example.com", "name": "Ada"}}


def test_manifest_valid():
    manifest, = fkod_slack.fkod_register_integrations()
    assert isinstance(manifest, IntegrationManifest)
    assert manifest.publisher == "fkod-labs"
    assert manifest.config_schema["properties"]["events"]["items"]["enum"] == list(EVENT_TYPES)


def test_event_posted(slack):
    url = f"http://127.0.0.1:{slack.server_port}/services/T0/B0/x"
    install = context({"webhook_url": url, "events": ["user.created"]})
    fkod_slack.fkod_integration_installed(install)
    fkod_slack.fkod_integration_event(install, event())
    message = json.loads(slack.bodies[0])
    assert message["blocks"][0] == {"type": "header",
                                    "text": {"type": "plain_text", "text": "New user"}}
    # The customer's users' email addresses stay out of Slack.
    assert "ada@example.com" not in slack.bodies[0].decode()


def test_unchosen_event_not_posted(slack):
    url = f"http://127.0.0.1:{slack.server_port}/services/T0/B0/x"
    fkod_slack.fkod_integration_event(context({"webhook_url": url, "events": ["user.created"]}),
                                      event("mentor.matched"))
    assert slack.bodies == []


def test_loopback_refused_without_setting():
    fkod_slack.configure({"fkod.webhooks.allow_loopback": True})
    with pytest.raises(IntegrationError, match=r"must start with https://hooks\.slack\.com"):
        fkod_slack.fkod_integration_installed(context({"webhook_url": "http://127.0.0.1/x/"}))


def test_invalid_prefix_setting():
    with pytest.raises(ConfigurationError, match="allowed_url_prefixes"):
        fkod_slack.parse_settings({"fkod_slack.allowed_url_prefixes": "https://hooks.slack.com"})


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_type_formats(event_type):
    message = build_message({"id": "evt_9", "type": event_type, "livemode": False, "data": {}})
    assert message["text"].startswith("[test] ")
    assert [block["type"] for block in message["blocks"]] == ["header", "section", "context"]
