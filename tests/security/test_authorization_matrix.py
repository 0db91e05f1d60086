"""Authorization matrix: every JSON API operation against every kind of caller.

The expected outcome of each (operation, caller) pair is computed from the
operation's declaration (auth kind, role permission, key scope), the role
tables in fkod.core.auth.roles and fkod.admin.auth, and the scope catalog.
A new operation is therefore covered as soon as it is registered. Path ids
are real ids of resources that partner A owns, so a member or key of partner
B probes A's data. One request is sent per pair, and each pair is printed
with its status (shown with ``pytest -s`` or when the test fails).

Portal and admin console pages (cookie sessions) are walked from the OpenAPI
document and checked for anonymous callers only.
"""

from __future__ import annotations

import dataclasses
import secrets
import time

from fkod.admin.auth import ADMIN_ROLE_PERMISSIONS, ADMIN_ROLES
from fkod.admin.testing import admin_login, create_admin
from fkod.core.api import (
    AUTH_ADMIN,
    AUTH_API_KEY,
    AUTH_MEMBER,
    AUTH_NONE,
    AUTH_USER,
    COMMON_ERRORS,
)
from fkod.core.auth.models import PartnerMember, User
from fkod.core.auth.oauth_models import OAuthClient, OAuthToken
from fkod.core.auth.roles import ROLE_PERMISSIONS, role_permits
from fkod.core.auth.tokens import OAUTH_AUDIENCE
from fkod.core.db import utcnow
from fkod.core.ids import parse_id
from fkod.core.openapi import get_document
from fkod.core.testing import TEST_PASSWORD, auth_header, verify_partner
from tests.security.world import MISSING_ID, PLACEHOLDER, create_resources, fill_path, in_db

ALLOWED, REFUSED, NOT_OURS, UNCHECKED = "allowed", "refused", "not_ours", "unchecked"


@dataclasses.dataclass(frozen=True)
class Identity:
    """One caller: its name, the headers it sends and what it is."""

    name: str
    headers: dict
    # anonymous, member, other_member, api_key (OAuth tokens too), other_api_key, admin, customer
    kind: str
    role: str | None = None
    scopes: frozenset = frozenset()
    # Login email of a user identity, so calls that may end the session get a fresh token.
    email: str | None = None


def add_member(client, partner_id: str, role: str) -> str:
    """Store a user with ``role`` in the partner and return its email."""
    email = f"{role}-{secrets.token_hex(4)}@team.example"
    hasher = client.registry["password_hasher"]

    def work(session):
        user = User(email=email, name=role, password_hash=hasher.hash(TEST_PASSWORD),
                    email_verified_at=utcnow())
        session.add(user)
        session.flush()
        session.add(PartnerMember(partner_id=parse_id("partner", partner_id), user_id=user.id,
                                  role=role))

    in_db(client.app, work)
    return email


def add_customer(client) -> str:
    email = f"customer-{secrets.token_hex(4)}@learner.example"
    hasher = client.registry["password_hasher"]
    in_db(client.app, lambda session: session.add(User(
        email=email, name="Customer", password_hash=hasher.hash(TEST_PASSWORD),
        email_verified_at=utcnow(), livemode=True)))
    return email


def mint_oauth_token(client, partner_id: str, scopes: list[str]) -> str:
    """Store a confidential OAuth client of the partner and sign a client token for it."""
    client_id = secrets.token_urlsafe(18)
    jti = secrets.token_urlsafe(12)
    partner_number = parse_id("partner", partner_id)
    scope = " ".join(scopes)

    def work(session):
        application = OAuthClient(client_id=client_id, partner_id=partner_number,
                                  client_type="confidential", livemode=False, status="active",
                                  client_secret=secrets.token_hex(32))
        application.set_client_metadata({"client_name": "Matrix App",
                                         "redirect_uris": ["https://acme.example/callback"],
                                         "scope": scope})
        session.add(application)
        session.add(OAuthToken(client_id=client_id, user_id=None, family_id=secrets.token_hex(8),
                               token_type="Bearer", access_token=jti, scope=scope,
                               expires_in=3600, livemode=False, access_token_revoked_at=0))

    in_db(client.app, work)
    payload = {"sub": client_id, "client_id": client_id, "scope": scope,
               "partner_id": partner_number, "livemode": False, "jti": jti}
    token, _ttl = client.registry["token_signer"].issue(payload, audience=OAUTH_AUDIENCE,
                                                        ttl_seconds=3600)
    return token


