"""The check of the JSON error envelope that every functional test uses."""

from __future__ import annotations

import re

ERROR_KEYS = {"status", "code", "message", "errors", "request_id"}
ERROR_LOCATIONS = {"body", "querystring", "header", "path"}
SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def assert_envelope(response, status: int, code: str | None = None) -> dict:
    """Check the JSON error envelope and return its body."""
    assert response.status_int == status, response.body[:500]
    assert response.content_type == "application/json"
    body = response.json
    assert set(body) == ERROR_KEYS
    assert body["status"] == status
    assert SNAKE_CASE.match(body["code"]), body["code"]
    if code is not None:
        assert body["code"] == code
    assert isinstance(body["message"], str)
    assert body["message"].strip()
    assert isinstance(body["errors"], list)
    for error in body["errors"]:
        assert set(error) == {"location", "name", "description"}
        assert error["location"] in ERROR_LOCATIONS
        assert isinstance(error["name"], str)
        assert isinstance(error["description"], str)
    assert body["request_id"] == response.headers["X-Request-Id"]
    return body
