"""Account pages: sign up, log in (with the second factor), log out, password reset, email.

Each form loads the JSON API's schema for the same operation and calls the
same service function. A form with errors is shown again with the typed
values (never a password) and a 400, or the status of the service's error.
"""

from __future__ import annotations

import logging

from pyramid.httpexceptions import HTTPSeeOther

from fkod.core.auth import account_mail, accounts
from fkod.core.auth.account_views import (
    PasswordResetBody,
    PasswordResetConfirmBody,
    VerifyEmailBody,
)
from fkod.core.auth.views import LoginBody
from fkod.core.errors import ApiError, RateLimited
from fkod.partners import services
from fkod.partners.schemas import RegisterPartnerBody
from fkod.portal import forms
from fkod.portal.access import check_csrf, landing_path, limit_address, safe_next
from fkod.portal.rendering import render

log = logging.getLogger(__name__)

SIGNUP_FIELDS = ("company_name", "name", "email", "password")


def _form_failed(request, template: str, form: forms.Form, status: int = 400, **values):
    # Nothing the failed form started may be committed.
    request.tm.doom()
    return render(request, template, status=status, form=form, **values)


def signup(request):
    form = forms.Form()
    if request.method == "GET":
        return render(request, "signup.html", form=form)

    check_csrf(request)
    limit_address(request)
    posted = forms.posted_values(request)
    form.values = {name: posted.get(name, "") for name in SIGNUP_FIELDS if name != "password"}
    data = {name: posted[name] for name in SIGNUP_FIELDS if name in posted}
    loaded = forms.load(RegisterPartnerBody(), data, form)
    if loaded is None:
        return _form_failed(request, "signup.html", form)
    try:
        partner, user = services.register_partner(request, dict(loaded))
    except ApiError as error:
        forms.add_api_error(form, error)
        return _form_failed(request, "signup.html", form, status=error.status)

    request.portal_session.flash(
        f"{partner.company_name} is registered. We sent a link to {user.email} to verify "
        "the address; log in to continue.")
    return HTTPSeeOther(location=request.route_path("portal_login",
                                                    _query={"email": user.email}))


def login(request):
    session = request.portal_session
    # Without a next page, a login lands on the dashboard or, for a customer, the marketplace.
    next_path = safe_next(request.params["next"]) if request.params.get("next") else ""
    form = forms.Form(values={"email": request.GET.get("email", "")})
    if request.method == "GET":
        if session.user() is not None:
            return HTTPSeeOther(location=next_path or landing_path(request, session.user()))
        return render(request, "login.html", form=form, ask_totp=False, next_path=next_path)

    check_csrf(request)
    limit_address(request)
    posted = forms.posted_values(request)
    form.values = {"email": posted.get("email", "")}
    ask_totp = "totp_code" in request.POST
    data = {name: posted[name] for name in ("email", "password", "totp_code") if name in posted}
    loaded = forms.load(LoginBody(), data, form)
    if loaded is None:
        return render(request, "login.html", status=400, form=form, ask_totp=ask_totp,
                      next_path=next_path)
    try:
        result = accounts.log_in(request, email=loaded["email"], password=loaded["password"],
                                 totp_code=loaded.get("totp_code"), partner_id=None)
    except RateLimited as error:
        form.add_error(forms.FORM, error.message)
        response = render(request, "login.html", status=429, form=form, ask_totp=ask_totp,
                          next_path=next_path)
        response.headers["Retry-After"] = str(error.retry_after)
        return response

    if isinstance(result, ApiError):
        # Not doomed: the failed login's audit entry must commit.
        if result.code == "totp_required":
            form.add_error("totp_code", "Enter the 6-digit code from your authenticator app.")
            return render(request, "login.html", status=401, form=form, ask_totp=True,
                          next_path=next_path)
        form.add_error(forms.FORM, result.message)
        return render(request, "login.html", status=result.status, form=form,
                      ask_totp=ask_totp, next_path=next_path)

    session.log_in(request.user)
    log.info("portal login", extra={"user_id": request.user.id})
    return HTTPSeeOther(location=next_path or landing_path(request, request.user))


def logout(request):
    session = request.portal_session
    user = session.user()
    if user is None:
        return HTTPSeeOther(location=request.route_path("portal_login"))
    check_csrf(request)
    request.user = user
    everywhere = request.POST.get("everywhere") == "true"
    if everywhere:
        # The portal session has no token id to revoke, and "everywhere" needs none.
        request.login_claims = {}
        accounts.log_out(request, everywhere=True)
    else:
        accounts.record_account_action(request, "auth.logout", user,
                                       details={"everywhere": False, "portal": True})
    session.log_out()
    session.flash("You are logged out everywhere." if everywhere else "You are logged out.",
                  "info")
    return HTTPSeeOther(location=request.route_path("portal_login"))


def password_reset_request(request):
    form = forms.Form()
    if request.method == "GET":
        return render(request, "password_reset_request.html", form=form)

    check_csrf(request)
    limit_address(request)
    posted = forms.posted_values(request)
    form.values = {"email": posted.get("email", "")}
    loaded = forms.load(PasswordResetBody(), {"email": posted.get("email", "")}, form)
    if loaded is None:
        return _form_failed(request, "password_reset_request.html", form)
    account_mail.request_password_reset(request, loaded["email"])
    request.portal_session.flash(
        "If an account uses this email, a reset link is on its way. It works once.", "info")
    return HTTPSeeOther(location=request.route_path("portal_login"))


def password_reset_confirm(request):
    token = request.params.get("token", "")
    form = forms.Form()
    if request.method == "GET":
        return render(request, "password_reset_confirm.html", form=form, token=token)

    check_csrf(request)
    limit_address(request)
    posted = forms.posted_values(request)
    data = {name: posted[name] for name in ("token", "new_password") if name in posted}
    loaded = forms.load(PasswordResetConfirmBody(), data, form)
    if loaded is None:
        return _form_failed(request, "password_reset_confirm.html", form, token=token)
    try:
        account_mail.confirm_password_reset(request, token=loaded["token"],
                                            new_password=loaded["new_password"])
    except ApiError as error:
        forms.add_api_error(form, error, fields={"token": forms.FORM})
        return _form_failed(request, "password_reset_confirm.html", form, status=error.status,
                            token=token)
    request.portal_session.log_out()
    request.portal_session.flash("Your password is changed, and every session of the account "
                                 "is logged out. Log in with the new password.")
    return HTTPSeeOther(location=request.route_path("portal_login"))


def verify_email(request):
    """Show a button that verifies the address (GET), and verify it (POST).

    The GET changes nothing, because mail scanners open links before people do.
    """
    token = request.params.get("token", "")
    form = forms.Form()
    if request.method == "GET":
        return render(request, "verify_email.html", form=form, token=token)

    check_csrf(request)
    limit_address(request)
    posted = forms.posted_values(request)
    loaded = forms.load(VerifyEmailBody(), {"token": posted.get("token", "")}, form)
    if loaded is None:
        form.errors = {forms.FORM: ["The link has no token; open the link from the mail again."]}
        return _form_failed(request, "verify_email.html", form, token=token)
    try:
        user = account_mail.verify_email(request, loaded["token"])
    except ApiError as error:
        forms.add_api_error(form, error, fields={"token": forms.FORM})
        return _form_failed(request, "verify_email.html", form, status=error.status,
                            token=token)
    request.portal_session.flash(f"{user.email} is verified.")
    target = "portal_dashboard" if request.portal_session.user() else "portal_login"
    return HTTPSeeOther(location=request.route_path(target))
