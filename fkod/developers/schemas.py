"""Request and response schemas of the developer API: OAuth applications and the dashboard."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from urllib.parse import urlsplit

import marshmallow
from marshmallow import fields, validate

from fkod.core.api import PageQuery
from fkod.core.schemas import BodySchema, PublicId, ResponseSchema, Text, Timestamp, mode_field
from fkod.partners.schemas import UtcTime

CLIENT_TYPES = ("confidential", "public")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
DEFAULT_GRANT_TYPES = ["authorization_code", "refresh_token"]
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
DEFAULT_PORTS = {"http": 80, "https": 443}

MAX_NAME_LENGTH = 100
MAX_URI_LENGTH = 2000
MAX_REDIRECT_URIS = 10
MAX_ORIGINS = 10
MAX_SCOPES = 50


def _split(value: str):
    """Split an absolute http(s) URL and check the parts every registered URL shares."""
    if not value:
        raise marshmallow.ValidationError("Must not be empty.")
    if len(value) > MAX_URI_LENGTH:
        raise marshmallow.ValidationError(f"Must be at most {MAX_URI_LENGTH} characters.")
    if any(not 0x21 <= ord(char) <= 0x7E for char in value):
        raise marshmallow.ValidationError(
            "Must be printable ASCII without spaces. Percent-encode other characters.")
    if "*" in value:
        raise marshmallow.ValidationError(
            "Must not contain a wildcard (*). Register each URL in full.")
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.netloc:
        raise marshmallow.ValidationError("Must be an absolute https URL.")
    if "@" in parts.netloc:
        raise marshmallow.ValidationError("Must not contain a user name or password.")
    if not parts.hostname:
        raise marshmallow.ValidationError("Must name a host.")
    try:
        port = parts.port
    except ValueError:
        raise marshmallow.ValidationError("Must have a port from 1 to 65535.") from None
    if port == 0:
        raise marshmallow.ValidationError("Must have a port from 1 to 65535.")
    return parts, scheme


def _check_secure(parts, scheme: str) -> None:
    if scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise marshmallow.ValidationError(
            "Must use https. http is allowed only for 127.0.0.1, [::1] and localhost.")


class RedirectUri(fields.String):
    """A redirect URI, registered in full and matched exactly: no wildcard and no fragment."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        parts, scheme = _split(text)
        _check_secure(parts, scheme)
        if "#" in text:
            raise marshmallow.ValidationError("Must not contain a fragment (#).")
        return text


class Origin(fields.String):
    """A browser origin ``scheme://host[:port]``, stored lower-cased without a default port."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        parts, scheme = _split(text)
        _check_secure(parts, scheme)
        if parts.path or parts.query or parts.fragment or "?" in text or "#" in text:
            raise marshmallow.ValidationError(
                "Must be an origin scheme://host[:port] without a path, query or fragment.")
        host = parts.hostname
        shown_host = f"[{host}]" if ":" in host else host
        port = parts.port
        if port is None or port == DEFAULT_PORTS[scheme]:
            return f"{scheme}://{shown_host}"
        return f"{scheme}://{shown_host}:{port}"


class HttpsLink(fields.String):
    """An https link shown to users who authorize the application (logo, site, policies)."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        _parts, scheme = _split(text)
        if scheme != "https":
            raise marshmallow.ValidationError("Must be an https URL.")
        return text


def _unique(values: list) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise marshmallow.ValidationError(f"{value} is given more than once.")
        seen.add(value)


def _redirect_uris(**kwargs):
    return fields.List(RedirectUri(), validate=[
        validate.Length(max=MAX_REDIRECT_URIS,
                        error=f"Give at most {MAX_REDIRECT_URIS} redirect URIs."),
        _unique], metadata={
            "description": "registered in full and matched exactly; https, or http on "
                           "127.0.0.1, [::1] or localhost; needed for authorization_code"},
        **kwargs)


def _scopes(**kwargs):
    return fields.List(Text(max_length=64), validate=validate.Length(
        min=1, max=MAX_SCOPES), metadata={"description": "gateway scopes the application "
                                                          "may ask users for"}, **kwargs)