def cornice_operations(registry) -> list[tuple[str, str, object]]:
    """Return (method, path pattern, Operation) of every registered JSON API operation."""
    found = []
    for service in registry.cornice_services.values():
        for method, view, _arguments in service.definitions:
            op = getattr(view, "operation", None)
            if op is not None and method != "HEAD":
                found.append((method, service.path, op))
    return found


@dataclasses.dataclass
class World:
    client: object
    partner_id: str
    ids: dict  # path prefix -> id of partner A's resource
    identities: list


def build_world(client) -> World:
    app = client.app
    registered = client.register_partner()
    partner_id = registered["partner"]["id"]
    verify_partner(app, partner_id)
    owner_email = registered["user"]["email"]
    owner = client.login(owner_email)
    scopes = [scope.name for scope in client.registry["scope_catalog"].grantable()]

    identities = [Identity("anonymous", {}, "anonymous")]
    for role in ROLE_PERMISSIONS:
        email = owner_email if role == "owner" else add_member(client, partner_id, role)
        identities.append(Identity(f"member:{role}", auth_header(client.login(email)), "member",
                                   role=role, email=email))

    full_key = client.create_key(owner, scopes=scopes)["key"]
    identities.append(Identity("api_key:test:all", auth_header(full_key), "api_key",
                               scopes=frozenset(scopes)))
    live_key = client.create_key(owner, scopes=scopes, mode="live")["key"]
    identities.append(Identity("api_key:live:all", auth_header(live_key), "api_key",
                               scopes=frozenset(scopes)))
    for missing in scopes:
        rest = [scope for scope in scopes if scope != missing]
        key = client.create_key(owner, scopes=rest)["key"]
        identities.append(Identity(f"api_key:test:without:{missing}", auth_header(key),
                                   "api_key", scopes=frozenset(rest)))
    identities.append(Identity("oauth:client:all",
                               auth_header(mint_oauth_token(client, partner_id, scopes)),
                               "api_key", scopes=frozenset(scopes)))
    for role in ADMIN_ROLES:
        admin = create_admin(app, role=role)
        identities.append(Identity(f"admin:{role}",
                                   auth_header(admin_login(client, admin["email"])),
                                   "admin", role=role))
    customer_email = add_customer(client)
    identities.append(Identity("customer", auth_header(client.login(customer_email)),
                               "customer", email=customer_email))

    other_registered = client.register_partner()
    other = other_registered["partner"]
    other_email = other_registered["user"]["email"]
    other_owner = client.login(other_email)
    verify_partner(app, other["id"])
    identities.append(Identity("other_partner:owner", auth_header(other_owner), "other_member",
                               role="owner", email=other_email))
    other_key = client.create_key(other_owner, scopes=scopes)["key"]
    identities.append(Identity("other_partner:api_key", auth_header(other_key),
                               "other_api_key", scopes=frozenset(scopes)))

    ids = create_resources(client, owner, full_key)
    return World(client, partner_id, ids, identities)


def expected_outcome(op, identity: Identity, names_owned: bool) -> str:
    """Compute the outcome that the operation's declaration gives for this caller."""
    if op.auth == AUTH_NONE:
        return UNCHECKED
    if op.auth == AUTH_MEMBER:
        if identity.kind == "member":
            return ALLOWED if not op.permission or role_permits(identity.role, op.permission) \
                else REFUSED
        if identity.kind == "other_member":
            return NOT_OURS if names_owned else UNCHECKED
        return REFUSED
    if op.auth == AUTH_API_KEY:
        if identity.kind == "api_key":
            return ALLOWED if not op.scope or op.scope in identity.scopes else REFUSED
        if identity.kind == "other_api_key":
            return NOT_OURS if names_owned else UNCHECKED
        return REFUSED
    if op.auth == AUTH_ADMIN:
        if identity.kind == "admin":
            permitted = ADMIN_ROLE_PERMISSIONS.get(identity.role, frozenset())
            return ALLOWED if not op.permission or op.permission in permitted else REFUSED
        return REFUSED
    if op.auth == AUTH_USER:
        return ALLOWED if identity.kind in ("member", "other_member", "customer") else REFUSED
    raise AssertionError(f"unknown auth kind {op.auth!r}")


