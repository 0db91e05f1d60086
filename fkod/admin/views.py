"""Cornice services of the admin API (``/api/admin/…``): login, partners, admins, audit log.

Every operation but login takes an admin access token and declares the admin
permission it needs (see :mod:`fkod.admin.auth`).
"""

from __future__ import annotations

import sqlalchemy as sa
from cornice import Service

from fkod.admin import schemas, services
from fkod.admin.auth import issue_admin_token
from fkod.core.api import AUTH_ADMIN, AUTH_NONE, PageQuery, operation, paginate
from fkod.core.audit import AuditEntry
from fkod.core.auth.models import AdminUser, ApiKey
from fkod.core.errors import envelope_response
from fkod.core.ids import parse_id
from fkod.core.webhooks.models import Webhook
from fkod.partners.audit_views import AuditEntrySchema
from fkod.partners.models import SupportTicket
from fkod.partners.schemas import ApiKeySchema, WebhookSchema

login = Service(name="admin_login", path="/api/admin/auth/login", description="Admin login")
partners = Service(name="admin_partners", path="/api/admin/partners",
                   description="Partners, for review")
partner = Service(name="admin_partner", path="/api/admin/partners/{id}",
                  description="One partner with its members, plan and overrides")
verification = Service(name="admin_partner_verification",
                       path="/api/admin/partners/{id}/verification",
                       description="Approve or reject a partner's verification")
suspend = Service(name="admin_partner_suspend", path="/api/admin/partners/{id}/suspend",
                  description="Suspend a partner")
reactivate = Service(name="admin_partner_reactivate", path="/api/admin/partners/{id}/reactivate",
                     description="Lift a partner's suspension")
overrides = Service(name="admin_partner_overrides", path="/api/admin/partners/{id}/overrides",
                    description="A partner's plan, rate-limit overrides and commission rate")
partner_keys = Service(name="admin_partner_api_keys", path="/api/admin/partners/{id}/api-keys",
                       description="A partner's API keys, without secrets")
partner_webhooks = Service(name="admin_partner_webhooks",
                           path="/api/admin/partners/{id}/webhooks",
                           description="A partner's webhook endpoints, without secrets")
partner_tickets = Service(name="admin_partner_tickets", path="/api/admin/partners/{id}/tickets",
                          description="A partner's support tickets")
admins = Service(name="admin_users", path="/api/admin/admins", description="Admin users")
admin_item = Service(name="admin_user", path="/api/admin/admins/{id}",
                     description="One admin user")
audit_log = Service(name="admin_audit_log", path="/api/admin/audit-log",
                    description="The platform's audit log")

SERVICES = (login, partners, partner, verification, suspend, reactivate, overrides,
            partner_keys, partner_webhooks, partner_tickets, admins, admin_item, audit_log)
NOT_FOUND = ((404, "not_found"),)
PARTNER_DELETED = ((409, "partner_deleted"),)


def _partner_id(request) -> int:
    return parse_id("partner", request.matchdict["id"], noun="partner")


def _detail(request, partner_row):
    return services.partner_detail(request, partner_row)


# Login ------------------------------------------------------------------------


@operation(login, "POST", summary="Exchange an admin's email and password for an admin token",
           auth=AUTH_NONE, body=schemas.AdminLoginBody, response=schemas.AdminLoginResponse,
           no_store=True, errors=((401, "invalid_credentials"), (429, "too_many_failed_logins")))
def post_login(request):
    data = request.validated
    admin = services.log_in(request, data["email"], data["password"])
    if admin is None:
        # Returned rather than raised, so the transaction commits the audit
        # entry of the failed attempt. The same answer for every cause.
        return envelope_response(request, 401, "invalid_credentials",
                                 "The email or password is incorrect.",
                                 headers={"WWW-Authenticate": 'Bearer realm="fkod"'})
    token, ttl = issue_admin_token(request, admin)
    return {"access_token": token, "token_type": "Bearer", "expires_in": ttl,
            "admin_id": f"admin_{admin.id}", "role": admin.role}


# Partners ---------------------------------------------------------------------


@operation(partners, "GET", summary="List partners with filters, search and a sort order",
           auth=AUTH_ADMIN, permission="partners:read", query=schemas.PartnerListQuery,
           response=schemas.PartnerSummarySchema, paginated=True)
def list_partners(request):
    return services.list_partners(request, request.query)


@operation(partner, "GET", summary="Get a partner with its members, plan and overrides",
           auth=AUTH_ADMIN, permission="partners:read", response=schemas.PartnerDetailSchema,
           errors=NOT_FOUND)
def get_partner(request):
    return _detail(request, services.get_partner(request, _partner_id(request)))


@operation(verification, "POST", summary="Approve or reject a submitted verification",
           auth=AUTH_ADMIN, permission="partners:verify", body=schemas.VerificationDecisionBody,
           response=schemas.PartnerDetailSchema,
           errors=NOT_FOUND + PARTNER_DELETED + ((409, "verification_not_submitted"),))
