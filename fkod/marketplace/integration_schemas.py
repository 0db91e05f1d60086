"""Request and response schemas of integrations on the partner and admin APIs.

The partner API and the admin API return the same integration fields; the
admin views reuse :class:`IntegrationSchema` and :class:`IntegrationDetailSchema`.
"""

from __future__ import annotations

import json
from decimal import Decimal

import jsonschema
import marshmallow
from marshmallow import fields, validate

from fkod.admin.plan_views import DecimalAmount
from fkod.core.api import PageQuery
from fkod.core.integrations import CATEGORIES, PRICING_MODELS, SLUG, VERSION
from fkod.core.schemas import (
    BodySchema,
    PublicId,
    ResponseSchema,
    StrictBoolean,
    StrictInteger,
    Text,
    Timestamp,
)
from fkod.marketplace.models import INTEGRATION_STATUSES
from fkod.marketplace.schemas import ListingFieldsSchema
from fkod.partners.schemas import Email, LinkUrl

MAX_NAME_LENGTH = 255
MAX_DESCRIPTION_LENGTH = 5000
MAX_RELEASE_NOTES_LENGTH = 10_000
MAX_REASON_LENGTH = 1000
MAX_SCOPES = 50
MAX_EVENT_TYPES = 50
MAX_EVENT_PATTERN_LENGTH = 100
# The size of config_schema as compact UTF-8 JSON.
MAX_CONFIG_SCHEMA_BYTES = 16 * 1024
# The monthly price of a paid integration, in US cents: 0.01 to 100000.00 USD.
MAX_PRICE_CENTS = 10_000_000
# The price of one API call made with a key linked to the integration: above 0, at most 1 USD,
# with the six decimal places of the NUMERIC(12, 6) column.
MAX_PRICE_PER_CALL = Decimal("1.00")
PRICE_PER_CALL_PLACES = 6
MAX_FEATURED_RANK = 10_000
CURRENCY = "USD"
# Versions shown in an integration's detail; the versions list pages through the rest.
DETAIL_VERSIONS = 20
DEFAULT_VERSION = "1.0.0"

REVIEW_DECISIONS = ("approve", "reject")

# List orders; a leading - sorts descending. Ties are broken by id.
PARTNER_SORTS = ("created_at", "updated_at", "name")
ADMIN_SORTS = (*PARTNER_SORTS, "submitted_at")
# The admin list's default: integrations in review first, oldest submission first.
QUEUE_SORT = "review_queue"


def _sort_choices(names: tuple[str, ...]) -> tuple[str, ...]:
    return names + tuple(f"-{name}" for name in names)


def _choice(names, **kwargs) -> Text:
    return Text(validate=validate.OneOf(names, error="Must be one of: {choices}."), **kwargs)


def _single_line(value: str) -> None:
    if any(ord(character) < 32 or ord(character) == 127 for character in value):
        raise marshmallow.ValidationError("Must be one line without control characters.")


# Fields -----------------------------------------------------------------------------


class HttpsUrl(LinkUrl):
    """A link shown to customers (logo, documentation, support page); https only."""

    def _deserialize(self, value, attr, data, **kwargs):
        url = super()._deserialize(value, attr, data, **kwargs)
        if not url.startswith("https://"):
            raise marshmallow.ValidationError("Must be an https:// URL.")
        return url


