"""Page access checks: the signed-in member, the CSRF token and the per-address limit.

A page for members calls :func:`require_member` first. It sets the same
request attributes as the JSON API's login-token check (``request.user``,
``request.partner``, ``request.principal``), so the service functions work
unchanged for both.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import urlencode

from pyramid.httpexceptions import HTTPForbidden, HTTPSeeOther

from fkod.core.auth.accounts import find_membership
from fkod.core.auth.models import Partner, User
from fkod.core.auth.roles import ROLE_PERMISSIONS, role_permits
from fkod.core.auth.security import (
    BLOCKED_PARTNER_STATUSES,
    MemberPrincipal,
    address_limit_checks,
    hit_limits,
)
from fkod.core.errors import RateLimited

LOGIN_PATH = "/portal/login"
MARKETPLACE_PATH = "/marketplace"


@dataclasses.dataclass(frozen=True)
class PortalMember:
    """The signed-in user, the partner the pages act for, and the user's role there."""

    user: User
    partner: Partner
    role: str

    def can(self, permission: str) -> bool:
        return role_permits(self.role, permission)

    @property
    def permissions(self) -> frozenset[str]:
        return ROLE_PERMISSIONS.get(self.role, frozenset())


def login_redirect(request) -> HTTPSeeOther:
    """Send a signed-out visitor to the login page, back to this page afterwards."""
    target = request.path_qs if request.method == "GET" else "/portal"
    return HTTPSeeOther(location=f"{LOGIN_PATH}?{urlencode({'next': target})}")


def safe_next(value: str | None) -> str:
    """Return ``value`` when it is a path of the portal or the marketplace, else ``/portal``.

    Only a local path is accepted, so a crafted login link cannot send the
    user to another site after login.
    """
    if isinstance(value, str) and value.startswith(("/portal", "/marketplace")) \
            and "//" not in value \
            and "\\" not in value and value.isprintable():
        return value
    return "/portal"


def require_member(request, permission: str | None = None) -> PortalMember:
    """Return the signed-in member, or raise a redirect to login or a 403 page.

    A POST must also carry the session's CSRF token.
    """
    user = request.portal_session.user()
    if user is None:
        raise login_redirect(request)
    check_csrf(request)

    # NOTE: a member of several partners acts for the first one, because the
    # portal has no way to choose another partner yet.
    row = find_membership(request.dbsession, user.id)
    if row is None:
        raise HTTPForbidden("This account is not a member of any partner. Ask a partner's "
                            "owner to invite you, or sign up a new partner.")
    membership, partner = row
    if partner.status in BLOCKED_PARTNER_STATUSES:
        raise HTTPForbidden(f"The partner account is {partner.status}; contact support.")

    member = PortalMember(user=user, partner=partner, role=membership.role)
    principal = MemberPrincipal(user_id=user.id, partner_id=partner.id, role=membership.role)
    request.environ["fkod.principal"] = principal
    request.principal = principal
    request.user = user
    request.partner = partner
    request.portal_member = member
    if permission is not None and not member.can(permission):
        raise HTTPForbidden(f"Your role ({membership.role}) does not grant the permission "
                            f"{permission}. Ask an owner or admin of {partner.company_name}.")
    return member


def landing_path(request, user: User) -> str:
    """Return where a login lands: the dashboard for a partner member, else the marketplace."""
    if find_membership(request.dbsession, user.id) is None:
        return MARKETPLACE_PATH
    return "/portal"


def require_user(request) -> User:
    """Return the signed-in user, member or customer, or raise a redirect to login.

    A POST must also carry the session's CSRF token. It sets ``request.user``
    as the JSON API's user check does, so the customer services work unchanged.
    """
    user = request.portal_session.user()
    if user is None:
        if request.method == "GET":
            raise login_redirect(request)
        raise HTTPSeeOther(location=f"{LOGIN_PATH}?{urlencode({'next': MARKETPLACE_PATH})}")
    check_csrf(request)
    request.user = user
    return user


def check_csrf(request) -> None:
    """Raise 403 when a POST lacks the session's CSRF token."""
    if request.method != "POST":
        return
    if not request.portal_session.check_csrf(request.POST.get("csrf_token")):
        raise HTTPForbidden("The form expired or did not come from this site. Reload the page "
                            "and submit it again.")


def limit_address(request) -> None:
    """Count a form without a login against the client address; raise 429 when over.

    The same per-address limits and limiter as the JSON API's operations
    without a credential.
    """
    checks = address_limit_checks(request.registry.settings, request.client_address)
    if not checks:
        return
    decision = hit_limits(request, checks)
    if decision is not None and not decision.allowed:
        raise RateLimited(f"Too many requests from this address; retry in "
                          f"{decision.retry_after} seconds.", retry_after=decision.retry_after)