def _grant_types(**kwargs):
    return fields.List(Text(validate=validate.OneOf(GRANT_TYPES)), validate=[
        validate.Length(min=1, max=len(GRANT_TYPES)), _unique], metadata={
            "description": "client_credentials only for confidential applications"}, **kwargs)


def _allowed_origins(**kwargs):
    return fields.List(Origin(), validate=[
        validate.Length(max=MAX_ORIGINS, error=f"Give at most {MAX_ORIGINS} origins."),
        _unique], metadata={
            "description": "browser origins allowed by CORS; public applications only"},
        **kwargs)


class ApplicationFields(BodySchema):
    """Fields a partner may set on an application, on creation or later."""

    name = Text(min_length=1, max_length=MAX_NAME_LENGTH)
    redirect_uris = _redirect_uris()
    scopes = _scopes()
    grant_types = _grant_types()
    allowed_origins = _allowed_origins()
    logo_uri = HttpsLink(allow_none=True)
    client_uri = HttpsLink(allow_none=True)
    policy_uri = HttpsLink(allow_none=True)
    tos_uri = HttpsLink(allow_none=True)
    integration_id = PublicId("int", allow_none=True, metadata={
        "description": "one of the partner's integrations the application acts for; "
                       "null for none"})


class CreateApplicationBody(ApplicationFields):
    name = Text(required=True, min_length=1, max_length=MAX_NAME_LENGTH)
    client_type = Text(validate=validate.OneOf(CLIENT_TYPES), load_default="confidential",
                       metadata={"description": "confidential (has a secret) or public "
                                                "(browser or native app, PKCE only)"})
    redirect_uris = _redirect_uris(load_default=list)
    scopes = _scopes(required=True)
    grant_types = _grant_types(load_default=lambda: list(DEFAULT_GRANT_TYPES))
    allowed_origins = _allowed_origins(load_default=list)
    mode = mode_field()


class UpdateApplicationBody(ApplicationFields):
    @marshmallow.validates_schema
    def _not_empty(self, data, **kwargs):
        if not data:
            raise marshmallow.ValidationError("Give at least one field to change.")


class ApplicationQuery(PageQuery):
    mode = Text(validate=validate.OneOf(["live", "test"]))


class LinksSchema(ResponseSchema):
    logo_uri = fields.String(allow_none=True)
    client_uri = fields.String(allow_none=True)
    policy_uri = fields.String(allow_none=True)
    tos_uri = fields.String(allow_none=True)


class ApplicationSchema(ResponseSchema):
    id = PublicId("app")
    client_id = fields.String()
    name = fields.String()
    client_type = fields.String()
    mode = fields.String()
    redirect_uris = fields.List(fields.String())
    scopes = fields.List(fields.String())
    grant_types = fields.List(fields.String())
    allowed_origins = fields.List(fields.String())
    token_endpoint_auth_method = fields.String(metadata={
        "description": "client_secret_basic for confidential applications, none for public"})
    links = fields.Nested(LinksSchema)
    integration_id = PublicId("int", allow_none=True)
    authorized_users = fields.Integer(metadata={
        "description": "users with an unrevoked authorization of the application"})
    secret_rotated_at = Timestamp(allow_none=True)
    created_at = Timestamp()
    updated_at = Timestamp()


class CreatedApplicationSchema(ApplicationSchema):
    client_secret = fields.String(allow_none=True, metadata={
        "description": "the secret of a confidential application; shown only in this "
                       "response. null for a public application"})


class RotatedSecretSchema(ApplicationSchema):
    client_secret = fields.String(metadata={"description": "shown only in this response"})


# The developer dashboard ------------------------------------------------------------


class ModeCountsSchema(ResponseSchema):
    live = fields.Integer()
    test = fields.Integer()


class MePlanSchema(ResponseSchema):
    code = fields.String()
    name = fields.String()
    requests_per_hour = fields.Integer(allow_none=True, metadata={
        "description": "null when the plan has no hourly limit"})
    requests_per_day = fields.Integer(allow_none=True, metadata={
        "description": "null when the plan has no daily limit"})


class MePartnerSchema(ResponseSchema):
    id = PublicId("partner")
    company_name = fields.String()
    verification_status = fields.String()
    plan = fields.Nested(MePlanSchema, allow_none=True)