def send(client, method: str, path: str, headers: dict):
    body = b"{}" if method in ("POST", "PUT", "PATCH") else b""
    extra = {"Content-Type": "application/json"} if body else {}
    return client.web.request(path, method=method, body=body, headers={**headers, **extra},
                              expect_errors=True)


def run_order(item) -> tuple:
    """Send reads first and deletions last."""
    method, pattern, _op = item
    return ({"GET": 0, "POST": 1, "PUT": 1, "PATCH": 1, "DELETE": 2}[method], pattern)


def may_end_session(method: str, op) -> bool:
    """Tell whether a call can revoke the caller's own token (logout, password change)."""
    return op.auth == AUTH_USER and method != "GET"


def auth_check_codes(op) -> set[str]:
    """Return the 401 and 403 codes that the credential check of ``op`` raises."""
    return {code for status, code in COMMON_ERRORS[op.auth] if status in (401, 403)}


def refused_by_auth_check(response, op) -> bool:
    """Tell whether the operation's declared credential check refused the call.

    A view may add its own 403 to the declared check, for instance because
    only the owner may export a partner's data. Such a 403 is not a failure
    of the declared check.
    """
    if response.status_int not in (401, 403):
        return False
    try:
        code = response.json.get("code")
    except ValueError:
        return True
    return response.status_int == 401 or code in auth_check_codes(op)


def test_authorization_matrix(security_client):
    client = security_client
    world = build_world(client)
    operations = sorted(cornice_operations(client.registry), key=run_order)
    assert operations, "no JSON API operation is registered"

    checked: dict[str, int] = {}
    failures = []
    started = time.monotonic()
    for method, pattern, op in operations:
        if op.auth == AUTH_NONE:
            continue
        # Admin operations act across tenants. Their ids name nothing, so an
        # allowed admin call cannot suspend or change partner A mid-run.
        ids = world.ids if op.auth != AUTH_ADMIN else {}
        path, names_owned = fill_path(pattern, ids)
        for identity in world.identities:
            expected = expected_outcome(op, identity, names_owned)
            if expected == UNCHECKED:
                continue
            headers = identity.headers
            if may_end_session(method, op) and identity.email:
                headers = auth_header(client.login(identity.email))
            response = send(client, method, path, headers)
            status = response.status_int
            checked[expected] = checked.get(expected, 0) + 1
            label = f"{method} {pattern} as {identity.name}: {status}, expected {expected}"
            print(label)
            if status >= 500:
                failures.append(label)
            elif expected == REFUSED and status not in (401, 403):
                failures.append(label)
            elif expected == NOT_OURS and status not in (400, 401, 403, 404):
                # 400 means the body check refused the call before any lookup by id.
                failures.append(label)
            elif expected == ALLOWED and refused_by_auth_check(response, op):
                failures.append(label)

    print(f"checked pairs by expectation: {checked} in {time.monotonic() - started:.1f} s")
    assert checked.get(REFUSED, 0) > 0
    assert checked.get(ALLOWED, 0) > 0
    assert checked.get(NOT_OURS, 0) > 0
    assert not failures, "\n".join(failures)


def cookie_pages(document) -> list[tuple[str, str, str]]:
    """Return (method, path, scheme) of every page behind a portal or admin session cookie."""
    schemes = {name for name, scheme in document["components"]["securitySchemes"].items()
               if scheme.get("in") == "cookie"}
    pages = []
    for path, operations in document["paths"].items():
        for method, description in operations.items():
            required = {name for requirement in description.get("security", [])
                        for name in requirement}
            if required and required <= schemes:
                pages.append((method.upper(), path, next(iter(required))))
    return pages


def test_session_pages_refuse_anonymous(security_client):
    client = security_client
    pages = cookie_pages(get_document(client.registry).document)
    assert pages, "the OpenAPI document lists no page behind a session cookie"

    failures = []
    for method, path, scheme in pages:
        filled = PLACEHOLDER.sub(MISSING_ID, path)
        response = client.web.request(filled, method=method, expect_errors=True,
                                      body=b"" if method == "GET" else b"a=1",
                                      content_type=None if method == "GET"
                                      else "application/x-www-form-urlencoded")
        status = response.status_int
        location = response.headers.get("Location", "")
        print(f"{method} {path} ({scheme}) anonymous: {status} {location}")
        redirected_to_login = status in (302, 303) and "login" in location
        if not (redirected_to_login or status in (401, 403, 404)):
            failures.append(f"{method} {path}: {status} {location}")
    assert not failures, "\n".join(failures)
