"""Helpers for the pytest drivers of the Go and Java SDK suites.

Each driver checks that its toolchain is installed, registers an OAuth application for the
live partner, and runs the language's own test suite as a subprocess against the live server.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
from urllib.parse import urlsplit

import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from fkod.core.testing import TEST_PASSWORD
from tests.services import ci_requires_services

REDIRECT_URI = "http://127.0.0.1:8765/callback"


def require_tool(command: str, how_to_install: str) -> str:
    """Return the path of ``command``; skip the test without it, or fail it when CI is set."""
    path = shutil.which(command)
    if path:
        return path
    message = f"{command} is not installed. To run this test, {how_to_install}."
    if ci_requires_services():
        pytest.fail(f"{message} CI is set, so the test fails instead of being skipped.")
    pytest.skip(message)


def oauth_environment(live_api) -> dict[str, str]:
    """Register a confidential test-mode application for the live partner.

    Returns the application's ``FKOD_OAUTH_CLIENT_ID``, ``FKOD_OAUTH_CLIENT_SECRET`` and
    ``FKOD_OAUTH_REDIRECT_URI``, and the owner's ``FKOD_OWNER_EMAIL`` and
    ``FKOD_OWNER_PASSWORD``, with which the suites log in on the consent page. A PKCE
    ``FKOD_PKCE_VERIFIER`` and its S256 ``FKOD_PKCE_CHALLENGE``, computed by authlib, let the
    suites check their own challenge against another implementation.
    """
    verifier = secrets.token_urlsafe(48)
    body = {"name": "SDK tests", "client_type": "confidential", "mode": "test",
            "scopes": ["users:read", "users:write"], "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token", "client_credentials"]}
    created = _call(live_api, "POST", "/api/developers/applications", body)
    account = _call(live_api, "GET", "/api/auth/me")
    return {"FKOD_OAUTH_CLIENT_ID": created["client_id"],
            "FKOD_OAUTH_CLIENT_SECRET": created["client_secret"],
            "FKOD_OAUTH_REDIRECT_URI": REDIRECT_URI,
            "FKOD_OWNER_EMAIL": account["email"],
            "FKOD_OWNER_PASSWORD": TEST_PASSWORD,
            "FKOD_PKCE_VERIFIER": verifier,
            "FKOD_PKCE_CHALLENGE": create_s256_code_challenge(verifier)}


def _call(live_api, method: str, path: str, body: dict | None = None) -> dict:
    """Call the live server's member API with the owner's login token."""
    headers = {"Authorization": f"Bearer {live_api.login_token}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    address = urlsplit(live_api.base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    assert 200 <= response.status < 300, f"{method} {path}: {response.status} {payload!r}"
    return json.loads(payload)


def run_suite(command: list[str], *, cwd: str, environment: dict[str, str],
              timeout_seconds: int) -> str:
    """Run a language test suite with ``environment`` added; fail with its output if it fails.

    The suite runs in its own process group, so that a timeout also stops the test binaries
    and JVMs it started.
    """
    process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **environment},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{' '.join(command)} timed out after {timeout_seconds} s.\n{output}")
    if process.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited with {process.returncode}.\n{output}")
    return output
