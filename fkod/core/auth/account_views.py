"""Account operations under ``/api/auth/``: logout, password, email, second factor, the caller.

Password reset and email verification need no credential (the mailed token
is the proof); everything else takes a login access token of any user.
"""

from __future__ import annotations

import marshmallow
from cornice import Service
from marshmallow import fields, validate

from fkod.core.api import AUTH_NONE, AUTH_USER, operation
from fkod.core.auth import account_mail, accounts, totp
from fkod.core.auth.passwords import MAX_LENGTH, MIN_LENGTH
from fkod.core.auth.views import LoginResponse
from fkod.core.schemas import (
    BodySchema,
    EmptyBody,
    PublicId,
    ResponseSchema,
    StrictBoolean,
    Text,
    Timestamp,
)

# Mailed tokens are 43 characters; anything much longer is not one.
MAX_TOKEN_LENGTH = 128

register = Service(name="auth_register", path="/api/auth/register",
                   description="Customer sign-up")
logout = Service(name="auth_logout", path="/api/auth/logout", description="Log out")
password = Service(name="auth_password", path="/api/auth/password",
                   description="Change the password")
password_reset = Service(name="auth_password_reset", path="/api/auth/password-reset",
                         description="Ask for a password-reset link")
password_reset_confirm = Service(name="auth_password_reset_confirm",
                                 path="/api/auth/password-reset/confirm",
                                 description="Set a new password with a reset token")
email_verify = Service(name="auth_email_verify", path="/api/auth/email/verify",
                       description="Verify an email address with a mailed token")
email_resend = Service(name="auth_email_resend", path="/api/auth/email/resend",
                       description="Mail a new verification link")
me = Service(name="auth_me", path="/api/auth/me", description="The caller's account")
me_email = Service(name="auth_me_email", path="/api/auth/me/email",
                   description="Change the account's email")
totp_setup = Service(name="auth_totp_setup", path="/api/auth/totp/setup",
                     description="Start setting up an authenticator app")
totp_enable = Service(name="auth_totp_enable", path="/api/auth/totp/enable",
                      description="Turn two-factor authentication on")
totp_disable = Service(name="auth_totp_disable", path="/api/auth/totp/disable",
                       description="Turn two-factor authentication off")

SERVICES = (register, logout, password, password_reset, password_reset_confirm, email_verify,
            email_resend, me, me_email, totp_setup, totp_enable, totp_disable)


# Fields -------------------------------------------------------------------------------


class EmailAddress(Text):
    """An email address, lower-cased."""

    def __init__(self, **kwargs):
        super().__init__(max_length=255, validate=[validate.Email(
            error="Not a valid email address.")], **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).lower()


def new_password_field() -> Text:
    """Build the field of a new password, with the same rules as at sign-up."""
    return Text(required=True, strip=False, min_length=MIN_LENGTH, max_length=MAX_LENGTH)


def current_password_field() -> Text:
    return Text(required=True, strip=False, max_length=MAX_LENGTH)


def mailed_token_field() -> Text:
    return Text(required=True, min_length=1, max_length=MAX_TOKEN_LENGTH)


def totp_code_field() -> Text:
    return Text(required=True, validate=validate.Regexp(
        totp.CODE_PATTERN, error="Must be the 6-digit code from the authenticator app."))


# Bodies -------------------------------------------------------------------------------


class RegisterBody(BodySchema):
    email = EmailAddress(required=True)
    password = new_password_field()
    name = Text(max_length=255)


class LogoutBody(BodySchema):
    everywhere = StrictBoolean(load_default=False, metadata={
        "description": "End every session of the account, not only this token."})


class ChangePasswordBody(BodySchema):
    current_password = current_password_field()
    new_password = new_password_field()

    @marshmallow.validates_schema
    def _differs(self, data, **kwargs):
        if data.get("new_password") is not None \
                and data.get("new_password") == data.get("current_password"):
            raise marshmallow.ValidationError(
                {"new_password": ["Must differ from the current password."]})


class PasswordResetBody(BodySchema):
    email = EmailAddress(required=True)


class PasswordResetConfirmBody(BodySchema):
    token = mailed_token_field()
    new_password = new_password_field()


class VerifyEmailBody(BodySchema):
    token = mailed_token_field()


class ChangeEmailBody(BodySchema):
    email = EmailAddress(required=True)
    password = current_password_field()


class TotpEnableBody(BodySchema):
    # The password too, so a stolen session alone cannot lock the owner out.
    password = current_password_field()
    code = totp_code_field()


class TotpDisableBody(BodySchema):
    password = current_password_field()
    code = totp_code_field()


# Responses ----------------------------------------------------------------------------


class MessageResponse(ResponseSchema):
    message = fields.String()


class VerifiedResponse(ResponseSchema):
    email = fields.String()
    email_verified = fields.Boolean()


class MembershipSummary(ResponseSchema):
    partner_id = PublicId("partner")
    company_name = fields.String()
    role = fields.String()
    partner_status = fields.String()


class AccountResponse(ResponseSchema):
    id = PublicId("user")
    email = fields.String()
    name = fields.String(allow_none=True)
    email_verified = fields.Boolean()
    email_verified_at = Timestamp(allow_none=True)
    pending_email = fields.String(allow_none=True)
    totp_enabled = fields.Boolean()
    password_changed_at = Timestamp(allow_none=True)
    created_at = Timestamp()
    memberships = fields.List(fields.Nested(MembershipSummary))