class LiveModeSchema(ResponseSchema):
    available = fields.Boolean()
    blocked_by = fields.List(fields.String(), metadata={
        "description": "why live mode is unavailable: email_not_verified (the caller's "
                       "email), partner_not_verified; empty when available"})


class DeveloperMeSchema(ResponseSchema):
    user_id = PublicId("user")
    email = fields.String()
    name = fields.String(allow_none=True)
    partner = fields.Nested(MePartnerSchema)
    role = fields.String()
    permissions = fields.List(fields.String())
    live_mode = fields.Nested(LiveModeSchema)
    api_keys = fields.Nested(ModeCountsSchema, metadata={
        "description": "active keys that have not expired, per mode"})
    oauth_applications = fields.Nested(ModeCountsSchema)
    webhook_endpoints = fields.Nested(ModeCountsSchema, metadata={
        "description": "endpoints with status active, per mode"})


class DeveloperWindowSchema(ResponseSchema):
    kind = fields.String(metadata={"description": "plan, endpoint or key"})
    name = fields.String(metadata={"description": "hour, day, the route of an endpoint "
                                                  "limit, or key"})
    window_seconds = fields.Integer()
    unlimited = fields.Boolean(metadata={"description": "true when the plan sets no limit "
                                                        "for this window"})
    limit = fields.Integer(allow_none=True, metadata={
        "description": "requests per window, boost included; null when unlimited"})
    remaining = fields.Integer(allow_none=True)
    reset_at = Timestamp(allow_none=True, metadata={
        "description": "when the oldest counted requests leave the window"})


class DeveloperBoostSchema(ResponseSchema):
    id = PublicId("boost")
    extra_requests_per_hour = fields.Integer()
    extra_requests_per_day = fields.Integer(allow_none=True)
    ends_at = Timestamp()


class DeveloperModeLimitsSchema(ResponseSchema):
    mode = fields.String()
    boost = fields.Nested(DeveloperBoostSchema, allow_none=True)
    windows = fields.List(fields.Nested(DeveloperWindowSchema), metadata={
        "description": "windows shared by every key of the partner in this mode"})


class DeveloperKeyLimitsSchema(ResponseSchema):
    id = PublicId("key")
    key_prefix = fields.String()
    key_name = fields.String()
    mode = fields.String()
    window = fields.Nested(DeveloperWindowSchema, allow_none=True, metadata={
        "description": "the key's own rate_limit window; null when the key has none and "
                       "only its mode's windows apply"})


class DeveloperLimitsSchema(ResponseSchema):
    plan = fields.Nested(MePlanSchema, allow_none=True)
    modes = fields.List(fields.Nested(DeveloperModeLimitsSchema))
    api_keys = fields.List(fields.Nested(DeveloperKeyLimitsSchema))


STATUS_CLASS_RANGES = {"4xx": (400, 500), "5xx": (500, 600)}


class StatusFilter(fields.String):
    """An HTTP status of 400 to 599, or a class ``4xx`` or ``5xx``."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs).strip().lower()
        if text in STATUS_CLASS_RANGES:
            return STATUS_CLASS_RANGES[text]
        if len(text) == 3 and text.isascii() and text.isdigit() and 400 <= int(text) <= 599:
            return int(text)
        raise marshmallow.ValidationError("Must be a status code from 400 to 599, 4xx or 5xx.")


_TIME_CURSOR = re.compile(r"at:([0-9]{1,17}):id:([0-9]{1,19})")


class TimeCursor(fields.Field):
    """An opaque cursor: the time (microseconds since 1970) and id of the last item shown."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            decoded = base64.urlsafe_b64decode(value.encode("ascii") + b"==").decode("ascii")
        except (ValueError, UnicodeError, binascii.Error):
            raise marshmallow.ValidationError("Not a cursor this API returned.") from None
        match = _TIME_CURSOR.fullmatch(decoded)
        if match is None:
            raise marshmallow.ValidationError("Not a cursor this API returned.")
        try:
            moment = EPOCH + dt.timedelta(microseconds=int(match.group(1)))
        except OverflowError:
            raise marshmallow.ValidationError("Not a cursor this API returned.") from None
        return moment, int(match.group(2))


