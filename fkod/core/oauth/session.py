"""The browser session of the authorization pages: a signed cookie.

The cookie holds the logged-in user (if any), when the user logged in, and
the CSRF token the pages' forms carry. It is signed (HMAC-SHA512) with a key
derived from the server-side pepper, HttpOnly, SameSite=Lax, limited to
``/oauth``, and Secure in production.
"""

from __future__ import annotations

import hmac
import secrets
import time

from webob.cookies import SignedCookieProfile

from fkod.core.auth.models import User
from fkod.core.auth.security import to_unix_seconds

COOKIE_NAME = "fkod_oauth_session"
# How long a login on the authorization pages lasts, in seconds.
SESSION_TTL_SECONDS = 8 * 3600


def make_cookie_profile(settings) -> SignedCookieProfile:
    return SignedCookieProfile(
        secret=settings["fkod.secrets.api_key_pepper"],
        salt="fkod.oauth.session",
        cookie_name=COOKIE_NAME,
        secure=settings["fkod.environment"] == "production",
        httponly=True,
        samesite="Lax",
        path="/oauth",
        max_age=SESSION_TTL_SECONDS,
    )


class BrowserSession:
    """The session of one request; ``save`` writes it to a response."""

    def __init__(self, request):
        self.request = request
        self._profile = request.registry["oauth.cookie_profile"].bind(request)
        value = self._profile.get_value()
        self.data = value if isinstance(value, dict) else {}
        self.changed = False
        if not isinstance(self.data.get("csrf"), str):
            self.data = {"csrf": secrets.token_urlsafe(32)}
            self.changed = True

    @property
    def csrf_token(self) -> str:
        return self.data["csrf"]

    def check_csrf(self, submitted) -> bool:
        return isinstance(submitted, str) and hmac.compare_digest(
            submitted.encode(), self.csrf_token.encode())

    def user(self) -> User | None:
        """Return the logged-in, active user, or None."""
        user_id = self.data.get("user_id")
        logged_in_at = self.data.get("logged_in_at")
        if not isinstance(user_id, int) or not isinstance(logged_in_at, int):
            return None
        if logged_in_at + SESSION_TTL_SECONDS <= time.time():
            return None
        user = self.request.dbsession.get(User, user_id)
        if user is None or user.status != "active":
            return None
        # A password change or "log out everywhere" ends this session too.
        if user.tokens_valid_after is not None \
                and logged_in_at < to_unix_seconds(user.tokens_valid_after):
            return None
        return user

    def log_in(self, user: User) -> None:
        # A new CSRF token at login, so one seen before login is worthless after it.
        self.data = {"user_id": user.id, "logged_in_at": int(time.time()),
                     "csrf": secrets.token_urlsafe(32)}
        self.changed = True

    def save(self, response) -> None:
        if self.changed:
            self._profile.set_cookies(response, self.data)
