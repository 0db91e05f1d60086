"""The portal's browser session: a signed cookie with the user, the login time and a CSRF token.

The cookie is signed (HMAC-SHA512) with a key derived from the server-side
pepper under its own salt, HttpOnly, SameSite=Lax, valid for the whole site
(path ``/``) and Secure in production. A session ends at logout, after
``SESSION_TTL_SECONDS``, and when the user's ``tokens_valid_after`` moves past
the login time, which a password change, a password reset and "log out
everywhere" do.

The cookie also carries the flash messages of the next page, because a
redirect after a POST must show what the POST did.
"""

from __future__ import annotations

import hmac
import secrets
import time

from webob.cookies import SignedCookieProfile

from fkod.core.auth.models import User
from fkod.core.auth.security import to_unix_seconds

COOKIE_NAME = "fkod_portal_session"
# How long a portal login lasts, in seconds.
SESSION_TTL_SECONDS = 12 * 3600
# The maximum number of flash messages kept. Older ones are dropped, so the cookie stays small.
MAX_FLASH_MESSAGES = 5
FLASH_KINDS = ("success", "error", "info")


def make_cookie_profile(settings, *, cookie_name: str = COOKIE_NAME,
                        salt: str = "fkod.portal.session", samesite: str = "Lax",
                        path: str = "/", max_age: int = SESSION_TTL_SECONDS
                        ) -> SignedCookieProfile:
    """Return the signed cookie profile; the keyword arguments serve other cookie sessions."""
    return SignedCookieProfile(
        secret=settings["fkod.secrets.api_key_pepper"],
        salt=salt,
        cookie_name=cookie_name,
        secure=settings["fkod.environment"] == "production",
        httponly=True,
        samesite=samesite,
        path=path,
        max_age=max_age,
    )


class PortalSession:
    """The session of one request; the portal's response hook saves it when it changed."""

    # The registry key of the cookie profile; a subclass for another cookie sets its own.
    PROFILE_KEY = "portal.cookie_profile"

    def __init__(self, request):
        self.request = request
        self._profile = request.registry[self.PROFILE_KEY].bind(request)
        value = self._profile.get_value()
        self.data = value if isinstance(value, dict) else {}
        self.changed = False
        self.ended = False
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
        """Return the logged-in, active user, or None when the session has ended."""
        user_id = self.data.get("user_id")
        logged_in_at = self.data.get("logged_in_at")
        if not isinstance(user_id, int) or not isinstance(logged_in_at, int):
            return None
        if logged_in_at + SESSION_TTL_SECONDS <= time.time():
            return None
        user = self.request.dbsession.get(User, user_id)
        if user is None or user.status != "active":
            return None
        if user.tokens_valid_after is not None \
                and logged_in_at < to_unix_seconds(user.tokens_valid_after):
            return None
        return user

    def log_in(self, user: User) -> None:
        logged_in_at = int(time.time())
        if user.tokens_valid_after is not None:
            # tokens_valid_after is rounded up to the next second, so a login in
            # the second after a password reset would otherwise end at once.
            logged_in_at = max(logged_in_at, to_unix_seconds(user.tokens_valid_after))
        # A new CSRF token at login, so a token seen before login is worthless after it.
        self.data = {"user_id": user.id, "logged_in_at": logged_in_at,
                     "csrf": secrets.token_urlsafe(32), "flash": self.data.get("flash", [])}
        self.changed = True

    def log_out(self) -> None:
        """End the session; the cookie is deleted and a new one carries only the flash."""
        self.data = {"csrf": secrets.token_urlsafe(32), "flash": self.data.get("flash", [])}
        self.changed = True

    def flash(self, message: str, kind: str = "success") -> None:
        if kind not in FLASH_KINDS:
            raise ValueError(f"unknown flash kind {kind!r}; expected one of {FLASH_KINDS}")
        messages = list(self.data.get("flash") or [])
        messages.append([kind, message])
        self.data["flash"] = messages[-MAX_FLASH_MESSAGES:]
        self.changed = True

    def pop_flash(self) -> list[tuple[str, str]]:
        messages = self.data.pop("flash", None) or []
        if messages:
            self.changed = True
        return [(kind, text) for kind, text in messages
                if kind in FLASH_KINDS and isinstance(text, str)]

    def save(self, response) -> None:
        if self.changed:
            self._profile.set_cookies(response, self.data)
