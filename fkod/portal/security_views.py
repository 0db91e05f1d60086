"""The account security page: change the password, turn the second factor on or off.

Each form calls the same function as its ``/api/auth/…`` operation, so the
rules (password length, a new password that differs, the password asked again
before the second factor changes, codes used once) are those of the API.
"""

from __future__ import annotations

from pyramid.httpexceptions import HTTPSeeOther

from fkod.core.auth import accounts
from fkod.core.auth.account_views import ChangePasswordBody, TotpDisableBody, TotpEnableBody
from fkod.core.errors import ApiError
from fkod.portal import forms
from fkod.portal.access import PortalMember, require_user
from fkod.portal.rendering import render

SECURITY_PATH = "/portal/account/security"

ROUTES = (
    ("portal_account_security", SECURITY_PATH, "security_page", ("GET",),
     "Show the account's password and second-factor settings"),
    ("portal_account_password", "/portal/account/password", "change_password", ("POST",),
     "Change the password; other sessions and login tokens end"),
    ("portal_account_totp_setup", "/portal/account/totp/setup", "totp_setup", ("POST",),
     "Create a new authenticator secret to scan, not yet turned on"),
    ("portal_account_totp_enable", "/portal/account/totp/enable", "totp_enable", ("POST",),
     "Turn the second factor on with the password and a current code"),
    ("portal_account_totp_disable", "/portal/account/totp/disable", "totp_disable", ("POST",),
     "Turn the second factor off with the password and a current code"),
)


def _page(request, user, *, status: int = 200, form: forms.Form | None = None,
          which: str | None = None, setup: dict | None = None):
    # The navigation of a partner member, or of a customer.
    row = accounts.find_membership(request.dbsession, user.id)
    member = PortalMember(user=user, partner=row[1], role=row[0].role) if row else None
    return render(request, "account_security.html", status=status, account=user,
                  member=member, customer=None if member else user,
                  form=form or forms.Form(), blank=forms.Form(), which=which, setup=setup,
                  nav="account")


def _submit(request, schema, which: str, action):
    """Load the form with ``schema`` and run ``action``; show the page again on an error."""
    user = require_user(request)
    # Account actions audit under the token's partner; the portal has no token.
    request.login_claims = {}
    posted = forms.posted_values(request)
    form = forms.Form(values={})
    loaded = forms.load(schema(), posted, form)
    if loaded is not None:
        try:
            action(loaded)
        except ApiError as error:
            request.tm.doom()
            forms.add_api_error(form, error)
    if not form.valid:
        return _page(request, user, status=400, form=form, which=which)
    return None


def security_page(request):
    return _page(request, require_user(request))


def change_password(request):
    def change(loaded):
        accounts.change_password(request, current_password=loaded["current_password"],
                                 new_password=loaded["new_password"])

    failed = _submit(request, ChangePasswordBody, "password", change)
    if failed is not None:
        return failed
    # The change ends every session, this one included; sign this browser in again.
    request.portal_session.log_in(request.user)
    request.portal_session.flash("Password changed. Other sessions and login tokens have "
                                 "ended.")
    return HTTPSeeOther(location=SECURITY_PATH)


def totp_setup(request):
    user = require_user(request)
    request.login_claims = {}
    try:
        setup = accounts.start_totp_setup(request)
    except ApiError as error:
        request.tm.doom()
        request.portal_session.flash(error.message, "error")
        return HTTPSeeOther(location=SECURITY_PATH)
    return _page(request, user, which="enable", setup=setup)


def totp_enable(request):
    def enable(loaded):
        accounts.enable_totp(request, password=loaded["password"], code=loaded["code"])

    failed = _submit(request, TotpEnableBody, "enable", enable)
    if failed is not None:
        return failed
    request.portal_session.flash("Two-factor authentication is on. Login now asks for a code.")
    return HTTPSeeOther(location=SECURITY_PATH)


def totp_disable(request):
    def disable(loaded):
        accounts.disable_totp(request, password=loaded["password"], code=loaded["code"])

    failed = _submit(request, TotpDisableBody, "disable", disable)
    if failed is not None:
        return failed
    request.portal_session.flash("Two-factor authentication is off.")
    return HTTPSeeOther(location=SECURITY_PATH)