def decide_verification(request):
    data = request.validated
    decided = services.decide_verification(request, _partner_id(request), data["decision"],
                                           data.get("reason"))
    return _detail(request, decided)


@operation(suspend, "POST", summary="Suspend a partner; its keys and login tokens stop working",
           auth=AUTH_ADMIN, permission="partners:suspend", body=schemas.SuspendBody,
           response=schemas.PartnerDetailSchema,
           errors=NOT_FOUND + PARTNER_DELETED + ((409, "partner_already_suspended"),))
def suspend_partner(request):
    suspended = services.suspend_partner(request, _partner_id(request),
                                         request.validated["reason"])
    return _detail(request, suspended)


@operation(reactivate, "POST", summary="Lift a partner's suspension", auth=AUTH_ADMIN,
           permission="partners:suspend", body=schemas.ReactivateBody,
           response=schemas.PartnerDetailSchema,
           errors=NOT_FOUND + PARTNER_DELETED + ((409, "partner_not_suspended"),))
def reactivate_partner(request):
    reactivated = services.reactivate_partner(request, _partner_id(request),
                                              request.validated.get("reason"))
    return _detail(request, reactivated)


@operation(overrides, "PUT", summary="Set a partner's plan, rate-limit overrides or commission",
           auth=AUTH_ADMIN, permission="partners:overrides", body=schemas.OverridesBody,
           response=schemas.PartnerDetailSchema, errors=NOT_FOUND + PARTNER_DELETED)
def put_overrides(request):
    changed = services.set_overrides(request, _partner_id(request), dict(request.validated))
    return _detail(request, changed)


@operation(partner_keys, "GET", summary="List a partner's API keys (metadata only), newest first",
           auth=AUTH_ADMIN, permission="partners:read", query=schemas.PartnerKeysQuery,
           response=ApiKeySchema, paginated=True, errors=NOT_FOUND)
def list_partner_keys(request):
    found = services.get_partner(request, _partner_id(request))
    select = services.partner_records_query(ApiKey, found.id, request.query)
    return paginate(select, ApiKey.id, request.query, request.dbsession)


@operation(partner_webhooks, "GET", summary="List a partner's webhook endpoints, newest first",
           auth=AUTH_ADMIN, permission="partners:read", query=schemas.PartnerWebhooksQuery,
           response=WebhookSchema, paginated=True, errors=NOT_FOUND)
def list_partner_webhooks(request):
    found = services.get_partner(request, _partner_id(request))
    select = services.partner_records_query(Webhook, found.id, request.query)
    return paginate(select, Webhook.id, request.query, request.dbsession)


@operation(partner_tickets, "GET", summary="List a partner's support tickets, newest first",
           auth=AUTH_ADMIN, permission="tickets:read", query=PageQuery,
           response=schemas.TicketSummarySchema, paginated=True, errors=NOT_FOUND)
def list_partner_tickets(request):
    found = services.get_partner(request, _partner_id(request))
    select = sa.select(SupportTicket).where(SupportTicket.partner_id == found.id)
    return paginate(select, SupportTicket.id, request.query, request.dbsession)


# Admin users ------------------------------------------------------------------


def _admin_id(request) -> int:
    return parse_id("admin", request.matchdict["id"], noun="admin")


@operation(admins, "GET", summary="List admin users, newest first", auth=AUTH_ADMIN,
           permission="admins:read", query=schemas.AdminListQuery,
           response=schemas.AdminUserSchema, paginated=True)
def list_admins(request):
    return paginate(services.admins_query(request.query), AdminUser.id, request.query,
                    request.dbsession)


@operation(admins, "POST", summary="Create an admin user", auth=AUTH_ADMIN,
           permission="admins:write", body=schemas.CreateAdminBody,
           response=schemas.AdminUserSchema, status=201, errors=((409, "email_taken"),))
def create_admin(request):
    return services.create_admin(request, dict(request.validated))


@operation(admin_item, "GET", summary="Get one admin user", auth=AUTH_ADMIN,
           permission="admins:read", response=schemas.AdminUserSchema, errors=NOT_FOUND)
def get_admin(request):
    return services.get_admin(request, _admin_id(request))


@operation(admin_item, "PUT", summary="Change an admin's name, role or status", auth=AUTH_ADMIN,
           permission="admins:write", body=schemas.UpdateAdminBody,
           response=schemas.AdminUserSchema, errors=(*NOT_FOUND, (409, "last_superadmin")))
def update_admin(request):
    return services.update_admin(request, _admin_id(request), dict(request.validated))


# Audit log --------------------------------------------------------------------


@operation(audit_log, "GET", summary="List the audit log with filters, newest first",
           auth=AUTH_ADMIN, permission="audit:read", query=schemas.AdminAuditQuery,
           response=AuditEntrySchema, paginated=True)
def list_audit_log(request):
    return paginate(services.audit_log_query(request.query), AuditEntry.id, request.query,
                    request.dbsession)


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
