"""Team pages: the members with their roles, invitations, and accepting an invitation.

Every change goes through :mod:`fkod.partners.members`, the module behind
``/api/partners/members`` and ``/api/partners/invitations``, so its rules
hold here too: the last owner can be neither removed nor demoted, and only
an owner grants, takes away or removes the owner role.
"""

from __future__ import annotations

from pyramid.httpexceptions import HTTPSeeOther

from fkod.core.api import paginate
from fkod.core.auth.models import MEMBER_ROLES, PartnerMember
from fkod.core.errors import ApiError
from fkod.core.ids import parse_id
from fkod.partners import members
from fkod.partners.account_schemas import (
    AcceptInvitationBody,
    CreateInvitationBody,
    UpdateMemberBody,
)
from fkod.partners.models import PartnerInvitation
from fkod.portal import forms
from fkod.portal.access import check_csrf, limit_address, require_member
from fkod.portal.rendering import render

ROUTES = (
    ("portal_team", "/portal/team", "team_list", ("GET", "POST"),
     "List the partner's members and pending invitations, or invite someone"),
    ("portal_member_role", "/portal/team/members/{id}/role", "member_role", ("POST",),
     "Change a member's role"),
    ("portal_member_remove", "/portal/team/members/{id}/remove", "member_remove", ("POST",),
     "Remove a member from the team, or leave it"),
    ("portal_invitation_revoke", "/portal/team/invitations/{id}/revoke", "invitation_revoke",
     ("POST",),
     "Revoke a pending invitation"),
    ("portal_invitation_accept", "/portal/invitations/accept", "invitation_accept",
     ("GET", "POST"),
     "Accept an invitation with the token from its mail"),
)
PUBLIC_PAGES = frozenset({"portal_invitation_accept"})

# Pending invitations shown under the members, newest first. A partner may have up to
# members.MAX_PENDING_INVITATIONS, so older ones are listed only by the API.
SHOWN_INVITATIONS = 50


def _member_id(request) -> int:
    return parse_id("user", request.matchdict["id"], noun="member")


def _team_page(request, invite: forms.Form | None = None, status: int = 200):
    member = request.portal_member
    page = paginate(members.members_query(member.partner), PartnerMember.id,
                    forms.page_query(request), request.dbsession, descending=False)
    pending = request.dbsession.scalars(
        members.invitations_query(member.partner, "pending")
        .order_by(PartnerInvitation.id.desc()).limit(SHOWN_INVITATIONS)).all()
    return render(request, "team.html", status=status, members=page.items,
                  next_cursor=page.next_cursor, invitations=pending, roles=MEMBER_ROLES,
                  invite=invite or forms.Form(values={"role": "developer"}), nav="team")


def team_list(request):
    if request.method == "POST":
        return _invite(request)
    require_member(request, "members:read")
    return _team_page(request)


def _invite(request):
    require_member(request, "members:write")
    posted = forms.posted_values(request)
    form = forms.Form(values={"email": posted.get("email", ""), "role": posted.get("role", "")})
    data = {name: posted[name] for name in ("email", "role") if name in posted}
    loaded = forms.load(CreateInvitationBody(), data, form)
    if loaded is None:
        request.tm.doom()
        return _team_page(request, invite=form, status=400)
    try:
        invitation = members.invite(request, loaded["email"], loaded["role"])
    except ApiError as error:
        forms.add_api_error(form, error)
        request.tm.doom()
        return _team_page(request, invite=form, status=error.status)
    request.portal_session.flash(f"An invitation to join as {invitation.role} was mailed to "
                                 f"{invitation.email}.")
    return HTTPSeeOther(location=request.route_path("portal_team"))


def _flash_failure(request, action: str, message: str):
    request.tm.doom()
    request.portal_session.flash(f"{action} failed: {message}", "error")
    return HTTPSeeOther(location=request.route_path("portal_team"))


def member_role(request):
    require_member(request, "members:write")
    user_id = _member_id(request)
    form = forms.Form()
    loaded = forms.load(UpdateMemberBody(), forms.posted_values(request), form)
    if loaded is None:
        # Only a crafted form sends another role than the choices offered.
        return _flash_failure(request, "Changing the role",
                        " ".join(form.field_errors("role") or form.form_errors()))
    try:
        changed = members.change_role(request, user_id, loaded["role"])
    except ApiError as error:
        if error.status in (403, 404):
            raise
        return _flash_failure(request, "Changing the role", error.message)
    request.portal_session.flash(f"{changed.user.email} is now {changed.role}.")
    return HTTPSeeOther(location=request.route_path("portal_team"))


def member_remove(request):
    # Any member may leave, so the service checks members:write for removing someone else.
    member = require_member(request)
    user_id = _member_id(request)
    try:
        removed = members.get_member(request, user_id)
        email = removed.user.email
        members.remove_member(request, user_id)
    except ApiError as error:
        if error.status in (403, 404):
            raise
        return _flash_failure(request, "Removing the member", error.message)
    if user_id == member.user.id:
        request.portal_session.log_out()
        request.portal_session.flash(f"You left {member.partner.company_name}.", "info")
        return HTTPSeeOther(location=request.route_path("portal_login"))
    request.portal_session.flash(f"{email} is removed from the team.")
    return HTTPSeeOther(location=request.route_path("portal_team"))


def invitation_revoke(request):
    require_member(request, "members:write")
    invitation_id = parse_id("inv", request.matchdict["id"], noun="invitation")
    try:
        invitation = members.revoke_invitation(request, invitation_id)
    except ApiError as error:
        if error.status == 404:
            raise
        return _flash_failure(request, "Revoking the invitation", error.message)
    request.portal_session.flash(f"The invitation for {invitation.email} is revoked.")
    return HTTPSeeOther(location=request.route_path("portal_team"))


# Accepting ---------------------------------------------------------------------------------


def _accept_page(request, token: str, form: forms.Form, status: int = 200):
    return render(request, "invitation_accept.html", status=status, form=form, token=token,
                  signed_in=request.portal_session.user())


def invitation_accept(request):
    """Accept an invitation: as the signed-in user, or by creating the invited account.

    The token stays in the page's form, because the link from the mail carries it.
    """
    token = request.params.get("token", "")
    if not isinstance(token, str):
        token = ""
    form = forms.Form()
    if request.method == "GET":
        return _accept_page(request, token, form)

    check_csrf(request)
    limit_address(request)
    session_user = request.portal_session.user()
    posted = forms.posted_values(request)
    form.values = {"name": posted.get("name", "")}
    data = {} if session_user is not None else \
        {name: posted[name] for name in ("name", "password") if name in posted}
    if session_user is None:
        for name, label in (("name", "Enter your name."), ("password", "Choose a password.")):
            if name not in data:
                form.add_error(name, label)
    loaded = forms.load(AcceptInvitationBody(), data, form) if form.valid else None
    if loaded is None:
        return _accept_page(request, token, form, status=400)
    try:
        result = members.accept_invitation(request, token, dict(loaded),
                                           signed_in_user=session_user)
    except ApiError as error:
        request.tm.doom()
        form.add_error(forms.FORM, error.message)
        return _accept_page(request, token, form, status=error.status)

    if session_user is None:
        request.portal_session.log_in(request.user)
    request.portal_session.flash(f"You joined {result['company_name']} as {result['role']}.")
    return HTTPSeeOther(location=request.route_path("portal_dashboard"))
