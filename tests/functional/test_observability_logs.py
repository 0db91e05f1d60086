"""Structured request logs: JSON lines in production, the request fields, no secrets."""

from __future__ import annotations

import io
import json
import logging

import pytest

from fkod.core.requestlog import (
    REDACTED,
    JsonFormatter,
    ReadableFormatter,
    apply_log_format,
    log_format,
    redact_text,
)
from fkod.core.testing import TEST_PASSWORD, TestClient, auth_header

pytestmark = pytest.mark.shared_app

REQUEST_LOGGER = "fkod.core.requestlog"
REQUEST_FIELDS = ("request_id", "partner_id", "key_prefix", "route", "route_name", "method",
                  "status", "duration_ms")


def request_lines(records) -> list[logging.LogRecord]:
    return [record for record in records if record.name == REQUEST_LOGGER
            and hasattr(record, "duration_ms")]


def record_text(record: logging.LogRecord) -> str:
    """Everything a record carries: its message, its arguments and every extra field."""
    parts = [record.getMessage(), repr(record.args)]
    parts.extend(repr(value) for value in vars(record).values())
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


def test_format_follows_the_environment_and_the_setting():
    assert log_format({"fkod.environment": "production"}) == "json"
    assert log_format({"fkod.environment": "development"}) == "text"
    assert log_format({"fkod.environment": "production", "fkod.logging.format": "text"}) == "text"
    assert log_format({"fkod.environment": "test", "fkod.logging.format": "json"}) == "json"


def test_json_request_line_has_the_request_fields(app_factory):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ReadableFormatter("%(message)s"))
    root = logging.getLogger()
    fkod_logger = logging.getLogger("fkod")
    old_level = fkod_logger.level
    root.addHandler(handler)
    fkod_logger.setLevel(logging.INFO)
    try:
        app = app_factory(**{"fkod.logging.format": "json"})
        assert isinstance(handler.formatter, JsonFormatter)
        client = TestClient(app)
        partner, token = client.partner_with_token()
        key = client.create_key(token, scopes=("mentors:read",))
        response = client.web.get("/api/v1/mentors", headers={
            **auth_header(key["key"]), "X-Request-Id": "req-test-observability-1"})
    finally:
        root.removeHandler(handler)
        fkod_logger.setLevel(old_level)

    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    assert lines, "no log output"
    for line in lines:
        assert {"time", "level", "logger", "message", "request_id"} <= set(line)
    [entry] = [line for line in lines if line.get("request_id") == "req-test-observability-1"
               and "duration_ms" in line]
    assert set(REQUEST_FIELDS) <= set(entry)
    assert entry["method"] == "GET"
    assert entry["status"] == 200 == response.status_code
    assert entry["route"] == "/api/v1/mentors"
    assert entry["route_name"]
    assert f"partner_{entry['partner_id']}" == partner["id"]
    assert entry["key_prefix"] == key["key"][:len(entry["key_prefix"])]
    assert len(entry["key_prefix"]) < len(key["key"])
    assert isinstance(entry["duration_ms"], int) and entry["duration_ms"] >= 0
    assert entry["level"] == "INFO"
    assert entry["logger"] == REQUEST_LOGGER


def test_text_format_in_development(app_factory):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        app_factory(**{"fkod.logging.format": "text"})
        assert isinstance(handler.formatter, ReadableFormatter)
    finally:
        root.removeHandler(handler)


@pytest.fixture
def info_logs(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


def test_no_secret_in_any_log_record(client, make_receiver, info_logs):
    registered = client.register_partner()
    email = registered["user"]["email"]
    token = client.login(email)  # the password travels in the body
    key = client.create_key(token, scopes=("mentors:read",))
    receiver = make_receiver()
    webhook = client.web.post_json("/api/partners/webhooks", {
        "url": receiver.url, "event_types": ["partner.updated"]},
        headers=auth_header(token), status=201).json
    secrets_sent = [TEST_PASSWORD, token, key["key"], webhook["secret"],
                    "session-cookie-value-0123456789"]

    cookie = {"Cookie": "fkod_session=session-cookie-value-0123456789"}
    client.web.get("/api/v1/mentors", headers={**auth_header(key["key"]), **cookie})
    client.web.get("/api/partners/me", headers={**auth_header(token), **cookie})
    client.web.put_json("/api/partners/me", {"description": "Logs test"},
                        headers=auth_header(token))
    # A wrong password and a revealed webhook secret are logged as failures only.
    client.web.post_json("/api/auth/login", {"email": email, "password": TEST_PASSWORD + "x"},
                         status=401)
    client.web.get("/api/v1/mentors", headers=auth_header(key["key"] + "x"), status=401)
    client.drain_tasks()

    records = info_logs.records
    assert request_lines(records), "the request log lines were not captured"
    formatter = JsonFormatter()
    for record in records:
        text = record_text(record) + formatter.format(record)
        for secret in secrets_sent:
            assert secret not in text, f"a secret is in the log record {record.getMessage()!r}"
        assert "Bearer " not in text


def test_redaction_of_secret_fields_and_values():
    record = logging.makeLogRecord({
        "name": "fkod.test", "levelname": "INFO", "levelno": logging.INFO,
        "msg": "calling with sk_test_abcdefghijklmnopqrstuvwxyz0123456789 and Bearer abc.def.ghi",
        "args": (), "authorization": "Bearer x", "webhook_secret": "whsec_zzz",
        "password": "hunter2", "key_prefix": "sk_test_abcd", "api_key": "sk_live_x",
        "headers": {"Cookie": "a=b", "Accept": "text/plain"},
    })
    entry = json.loads(JsonFormatter().format(record))
    assert entry["authorization"] == entry["webhook_secret"] == entry["password"] == REDACTED
    assert entry["api_key"] == REDACTED
    assert entry["key_prefix"] == "sk_test_abcd"
    assert entry["headers"] == {"Cookie": REDACTED, "Accept": "text/plain"}
    assert "abcdefghijklmnop" not in entry["message"]
    assert "abc.def.ghi" not in entry["message"]
    assert redact_text("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl") == REDACTED


def test_apply_log_format_leaves_foreign_handlers_alone():
    handler = logging.StreamHandler(io.StringIO())
    foreign = logging.Formatter("%(message)s")
    handler.setFormatter(foreign)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        apply_log_format({"fkod.environment": "production"})
        assert handler.formatter is foreign
    finally:
        root.removeHandler(handler)
