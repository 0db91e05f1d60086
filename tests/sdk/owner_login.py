"""The partner owner's email and password, for SDK suites that log in to the OAuth pages."""

from __future__ import annotations

import httpx

from fkod.core.testing import TEST_PASSWORD


def owner_login_environment(live_api) -> dict[str, str]:
    """Variables ``FKOD_OWNER_EMAIL`` and ``FKOD_OWNER_PASSWORD`` for the live partner's owner.

    The suites use them to log in on ``/oauth/authorize`` and test the authorization
    code flow with PKCE end to end.
    """
    response = httpx.get(f"{live_api.base_url}/api/auth/me", timeout=30,
                         headers={"Authorization": f"Bearer {live_api.login_token}"})
    response.raise_for_status()
    body = response.json()
    email = body.get("email") or body["user"]["email"]
    return {"FKOD_OWNER_EMAIL": email, "FKOD_OWNER_PASSWORD": TEST_PASSWORD}