EPOCH = dt.datetime(1970, 1, 1)


def encode_time_cursor(moment: dt.datetime, row_id: int) -> str:
    micros = (moment.replace(tzinfo=None) - EPOCH) // dt.timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"at:{micros}:id:{row_id}".encode()).decode().rstrip("=")


class FailedCallsQuery(PageQuery):
    cursor = TimeCursor(load_default=None)
    status = StatusFilter(metadata={"description": "a code from 400 to 599, 4xx or 5xx"})
    key_prefix = Text(min_length=1, max_length=16, metadata={
        "description": "the key_prefix of one of the partner's keys, such as sk_test_AbCd1234"})
    endpoint = Text(min_length=1, max_length=255, metadata={
        "description": "the route pattern as metered, such as /api/v1/users/{id}"})
    since = UtcTime(metadata={"description": "calls at or after this time (ISO 8601 with a "
                                             "time zone)"})
    until = UtcTime(metadata={"description": "calls before this time (ISO 8601 with a "
                                             "time zone)"})

    @marshmallow.validates_schema
    def _ordered(self, data, **kwargs):
        if data.get("since") and data.get("until") and data["until"] <= data["since"]:
            raise marshmallow.ValidationError({"until": ["Must be later than since."]})


class FailedCallSchema(ResponseSchema):
    request_id = fields.String(allow_none=True)
    key_prefix = fields.String(allow_none=True, metadata={
        "description": "null for calls with an OAuth access token"})
    oauth_client_id = PublicId("app", allow_none=True)
    mode = fields.String()
    method = fields.String()
    endpoint = fields.String()
    status = fields.Integer()
    error_message = fields.String(allow_none=True, metadata={
        "description": "the error code the gateway answered with"})
    created_at = Timestamp()


class ComponentSchema(ResponseSchema):
    status = fields.String(metadata={"description": "up, down, degraded or not_configured"})
    latency_ms = fields.Float(metadata={"description": "how long the check took"})
    error = fields.String(metadata={"description": "why a check failed: timed out, or the "
                                                   "error class"})
    kind = fields.String(metadata={"description": "broker and workers: inprocess or redis"})
    queue_depth = fields.Integer(metadata={"description": "broker: messages waiting for a "
                                                          "worker"})
    delayed = fields.Integer(metadata={"description": "broker: delayed messages waiting"})
    live_workers = fields.Integer(metadata={"description": "workers: processes alive"})
    workers = fields.List(fields.String(), metadata={"description": "workers: host-pid of "
                                                                    "each live worker"})
    oldest_pending_age_seconds = fields.Integer(allow_none=True, metadata={
        "description": "webhooks: age of the oldest pending delivery"})
    oldest_due_age_seconds = fields.Integer(allow_none=True, metadata={
        "description": "webhooks: how long the most overdue pending delivery has been due"})
    last_24_hours = fields.Float(allow_none=True, metadata={
        "description": "availability: share of gateway calls without a 5xx; null without "
                       "calls"})
    last_7_days = fields.Float(allow_none=True)


class PlatformStatusSchema(ResponseSchema):
    status = fields.String(metadata={"description": "operational, degraded or down"})
    checked_at = Timestamp()
    components = fields.Dict(keys=fields.String(), values=fields.Nested(ComponentSchema))


class SdkSchema(ResponseSchema):
    language = fields.String()
    package_name = fields.String(allow_none=True)
    version = fields.String(allow_none=True)
    install_command = fields.String(allow_none=True)
    docs_url = fields.String(allow_none=True)
    download_url = fields.String()


class SdkListSchema(ResponseSchema):
    data = fields.List(fields.Nested(SdkSchema))


class SandboxRemovedSchema(ResponseSchema):
    users = fields.Integer()
    courses = fields.Integer()
    enrollments = fields.Integer()
    mentor_matches = fields.Integer()
    webhook_deliveries = fields.Integer()
    events = fields.Integer()


class SandboxResetSchema(ResponseSchema):
    # The test-mode rate-limit windows are reset after the commit, so the
    # response cannot report the outcome; a failure is logged.
    removed = fields.Nested(SandboxRemovedSchema)
