"""The one log line each request writes."""

from __future__ import annotations

import logging

import pytest

pytestmark = pytest.mark.shared_app


def request_lines(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "fkod.core.requestlog"]


def test_control_characters_escaped(client, caplog):
    caplog.set_level(logging.INFO, logger="fkod.core.requestlog")

    client.web.get("/api/x%0a2026-12-05 00:40:00 INFO forged%00line", status=404)

    [record] = request_lines(caplog)
    assert "\n" not in record.getMessage()
    assert "\x00" not in record.getMessage()
    assert record.path == "/api/x\\x0a2026-12-05 00:40:00 INFO forged\\x00line"


def test_invitation_token_not_logged(client, caplog):
    caplog.set_level(logging.INFO, logger="fkod.core.requestlog")

    client.web.post_json("/api/partners/invitations/secret-token-value/accept",
                         {"name": "Ada", "password": "a long passphrase 1"}, expect_errors=True)

    [record] = request_lines(caplog)
    assert "secret-token-value" not in record.getMessage()
    assert record.path == "/api/partners/invitations/{token}/accept"