class TotpSetupResponse(ResponseSchema):
    secret = fields.String(metadata={"description": "base32, for typing into the app"})
    otpauth_uri = fields.String(metadata={"description": "otpauth:// URI for a QR code"})


# Sessions and passwords -------------------------------------------------------------------


@operation(register, "POST", summary="Create a customer account and mail its verification link",
           auth=AUTH_NONE, body=RegisterBody, response=AccountResponse, status=201,
           no_store=True, errors=((409, "email_taken"),))
def post_register(request):
    data = request.validated
    user = accounts.create_platform_user(request, email=data["email"], password=data["password"],
                                         name=data.get("name"))
    request.user = user
    accounts.record_account_action(request, "auth.registered", user)
    account_mail.send_email_verification(request, user, user.email)
    return accounts.account_summary(request, user)


@operation(logout, "POST", summary="Revoke the login token, or every session of the account",
           auth=AUTH_USER, body=LogoutBody, status=204)
def post_logout(request):
    accounts.log_out(request, everywhere=request.validated["everywhere"])


@operation(password, "POST", summary="Change the password and get a new login token",
           auth=AUTH_USER, body=ChangePasswordBody, response=LoginResponse, no_store=True,
           errors=((400, "invalid_password"), (429, "too_many_failed_logins")))
def post_password(request):
    data = request.validated
    return accounts.change_password(request, current_password=data["current_password"],
                                    new_password=data["new_password"])


@operation(password_reset, "POST", summary="Mail a password-reset link if the account exists",
           auth=AUTH_NONE, body=PasswordResetBody, response=MessageResponse, status=202)
def post_password_reset(request):
    account_mail.request_password_reset(request, request.validated["email"])
    return {"message": "If an account uses this email, a reset link is on its way."}


@operation(password_reset_confirm, "POST", summary="Set a new password with a mailed token",
           auth=AUTH_NONE, body=PasswordResetConfirmBody, response=MessageResponse,
           no_store=True, errors=((400, "invalid_token"),))
def post_password_reset_confirm(request):
    data = request.validated
    account_mail.confirm_password_reset(request, token=data["token"],
                                    new_password=data["new_password"])
    return {"message": "The password is changed; log in with it."}


# Email --------------------------------------------------------------------------------


@operation(email_verify, "POST", summary="Verify an email address with a mailed token",
           auth=AUTH_NONE, body=VerifyEmailBody, response=VerifiedResponse, no_store=True,
           errors=((400, "invalid_token"), (409, "email_taken")))
def post_email_verify(request):
    user = account_mail.verify_email(request, request.validated["token"])
    return {"email": user.email, "email_verified": True}


@operation(email_resend, "POST", summary="Mail a new link to the unverified or pending address",
           auth=AUTH_USER, body=EmptyBody, response=MessageResponse, status=202,
           errors=((409, "email_already_verified"),))
def post_email_resend(request):
    address = account_mail.resend_email_verification(request)
    return {"message": f"A verification link is on its way to {address}."}


@operation(me_email, "PUT", summary="Change the email once the new address is verified",
           auth=AUTH_USER, body=ChangeEmailBody, response=AccountResponse, status=202,
           no_store=True, errors=((400, "invalid_password"), (409, "email_taken"),
                                  (429, "too_many_failed_logins")))
def put_me_email(request):
    data = request.validated
    user = account_mail.request_email_change(request, email=data["email"],
                                             password=data["password"])
    return accounts.account_summary(request, user)


@operation(me, "GET", summary="Get the caller's account", auth=AUTH_USER,
           response=AccountResponse, no_store=True)
def get_me(request):
    return accounts.account_summary(request)


# Second factor ------------------------------------------------------------------------


@operation(totp_setup, "POST", summary="Create an authenticator secret, not yet enabled",
           auth=AUTH_USER, body=EmptyBody, response=TotpSetupResponse, no_store=True,
           errors=((409, "totp_already_enabled"),))
def post_totp_setup(request):
    return accounts.start_totp_setup(request)


@operation(totp_enable, "POST", summary="Turn two-factor authentication on with a code",
           auth=AUTH_USER, body=TotpEnableBody, response=AccountResponse, no_store=True,
           errors=((400, "invalid_password"), (400, "invalid_totp_code"),
                   (409, "totp_not_set_up"), (409, "totp_already_enabled")))
def post_totp_enable(request):
    user = accounts.enable_totp(request, password=request.validated["password"],
                                code=request.validated["code"])
    return accounts.account_summary(request, user)


@operation(totp_disable, "POST", summary="Turn two-factor authentication off",
           auth=AUTH_USER, body=TotpDisableBody, response=AccountResponse, no_store=True,
           errors=((400, "invalid_password"), (400, "invalid_totp_code"),
                   (409, "totp_not_enabled"), (429, "too_many_failed_logins")))
def post_totp_disable(request):
    data = request.validated
    user = accounts.disable_totp(request, password=data["password"], code=data["code"])
    return accounts.account_summary(request, user)


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
