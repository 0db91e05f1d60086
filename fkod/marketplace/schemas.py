"""Public request and response schemas of the marketplace reads.

These describe what anyone may see of a listed integration and of its
partner; the partner-side schemas live in fkod.marketplace.integration_schemas.
"""

from __future__ import annotations

import base64
import binascii
import re
from decimal import Decimal

import marshmallow
from marshmallow import fields, validate

from fkod.core.api import PageQuery
from fkod.core.integrations import CATEGORIES, PRICING_MODELS
from fkod.core.schemas import PublicId, ResponseSchema, Text, Timestamp
from fkod.marketplace.catalog import DEFAULT_SORT, INTEGRATION_SORTS

SEARCH_SORTS = ("relevance", *INTEGRATION_SORTS)
PARTNER_SORTS = ("name", "popular")
MAX_QUERY_LENGTH = 200
# Search results past this many are never paged to; search is for the best matches.
MAX_SEARCH_RESULTS = 1000
CURRENCY = "USD"
# Per-call prices are shown with the six decimal places their column keeps.
PER_CALL_STEP = Decimal("0.000001")

_OFFSET_CURSOR = re.compile(rb"offset:([0-9]{1,4})")


# Responses ------------------------------------------------------------------------


class PartnerBlockSchema(ResponseSchema):
    """The publisher of an integration, as the marketplace shows it."""

    id = PublicId("partner")
    slug = fields.String()
    company_name = fields.String()
    verified = fields.Method("dump_verified")

    def dump_verified(self, partner) -> bool:
        return partner.verification_status == "verified"


class ListingFieldsSchema(ResponseSchema):
    """The fields of an integration's listing, shown to customers and to its partner alike."""

    id = PublicId("int")
    slug = fields.String()
    name = fields.String()
    description = fields.String()
    category = fields.String()
    version = fields.String()
    logo_url = fields.String()
    documentation_url = fields.String()
    support_url = fields.String()
    support_email = fields.String()
    scopes = fields.List(fields.String())
    event_types = fields.List(fields.String())


class IntegrationSchema(ListingFieldsSchema):
    """A listed integration in marketplace lists, search results and partner profiles."""

    pricing = fields.Method("dump_pricing")
    rating = fields.Method("dump_rating")
    review_count = fields.Integer()
    install_count = fields.Integer()
    published_at = Timestamp()
    featured = fields.Method("dump_featured")
    partner = fields.Nested(PartnerBlockSchema)

    def dump_pricing(self, integration) -> dict:
        per_call = integration.price_per_call
        return {"model": integration.pricing_model, "price_cents": integration.price_cents,
                "price_per_call": None if per_call is None
                else format(Decimal(per_call).quantize(PER_CALL_STEP), "f"),
                "currency": CURRENCY}

    def dump_rating(self, integration) -> float | None:
        # The average of 1-5 stars with two decimals, as a JSON number.
        return None if integration.rating is None else float(integration.rating)

    def dump_featured(self, integration) -> bool:
        return integration.featured_rank is not None


class IntegrationDetailSchema(IntegrationSchema):
    """One listed integration, with the JSON Schema of its install configuration."""

    config_schema = fields.Raw()


class SearchResultSchema(IntegrationSchema):
    """A search result: exact, prefix, text (full-text) or similar (typo-tolerant)."""

    match = fields.String()


class TrendingIntegrationSchema(IntegrationSchema):
    """A trending integration with its decayed count of active installs of the last 7 days."""

    trending_score = fields.Float()
    recent_installs = fields.Integer()


class CategorySchema(ResponseSchema):
    name = fields.String()
    integration_count = fields.Integer()


class CategoryListSchema(ResponseSchema):
    data = fields.List(fields.Nested(CategorySchema))


class PublicPartnerSchema(ResponseSchema):
    """A partner's public profile with the counts of its listed integrations and installs."""

    id = PublicId("partner")
    slug = fields.String()
    company_name = fields.String()
    company_website = fields.String()
    company_logo_url = fields.String()
    description = fields.String()
    verified = fields.Method("dump_verified")
    integration_count = fields.Integer()
    install_count = fields.Integer()

    def dump_verified(self, partner) -> bool:
        return partner.verification_status == "verified"


class PartnerProfileSchema(PublicPartnerSchema):
    """A partner's public profile with its listed integrations, most installed first."""

    integrations = fields.List(fields.Nested(IntegrationSchema))


# Queries --------------------------------------------------------------------------


class OffsetCursor(fields.Field):
    """An opaque cursor of search results: the offset of the next page, base64-encoded."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            decoded = base64.urlsafe_b64decode(value.encode("ascii") + b"==")
        except (ValueError, UnicodeError, binascii.Error):
            raise marshmallow.ValidationError("Not a cursor this API returned.") from None
        match = _OFFSET_CURSOR.fullmatch(decoded)
        if match is None or int(match.group(1)) >= MAX_SEARCH_RESULTS:
            raise marshmallow.ValidationError("Not a cursor this API returned.")
        return int(match.group(1))


def encode_offset_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _one_of(choices) -> validate.OneOf:
    return validate.OneOf(choices, error=f"Must be one of {', '.join(choices)}.")


class FilterQuery(PageQuery):
    """The filters of integration lists and search, and the sort order."""

    category = Text(validate=_one_of(CATEGORIES), load_default=None)
    # partner_<number> or a partner's slug.
    partner = Text(max_length=100, load_default=None)
    pricing = Text(validate=_one_of(PRICING_MODELS), load_default=None)
    min_rating = fields.Decimal(
        load_default=None, validate=validate.Range(min=1, max=5, error="Must be from 1 to 5."),
        error_messages={"invalid": "Must be a number from 1 to 5."})
    sort = Text(validate=_one_of(tuple(INTEGRATION_SORTS)), load_default=DEFAULT_SORT)

    @marshmallow.pre_load
    def _refuse_long_numbers(self, data, **kwargs):
        # Decimal("9" * 5000) parses, slowly; a rating needs a few characters.
        rating = data.get("min_rating")
        if isinstance(rating, str) and len(rating) > 10:
            raise marshmallow.ValidationError({"min_rating": ["Must be a number from 1 to 5."]})
        return data


class IntegrationListQuery(FilterQuery):
    pass


class SearchQuery(FilterQuery):
    """``q`` (1 to 200 characters) with the filters of the list; relevance order by default."""

    q = Text(required=True, strip=True, validate=validate.Length(
        min=1, max=MAX_QUERY_LENGTH,
        error=f"Must be 1 to {MAX_QUERY_LENGTH} characters, not counting spaces at the ends."),
        error_messages={"required": "Missing search query; pass q."})
    sort = Text(validate=_one_of(SEARCH_SORTS), load_default="relevance")
    cursor = OffsetCursor(load_default=None)


class LimitQuery(PageQuery):
    """Only ``limit`` (1-100, default 20): the list is one page, ranked."""

    class Meta:
        exclude = ("cursor",)


class PartnerListQuery(PageQuery):
    sort = Text(validate=_one_of(PARTNER_SORTS), load_default="name")