def _refs(value):
    """Yield every ``$ref`` and ``$dynamicRef`` value in a JSON Schema."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("$ref", "$dynamicRef") and isinstance(item, str):
                yield item
            yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


class ConfigSchema(fields.Dict):
    """A JSON Schema (Draft 2020-12) of ``type: object`` for an install's configuration.

    Only references inside the schema itself (``#…``) are accepted, so
    validating a configuration never fetches anything.
    """

    def _deserialize(self, value, attr, data, **kwargs):
        schema = super()._deserialize(value, attr, data, **kwargs)
        size = len(json.dumps(schema, ensure_ascii=False, separators=(",", ":")).encode())
        if size > MAX_CONFIG_SCHEMA_BYTES:
            raise marshmallow.ValidationError(
                f"Must be at most {MAX_CONFIG_SCHEMA_BYTES} bytes as JSON, not {size}.")
        if schema.get("type") != "object":
            raise marshmallow.ValidationError('Must be a JSON Schema with "type": "object".')
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(part) for part in exc.path) or "(root)"
            raise marshmallow.ValidationError(
                f"Not a valid Draft 2020-12 JSON Schema at {where}: {exc.message}") from None
        remote = [ref for ref in _refs(schema) if not ref.startswith("#")]
        if remote:
            raise marshmallow.ValidationError(
                f"References must point inside the schema (#...), not to {remote[0]!r}.")
        return schema


class PricePerCall(DecimalAmount):
    """A per-call price in USD: a decimal string (or JSON integer) above 0 and at most 1.00."""

    message = "Must be more than 0 and at most 1.00."

    def __init__(self, **kwargs):
        super().__init__(places=PRICE_PER_CALL_PLACES, integer_digits=6, example="0.001",
                         validate=validate.Range(min=0, min_inclusive=False,
                                                 max=MAX_PRICE_PER_CALL, error=self.message),
                         **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        negative = (value.strip().startswith("-") if isinstance(value, str)
                    else isinstance(value, int) and not isinstance(value, bool) and value < 0)
        if negative:
            raise marshmallow.ValidationError(self.message)
        return super()._deserialize(value, attr, data, **kwargs)


def _string_list(max_items: int, max_length: int, **kwargs) -> fields.List:
    return fields.List(Text(min_length=1, max_length=max_length),
                       validate=validate.Length(max=max_items,
                                                error=f"Must have at most {max_items} items."),
                       **kwargs)


# Requests ---------------------------------------------------------------------------


class IntegrationFields(BodySchema):
    """The integration fields a partner sets; null clears an optional field."""

    name = Text(min_length=1, max_length=MAX_NAME_LENGTH, validate=_single_line)
    slug = Text(max_length=100, validate=validate.Regexp(
        SLUG, error="Must be lowercase letters, digits and inner hyphens, such as acme-sync."),
        metadata={"description": "the marketplace handle; generated from the name when "
                                 "omitted on creation"})
    description = Text(max_length=MAX_DESCRIPTION_LENGTH, allow_none=True)
    category = _choice(CATEGORIES)
    version = Text(max_length=20, validate=validate.Regexp(
        VERSION, error="Must be a version such as 1.2.0."), metadata={
        "description": "the current version; a new number adds a version with release_notes"})
    release_notes = Text(max_length=MAX_RELEASE_NOTES_LENGTH, allow_none=True, metadata={
        "description": "the release notes of the current version"})
    logo_url = HttpsUrl(allow_none=True)
    documentation_url = HttpsUrl(allow_none=True)
    support_url = HttpsUrl(allow_none=True)
    support_email = Email(allow_none=True)
    scopes = _string_list(MAX_SCOPES, 100, metadata={
        "description": "API scopes an install grants; see GET /api/partners/api-keys/scopes"})
    event_types = _string_list(MAX_EVENT_TYPES, MAX_EVENT_PATTERN_LENGTH, metadata={
        "description": "event type names or patterns such as course.* the integration "
                       "receives; each must match an available event type"})
    config_schema = ConfigSchema(allow_none=True, metadata={
        "description": "Draft 2020-12 JSON Schema of type object that an install's "
                       f"configuration must satisfy, at most {MAX_CONFIG_SCHEMA_BYTES} bytes"})
    pricing_model = _choice(PRICING_MODELS)
    price_cents = StrictInteger(allow_none=True, validate=validate.Range(
        min=1, max=MAX_PRICE_CENTS), metadata={
        "description": "the monthly price in US cents; a paid integration needs it, "
                       "price_per_call or both; refused otherwise"})
    price_per_call = PricePerCall(allow_none=True, metadata={
        "description": "USD per live API call made with a key linked to the integration: a "
                       "decimal string above 0 and at most 1.00 with at most six decimal "
                       "places; a paid integration needs it, price_cents or both; refused "
                       "otherwise"})


class CreateIntegrationBody(IntegrationFields):
    name = Text(required=True, min_length=1, max_length=MAX_NAME_LENGTH, validate=_single_line)
    category = _choice(CATEGORIES, required=True)
    version = Text(load_default=DEFAULT_VERSION, max_length=20, validate=validate.Regexp(
        VERSION, error="Must be a version such as 1.2.0."),
        metadata={"description": f"the first version; {DEFAULT_VERSION} by default"})
    scopes = _string_list(MAX_SCOPES, 100, load_default=list)
    event_types = _string_list(MAX_EVENT_TYPES, MAX_EVENT_PATTERN_LENGTH, load_default=list)
    pricing_model = _choice(PRICING_MODELS, load_default="free")


class UpdateIntegrationBody(IntegrationFields):
    @marshmallow.validates_schema
    def _not_empty(self, data, **kwargs):
        if not data:
            raise marshmallow.ValidationError("Give at least one field to change.")


class IntegrationListQuery(PageQuery):
    status = _choice(INTEGRATION_STATUSES)
    sort = _choice(_sort_choices(PARTNER_SORTS), load_default="-created_at", metadata={
        "description": "created_at, updated_at or name, with a leading - for descending; "
                       "-created_at by default"})


class AdminIntegrationListQuery(PageQuery):
    status = _choice(INTEGRATION_STATUSES)
    partner_id = PublicId("partner", metadata={"description": "only this partner's integrations"})
    q = Text(min_length=1, max_length=200, metadata={
        "description": "text found in the name, matched literally and ignoring case"})
    sort = _choice((QUEUE_SORT, *_sort_choices(ADMIN_SORTS)), load_default=QUEUE_SORT, metadata={
        "description": f"{QUEUE_SORT} (the default: integrations in review first, oldest "
                       "submission first, then the others by submission time), or created_at, "
                       "updated_at, name or submitted_at with a leading - for descending"})


class ReviewBody(BodySchema):
    decision = _choice(REVIEW_DECISIONS, required=True)
    reason = Text(min_length=1, max_length=MAX_REASON_LENGTH, metadata={
        "description": "why the integration is rejected, shown to the partner; required "
                       "to reject"})

    @marshmallow.validates_schema
    def _reason_to_reject(self, data, **kwargs):
        if data.get("decision") == "reject" and not data.get("reason"):
            raise marshmallow.ValidationError("A rejection needs a reason for the partner.",
                                              "reason")


class FeaturedBody(BodySchema):
    featured = StrictBoolean(required=True)
    rank = StrictInteger(validate=validate.Range(min=1, max=MAX_FEATURED_RANK), metadata={
        "description": "position among featured integrations, 1 first; after the last "
                       "featured one by default"})

    @marshmallow.validates_schema
    def _rank_only_when_featured(self, data, **kwargs):
        if data.get("featured") is False and "rank" in data:
            raise marshmallow.ValidationError("Only a featured integration has a rank.", "rank")


# Responses --------------------------------------------------------------------------


def _price(integration) -> str | None:
    if integration.price_cents is None:
        return None
    return str((Decimal(integration.price_cents) / 100).quantize(Decimal("0.01")))


class VersionSchema(ResponseSchema):
    version = fields.String()
    release_notes = fields.String()
    status = fields.String(metadata={"description": "draft, in_review, published or rejected"})
    created_at = Timestamp()


class IntegrationSchema(ListingFieldsSchema):
    """An integration as its partner's members and admins see it."""

    partner_id = PublicId("partner")
    config_schema = fields.Dict()
    pricing_model = fields.String()
    price_cents = fields.Integer()
    price = fields.Function(_price, metadata={
        "description": "the monthly price as a decimal string; null unless paid"})
    price_per_call = fields.Decimal(places=PRICE_PER_CALL_PLACES, as_string=True, metadata={
        "description": "USD per live API call with a linked key, six decimal places; null "
                       "when calls are not charged"})
    currency = fields.Constant(CURRENCY)
    status = fields.String(metadata={"description": ", ".join(INTEGRATION_STATUSES)})
    rejection_reason = fields.String(metadata={
        "description": "why the last review rejected it; null once submitted again"})
    submitted_at = Timestamp()
    published_at = Timestamp()
    featured_rank = fields.Integer(metadata={"description": "null when not featured"})
    install_count = fields.Integer()
    rating = fields.Decimal(places=2, as_string=True, allow_none=True)
    review_count = fields.Integer()
    managed_by_plugin = fields.Function(lambda integration: integration.plugin_name is not None,
                                        metadata={"description": "true when a plugin ships it; "
                                                                 "then it is read-only here"})
    plugin_name = fields.String()
    created_at = Timestamp()
    updated_at = Timestamp()


class IntegrationDetailSchema(IntegrationSchema):
    release_notes = fields.String(metadata={"description": "of the current version"})
    versions = fields.List(fields.Nested(VersionSchema), metadata={
        "description": f"the {DETAIL_VERSIONS} newest versions, newest first; "
                       "GET …/versions lists them all"})


class EventIntegrationSchema(ResponseSchema):
    """The integration in the data of integration.* events."""

    id = PublicId("int")
    partner_id = PublicId("partner")
    name = fields.String()
    slug = fields.String()
    description = fields.String()
    category = fields.String()
    version = fields.String()
    status = fields.String()
    pricing_model = fields.String()
    scopes = fields.List(fields.String())
    event_types = fields.List(fields.String())
    submitted_at = Timestamp()
    published_at = Timestamp()
    created_at = Timestamp()
    updated_at = Timestamp()
