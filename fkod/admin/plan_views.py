"""Admin API for plans (``/api/admin/plans``): list, read, create and update pricing tiers.

Reading needs ``plans:read``; creating and updating need ``plans:write``.
Every change is audited with the old and new value of each changed field.
Exactly one active plan is the default: making a plan the default unsets the
previous one in the same transaction, and the default plan cannot be
deactivated or unset directly. Prices are in USD only.

A change of a plan's rate limits reaches the gateway at once in this process
(and within a second or two in the others) because the cached API keys of
every partner on the plan are dropped.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal

import marshmallow
import sqlalchemy as sa
from cornice import Service
from marshmallow import fields, validate

from fkod.core import audit
from fkod.core.api import AUTH_ADMIN, PageQuery, operation, paginate
from fkod.core.auth.models import Partner
from fkod.core.billing.models import Plan
from fkod.core.billing.money import CURRENCY
from fkod.core.errors import Conflict, NotFound, field_error
from fkod.core.schemas import BodySchema, StrictBoolean, StrictInteger, Text, Timestamp
from fkod.partners.limits import refresh_partner_limits
from fkod.partners.subscription_views import PlanSchema

log = logging.getLogger(__name__)

plans = Service(name="admin_plans", path="/api/admin/plans",
                description="Every plan, active or not")
plan = Service(name="admin_plan", path="/api/admin/plans/{code}",
               description="One plan, by its code")

SERVICES = (plans, plan)
NOT_FOUND = ((404, "not_found"),)

PLAN_CODE = re.compile(r"^[a-z][a-z0-9_]{1,49}$")
DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")
# Limits stay far below 2**31, the range of the integer columns.
MAX_REQUESTS = 1_000_000_000
# The digits the columns hold: NUMERIC(15, 2) for prices, NUMERIC(12, 6) for overage.
PRICE_INTEGER_DIGITS = 13
OVERAGE_INTEGER_DIGITS = 6
# Fields whose change alters what the gateway enforces.
LIMIT_FIELDS = ("requests_per_hour", "requests_per_day")
UPDATABLE_FIELDS = (
    "name", "price_monthly", "currency", "requests_per_hour", "requests_per_day",
    "included_requests_monthly", "overage_price_per_request", "self_serve", "active",
    "is_default",
)


# Schemas ------------------------------------------------------------------------------


class DecimalAmount(fields.Field):
    """A decimal string of 0 or more, such as ``"99.00"``, with at most ``places`` decimals.

    A JSON integer is accepted too. A JSON number with a fraction is rejected,
    because it would reach the server as a binary float.
    """

    # The OpenAPI document describes the field as a decimal string.
    DECIMAL_STRING = True

    def __init__(self, *, places: int, integer_digits: int, example: str, **kwargs):
        super().__init__(**kwargs)
        self.places = places
        self.integer_digits = integer_digits
        self.example = example

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, float):
            raise marshmallow.ValidationError(
                f"Send the amount as a decimal string, such as \"{self.example}\", so no "
                "precision is lost.")
        if not isinstance(value, str):
            raise marshmallow.ValidationError(
                f"Must be a decimal string, such as \"{self.example}\".")
        text = value.strip()
        if text.startswith("-"):
            raise marshmallow.ValidationError("Must be 0 or more.")
        if DECIMAL.fullmatch(text) is None:
            raise marshmallow.ValidationError(
                f"Must be a decimal string, such as \"{self.example}\".")
        whole, _, fraction = text.partition(".")
        if len(fraction) > self.places:
            raise marshmallow.ValidationError(f"Must have at most {self.places} decimal places.")
        if len(whole.lstrip("0")) > self.integer_digits:
            raise marshmallow.ValidationError(
                f"Must have at most {self.integer_digits} digits before the decimal point.")
        return Decimal(text)


def _price_field(**kwargs) -> DecimalAmount:
    return DecimalAmount(places=2, integer_digits=PRICE_INTEGER_DIGITS, example="99.00",
                         metadata={"description": "USD per month, a decimal string with at "
                                                  "most two places"}, **kwargs)


def _overage_field(**kwargs) -> DecimalAmount:
    return DecimalAmount(places=6, integer_digits=OVERAGE_INTEGER_DIGITS, example="0.001",
                         metadata={"description": "USD per request beyond the included "
                                                  "volume, at most six decimal places"},
                         **kwargs)


def _limit_field(**kwargs) -> StrictInteger:
    return StrictInteger(allow_none=True, validate=validate.Range(min=1, max=MAX_REQUESTS),
                         metadata={"description": "null means unlimited"}, **kwargs)


def _check_currency(value: str) -> None:
    if value != CURRENCY:
        raise marshmallow.ValidationError(
            f"Must be {CURRENCY}; plans in other currencies are rejected.")


class UpdatePlanBody(BodySchema):
    """The fields of a plan an admin may set; a PUT changes only those it gives."""

    name = Text(min_length=1, max_length=100)
    price_monthly = _price_field()
    currency = Text(validate=_check_currency, metadata={"description": "USD only"})
    requests_per_hour = _limit_field()
    requests_per_day = _limit_field()
    included_requests_monthly = StrictInteger(
        allow_none=True, validate=validate.Range(min=0, max=MAX_REQUESTS),
        metadata={"description": "Requests the price covers each month; null means unlimited."})
    overage_price_per_request = _overage_field()
    self_serve = StrictBoolean(metadata={"description": "Partners can choose the plan "
                                                        "themselves."})
    active = StrictBoolean()
    is_default = StrictBoolean(metadata={"description": "true makes this plan the default "
                                                        "and unsets the previous one"})

    @marshmallow.validates_schema
    def _not_empty(self, data, **kwargs):
        if not data:
            raise marshmallow.ValidationError("Give at least one field to change.")


class CreatePlanBody(UpdatePlanBody):
    code = Text(required=True, validate=validate.Regexp(
        PLAN_CODE, error="Must start with a lowercase letter and contain 2 to 50 lowercase "
                         "letters, digits and underscores."))
    name = Text(required=True, min_length=1, max_length=100)
    price_monthly = _price_field(required=True)
    currency = Text(load_default=CURRENCY, validate=_check_currency,
                    metadata={"description": "USD only"})
    requests_per_hour = _limit_field(required=True)
    requests_per_day = _limit_field(required=True)
    included_requests_monthly = StrictInteger(
        required=True, allow_none=True, validate=validate.Range(min=0, max=MAX_REQUESTS),
        metadata={"description": "Requests the price covers each month; null means unlimited."})
    overage_price_per_request = _overage_field(load_default=Decimal("0.001"))
    self_serve = StrictBoolean(load_default=True)
    active = StrictBoolean(load_default=True)
    is_default = StrictBoolean(load_default=False)

    @marshmallow.validates_schema
    def _default_is_active(self, data, **kwargs):
        if data.get("is_default") and data.get("active") is False:
            raise marshmallow.ValidationError("An inactive plan cannot be the default.",
                                              field_name="is_default")


class PlanListQuery(PageQuery):
    active = Text(validate=validate.OneOf(["true", "false"]))


class AdminPlanSchema(PlanSchema):
    self_serve = fields.Boolean()
    active = fields.Boolean()
    created_at = Timestamp()


# Changes ------------------------------------------------------------------------------


def _audit_value(value):
    return str(value) if isinstance(value, Decimal) else value


def _plan_by_code(request) -> Plan:
    code = request.matchdict["code"]
    found = request.dbsession.scalar(sa.select(Plan).where(Plan.code == code))
    if found is None:
        raise NotFound(f"No plan has the code {code!r}.",
                       errors=[field_error("path", "code", "no plan has this code")])
    return found


def _lock_plans(session) -> None:
    """Lock every plan row, so two requests cannot each make a different plan the default.

    The plans table has a handful of rows. SQLite takes its write lock at the
    start of the transaction and ignores FOR UPDATE.
    """
    session.execute(sa.select(Plan.id).with_for_update())


def _unset_previous_default(request, new_default: Plan) -> Plan | None:
    """Unset the current default plan other than ``new_default``, audit it and return it."""
    session = request.dbsession
    previous = session.scalar(
        sa.select(Plan).where(Plan.is_default.is_(True), Plan.id != new_default.id).limit(1))
    if previous is None:
        return None
    session.execute(sa.update(Plan).where(Plan.is_default.is_(True), Plan.id != new_default.id)
                    .values(is_default=False).execution_options(synchronize_session="fetch"))
    audit.record(request, "plan.updated", partner_id=None, target_type="plan",
                 target_id=previous.code, details={
                     "fields": ["is_default"],
                     "changes": {"is_default": {"old": True, "new": False}},
                     "reason": f"{new_default.code} became the default plan"})
    return previous


def _refresh_gateway(request, plan_ids: list[int], include_planless: bool) -> None:
    """Drop the cached keys of every partner on ``plan_ids``, so the new limits apply.

    Partners without a plan follow the default plan, so they are included
    when the default changes. One call per partner is fine for the number of
    partners the platform has. A plan with very many partners would need a
    bulk invalidation instead.
    """
    session = request.dbsession
    condition = Partner.plan_id.in_(plan_ids)
    if include_planless:
        condition = sa.or_(condition, Partner.plan_id.is_(None))
    partner_ids = session.scalars(sa.select(Partner.id).where(condition)).all()
    for partner_id in partner_ids:
        refresh_partner_limits(request, partner_id)
    log.info("plan limits refreshed", extra={"plan_ids": plan_ids,
                                             "partners": len(partner_ids)})


def create_plan(request, data: dict) -> Plan:
    session = request.dbsession
    code = data["code"]
    code_taken = Conflict(f"A plan with the code {code!r} already exists.", code="plan_code_taken",
                     errors=[field_error("body", "code", "already taken")])
    if session.scalar(sa.select(Plan.id).where(Plan.code == code)) is not None:
        raise code_taken
    if data["is_default"]:
        _lock_plans(session)

    created = Plan(**data)
    session.add(created)
    try:
        session.flush()
    except sa.exc.IntegrityError:
        # A concurrent request created the same code after the check above.
        raise code_taken from None

    previous = _unset_previous_default(request, created) if created.is_default else None
    audit.record(request, "plan.created", partner_id=None, target_type="plan",
                 target_id=created.code,
                 details={name: _audit_value(getattr(created, name)) for name in UPDATABLE_FIELDS})
    if previous is not None:
        _refresh_gateway(request, [], include_planless=True)
    log.info("plan created", extra={"plan": created.code})
    return created


def _check_default_rules(target: Plan, data: dict) -> None:
    """Raise 409 when the update would leave no default plan or an inactive default."""
    active = data.get("active", target.active)
    if target.is_default and data.get("is_default") is False:
        raise Conflict(
            f"Plan {target.code!r} is the default plan; make another plan the default "
            "instead of unsetting it.", code="plan_is_default",
            errors=[field_error("body", "is_default", "the plan is the default")])
    if target.is_default and not active:
        raise Conflict(
            f"Plan {target.code!r} is the default plan and cannot be deactivated; make "
            "another plan the default first.", code="plan_is_default",
            errors=[field_error("body", "active", "the plan is the default")])
    if data.get("is_default") and not active:
        raise Conflict(
            f"Plan {target.code!r} is inactive and cannot be the default; activate it too.",
            code="plan_inactive",
            errors=[field_error("body", "is_default", "the plan is inactive")])


def update_plan(request, target: Plan, data: dict) -> Plan:
    session = request.dbsession
    becomes_default = bool(data.get("is_default")) and not target.is_default
    if becomes_default:
        _lock_plans(session)
    session.refresh(target)
    _check_default_rules(target, data)

    changes = {}
    for name, value in data.items():
        old = getattr(target, name)
        if old != value:
            changes[name] = {"old": _audit_value(old), "new": _audit_value(value)}
            setattr(target, name, value)
    if not changes:
        return target

    session.flush()
    if becomes_default:
        _unset_previous_default(request, target)
    audit.record(request, "plan.updated", partner_id=None, target_type="plan",
                 target_id=target.code, details={"fields": sorted(changes), "changes": changes})

    limits_changed = any(name in changes for name in LIMIT_FIELDS)
    if limits_changed or becomes_default:
        _refresh_gateway(request, [target.id] if limits_changed else [],
                         include_planless=becomes_default or target.is_default)
    log.info("plan updated", extra={"plan": target.code, "fields": sorted(changes)})
    return target


# Operations ---------------------------------------------------------------------------


@operation(plans, "GET", summary="List every plan, oldest first", auth=AUTH_ADMIN,
           permission="plans:read", query=PlanListQuery, response=AdminPlanSchema,
           paginated=True)
def list_plans(request):
    select = sa.select(Plan)
    if "active" in request.query:
        select = select.where(Plan.active.is_(request.query["active"] == "true"))
    return paginate(select, Plan.id, request.query, request.dbsession, descending=False)


@operation(plans, "POST", summary="Create a plan", auth=AUTH_ADMIN, permission="plans:write",
           body=CreatePlanBody, response=AdminPlanSchema, status=201,
           errors=((409, "plan_code_taken"),))
def create_plan_view(request):
    return create_plan(request, dict(request.validated))


@operation(plan, "GET", summary="Get a plan by its code", auth=AUTH_ADMIN,
           permission="plans:read", response=AdminPlanSchema, errors=NOT_FOUND)
def get_plan(request):
    return _plan_by_code(request)


@operation(plan, "PUT", summary="Change some fields of a plan; the code is fixed",
           auth=AUTH_ADMIN, permission="plans:write", body=UpdatePlanBody,
           response=AdminPlanSchema,
           errors=(*NOT_FOUND, (409, "plan_is_default"), (409, "plan_inactive")))
def update_plan_view(request):
    return update_plan(request, _plan_by_code(request), dict(request.validated))


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
