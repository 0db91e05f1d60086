"""Cornice services of a partner's team: members, invitations and accepting an invitation.

Members are named by their user id (``user_…``) and invitations ``inv_…``.
Another partner's member or invitation is a 404. ``POST /api/partners/members``
and ``POST /api/partners/invitations`` are the same operation: a member joins
only by accepting an invitation.
"""

from __future__ import annotations

from cornice import Service

from fkod.core.api import AUTH_MEMBER, AUTH_NONE, PageQuery, operation, paginate
from fkod.core.auth.models import PartnerMember
from fkod.core.ids import parse_id
from fkod.partners import account_schemas as schemas
from fkod.partners import members
from fkod.partners.models import PartnerInvitation

member_collection = Service(name="partner_members", path="/api/partners/members",
                            description="The partner's team members")
member_item = Service(name="partner_member", path="/api/partners/members/{id}",
                      description="One team member")
invitation_collection = Service(name="partner_invitations", path="/api/partners/invitations",
                                description="Invitations to join the partner's team")
invitation_item = Service(name="partner_invitation", path="/api/partners/invitations/{id}",
                          description="One invitation")
accept = Service(name="partner_invitation_accept",
                 path="/api/partners/invitations/{token}/accept",
                 description="Accept an invitation with the token from its mail")

SERVICES = (member_collection, member_item, invitation_collection, invitation_item, accept)
NOT_FOUND = ((404, "not_found"),)
OWNER_REQUIRED = ((403, "owner_required"),)


def _user_id(request) -> int:
    return parse_id("user", request.matchdict["id"], noun="member")


def _invitation_id(request) -> int:
    return parse_id("inv", request.matchdict["id"], noun="invitation")


@operation(member_collection, "GET", summary="List the partner's members, oldest first",
           auth=AUTH_MEMBER, permission="members:read", query=PageQuery,
           response=schemas.MemberSchema, paginated=True)
def list_members(request):
    return paginate(members.members_query(request.partner), PartnerMember.id, request.query,
                    request.dbsession, descending=False)


@operation(member_item, "PUT", summary="Change a member's role; only an owner grants or "
                                       "takes away the owner role",
           auth=AUTH_MEMBER, permission="members:write", body=schemas.UpdateMemberBody,
           response=schemas.MemberSchema,
           errors=NOT_FOUND + OWNER_REQUIRED + ((409, "last_owner"),))
def update_member(request):
    return members.change_role(request, _user_id(request), request.validated["role"])


@operation(member_item, "DELETE", summary="Remove a member (members:write), or leave the "
                                          "partner (any member, with their own id)",
           auth=AUTH_MEMBER, status=204,
           errors=NOT_FOUND + OWNER_REQUIRED + ((403, "missing_permission"), (409, "last_owner")))
def remove_member(request):
    members.remove_member(request, _user_id(request))


@operation(member_collection, "POST", summary="Invite someone to the team by email; the same "
                                              "as POST /api/partners/invitations",
           auth=AUTH_MEMBER, permission="members:write", body=schemas.CreateInvitationBody,
           response=schemas.InvitationSchema, status=201,
           errors=(*OWNER_REQUIRED, (409, "already_member"), (409, "too_many_invitations")))
@operation(invitation_collection, "POST", summary="Invite someone to the team by email; the "
                                                  "link in the mail expires after "
                                                  "fkod.partners.invitation_ttl_seconds",
           auth=AUTH_MEMBER, permission="members:write", body=schemas.CreateInvitationBody,
           response=schemas.InvitationSchema, status=201,
           errors=(*OWNER_REQUIRED, (409, "already_member"), (409, "too_many_invitations")))
def create_invitation(request):
    data = request.validated
    return members.invite(request, data["email"], data["role"])


@operation(invitation_collection, "GET", summary="List the partner's invitations, newest first",
           auth=AUTH_MEMBER, permission="members:read", query=schemas.InvitationQuery,
           response=schemas.InvitationSchema, paginated=True)
def list_invitations(request):
    select = members.invitations_query(request.partner, request.query.get("status"))
    return paginate(select, PartnerInvitation.id, request.query, request.dbsession)


@operation(invitation_item, "DELETE", summary="Revoke an invitation; its link stops working",
           auth=AUTH_MEMBER, permission="members:write", response=schemas.InvitationSchema,
           errors=(*NOT_FOUND, (409, "invitation_accepted")))
def revoke_invitation(request):
    return members.revoke_invitation(request, _invitation_id(request))


@operation(accept, "POST", summary="Accept an invitation: with a login token of the invited "
                                   "account, or with name and password to create it",
           auth=AUTH_NONE, body=schemas.AcceptInvitationBody,
           response=schemas.AcceptedInvitationSchema, no_store=True,
           errors=((404, "invitation_not_found"), (400, "invitation_expired"),
                   (400, "invitation_revoked"), (400, "invitation_used"),
                   (401, "invalid_token"), (403, "invitation_email_mismatch"),
                   (403, "partner_suspended"), (409, "account_exists"),
                   (409, "already_member")))
def accept_invitation(request):
    return members.accept_invitation(request, request.matchdict["token"],
                                     dict(request.validated))


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
