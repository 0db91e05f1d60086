"""Cornice services of the partner API: sign-up, profile and the event catalog.

The includes at the end add API keys, webhooks, usage and limits.
"""

from __future__ import annotations

import sqlalchemy as sa
from cornice import Service

from fkod.core.api import AUTH_MEMBER, AUTH_NONE, Dumped, Page, operation
from fkod.core.auth.models import PartnerMember
from fkod.core.schemas import QuerySchema
from fkod.partners import schemas, services

register = Service(name="partner_register", path="/api/partners/register",
                   description="Partner sign-up")
me = Service(name="partner_me", path="/api/partners/me", description="The caller's partner")
available_events = Service(name="available_events", path="/api/webhooks/available-events",
                           description="Event types a webhook can subscribe to")


@operation(register, "POST", summary="Register a partner and its owner account", auth=AUTH_NONE,
           body=schemas.RegisterPartnerBody, response=schemas.RegisteredSchema, status=201,
           errors=((409, "email_taken"),))
def register_partner(request):
    partner, user = services.register_partner(request, dict(request.validated))
    return {"partner": partner, "user": user}


def _me(request):
    membership = request.dbsession.scalar(sa.select(PartnerMember).where(
        PartnerMember.partner_id == request.partner.id,
        PartnerMember.user_id == request.user.id))
    result = Dumped(schemas.PartnerSchema().dump(request.partner))
    result["membership"] = schemas.MembershipSchema().dump(membership)
    return result


@operation(me, "GET", summary="Get the caller's partner profile", auth=AUTH_MEMBER,
           permission="partner:read", response=schemas.PartnerMeSchema)
def get_me(request):
    return _me(request)


@operation(me, "PUT", summary="Update the caller's partner profile", auth=AUTH_MEMBER,
           permission="partner:write", body=schemas.UpdatePartnerBody,
           response=schemas.PartnerMeSchema)
def put_me(request):
    services.update_partner(request, request.partner, dict(request.validated))
    return _me(request)


@operation(available_events, "GET", summary="List the event types of the enabled plugins",
           auth=AUTH_NONE, query=QuerySchema, response=schemas.EventTypeSchema, paginated=True)
def list_available_events(request):
    host = request.registry["plugins"]
    return Page(host.event_catalog.available(host.is_enabled), None)


def includeme(config):
    for service in (register, me, available_events):
        config.add_cornice_service(service)
    config.include("fkod.partners.webhook_views")
    config.include("fkod.partners.webhook_verify_views")
    config.include("fkod.partners.api_key_views")
    config.include("fkod.partners.usage_views")
    config.include("fkod.partners.limits_views")
    config.include("fkod.partners.member_views")
    config.include("fkod.partners.verification_views")
    config.include("fkod.partners.data_rights_views")
    config.include("fkod.partners.ticket_views")
    config.include("fkod.partners.subscription_views")
    config.include("fkod.partners.dashboard_views")
    config.include("fkod.partners.billing_views")
