"""Request and response schemas of the developer API: OAuth applications."""

from __future__ import annotations

from urllib.parse import urlsplit

import marshmallow
from marshmallow import fields, validate

from fkod.core.api import PageQuery
from fkod.core.schemas import BodySchema, PublicId, ResponseSchema, Text, Timestamp, mode_field

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
