"""Test helpers for the platform's own tests and for plugin authors.

``make_settings`` gives a complete settings dict for an application on a
SQLite file (or any database URL), ``TestClient`` wraps WebTest with the
calls most tests start with: register a partner, log in, create a key.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path

import httpx
import webtest
from cryptography.fernet import Fernet

TEST_PASSWORD = "correct horse battery staple"


def make_settings(tmp_path: Path, db_url: str | None = None, **overrides) -> dict:
    """Settings for a test application; keyword arguments replace ``fkod.*`` values.

    Pass overrides with underscores for dots after the ``fkod.`` prefix, or a
    dict through ``extra``: ``make_settings(tmp, extra={"fkod.tasks.broker": "redis"})``.
    """
    settings = {
        "fkod.environment": "test",
        "fkod.db.url": db_url or f"sqlite:///{tmp_path / 'fkod.sqlite'}",
        "fkod.secrets.api_key_pepper": secrets.token_urlsafe(32),
        "fkod.secrets.webhook_encryption_key": Fernet.generate_key().decode(),
        "fkod.secrets.jwt_private_key_file": str(tmp_path / "jwt-signing-key.pem"),
        "fkod.webhooks.allow_loopback": "true",
        "fkod.webhooks.require_https": "false",
        "fkod.webhooks.timeout_seconds": "5",
        "fkod.metering.flush_interval_ms": "50",
        # A loaded test machine can stall the thread that holds SQLite's write
        # lock for seconds, so requests wait for the lock instead of a 503.
        "fkod.db.sqlite_busy_timeout_ms": "30000",
        # Every test starts and stops apps, and a short poll stops their workers sooner.
        "fkod.tasks.poll_interval_ms": "10",
        # Outgoing mail stays in registry["mailer"].outbox for tests to read.
        "fkod.mail.backend": "memory",
        "fkod.storage.local_directory": str(tmp_path / "documents"),
        # Cheap password hashing keeps sign-up and login fast in tests.
        "fkod.auth.argon2_time_cost": "1",
        "fkod.auth.argon2_memory_kib": "64",
    }
    extra = overrides.pop("extra", {})
    for name, value in overrides.items():
        settings["fkod." + name.replace("__", ".")] = str(value)
    settings.update(extra)
    return settings


def make_app(settings: dict):
    from fkod import main

    return main({}, **settings)


class TestClient:
    """WebTest over the real application, with helpers for the usual first steps."""

    __test__ = False  # not a pytest test class

    def __init__(self, app):
        self.app = app
        self.web = webtest.TestApp(app)
        self._counter = 0

    @property
    def registry(self):
        return self.app.registry

    def register_partner(self, *, email: str | None = None, company_name: str = "Acme Learning",
                         **fields) -> dict:
        self._counter += 1
        email = email or f"owner{self._counter}-{secrets.token_hex(3)}@acme.example"
        body = {"company_name": company_name, "email": email, "password": TEST_PASSWORD, **fields}
        return self.web.post_json("/api/partners/register", body, status=201).json

    def login(self, email: str, password: str = TEST_PASSWORD) -> str:
        response = self.web.post_json("/api/auth/login", {"email": email, "password": password},
                                      status=200)
        return response.json["access_token"]

    def partner_with_token(self, **fields) -> tuple[dict, str]:
        """Register a partner and log its owner in; return the partner and the token."""
        registered = self.register_partner(**fields)
        return registered["partner"], self.login(registered["user"]["email"])

    def create_key(self, token: str, *, scopes=("users:read", "users:write"), mode: str = "test",
                   **fields) -> dict:
        body = {"key_name": "test key", "scopes": list(scopes), "mode": mode, **fields}
        return self.web.post_json("/api/partners/api-keys", body,
                                  headers=auth_header(token), status=201).json

    def drain_tasks(self) -> None:
        """Wait until in-process tasks are done (deliveries, for instance)."""
        self.registry["tasks"].join()


def verify_partner(app, partner_id: str, *, emails: bool = True) -> None:
    """Mark a partner verified, as an admin's approval does, without the paperwork.

    With ``emails`` the members' email addresses are marked verified too, as
    their verification links would; live mode needs both.
    """
    import sqlalchemy as sa

    from fkod.core.auth.models import Partner, PartnerMember, User
    from fkod.core.db import run_in_transaction, utcnow
    from fkod.core.ids import parse_id

    number = parse_id("partner", partner_id)

    def work(session):
        session.execute(sa.update(Partner).where(Partner.id == number)
                        .values(verification_status="verified"))
        if emails:
            members = sa.select(PartnerMember.user_id).where(PartnerMember.partner_id == number)
            session.execute(sa.update(User).where(User.id.in_(members),
                                                  User.email_verified_at.is_(None))
                            .values(email_verified_at=utcnow()))

    run_in_transaction(app.registry["db.session_factory"], work)


def auth_header(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def wait_until_healthy(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until the server at ``url`` answers ``/health`` with 200.

    Raises RuntimeError when ``process`` exits first or ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become healthy within {timeout} s")
