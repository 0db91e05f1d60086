"""Fixtures that connect the SDK tests to a running F-KOD server.

The server and its credentials come from the environment, as set by the
platform's ``tests/sdk`` driver: ``FKOD_BASE_URL``, ``FKOD_API_KEY``,
``FKOD_LOGIN_TOKEN``, ``FKOD_WEBHOOK_SECRET`` and ``FKOD_SIGNED_WEBHOOK``.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fkod_sdk import Client

REQUIRED = ("FKOD_BASE_URL", "FKOD_API_KEY", "FKOD_LOGIN_TOKEN", "FKOD_WEBHOOK_SECRET",
            "FKOD_SIGNED_WEBHOOK")


@pytest.fixture(scope="session")
def env() -> dict[str, str]:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        pytest.fail(f"These tests need a running server; set {', '.join(missing)} "
                    "(the platform's tests/sdk/test_python_sdk.py sets them all).")
    return {name: os.environ[name] for name in REQUIRED}


@pytest.fixture
def client(env) -> Iterator[Client]:
    with Client(base_url=env["FKOD_BASE_URL"], api_key=env["FKOD_API_KEY"]) as sdk_client:
        yield sdk_client


@pytest.fixture(scope="session")
def signed_webhook(env) -> dict[str, Any]:
    return json.loads(env["FKOD_SIGNED_WEBHOOK"])


class PartnerApi:
    """Calls to the partner API with the owner's login token, to set up test credentials."""

    def __init__(self, base_url: str, login_token: str) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=10,
                                  headers={"Authorization": f"Bearer {login_token}"})

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self._http.post(path, json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def close(self) -> None:
        self._http.close()


@pytest.fixture
def partner_api(env) -> Iterator[PartnerApi]:
    api = PartnerApi(env["FKOD_BASE_URL"], env["FKOD_LOGIN_TOKEN"])
    yield api
    api.close()


def unique_email() -> str:
    return f"learner-{secrets.token_hex(6)}@sdk.example"
