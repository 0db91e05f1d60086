"""Request and response schemas of the team, verification and data-rights operations."""

from __future__ import annotations

import base64
import binascii

import marshmallow
from marshmallow import fields, validate

from fkod.core.api import PageQuery, UploadedFile
from fkod.core.auth.models import MEMBER_ROLES
from fkod.core.auth.passwords import MAX_LENGTH as PASSWORD_MAX
from fkod.core.auth.passwords import MIN_LENGTH as PASSWORD_MIN
from fkod.core.schemas import BodySchema, PublicId, ResponseSchema, Text, Timestamp
from fkod.partners.members import invitation_status
from fkod.partners.schemas import Email, LinkUrl

INVITATION_STATUSES = ("pending", "accepted", "revoked", "expired")
DOCUMENT_KINDS = ("registration", "tax", "identity", "bank", "other")
# The types a verification document may have; the file's first bytes decide.
DOCUMENT_TYPES = ("application/pdf", "image/png", "image/jpeg")

# ISO 3166-1 alpha-2: the 249 officially assigned country codes.
COUNTRY_CODES = frozenset("""
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ
    BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
    CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ
    DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR
    GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY
    HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP
    KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY
    MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ
    NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY
    QA RE RO RS RU RW
    SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ
    TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ
    VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
""".split())


def _single_line(value: str) -> None:
    if any(ord(character) < 32 or ord(character) == 127 for character in value):
        raise marshmallow.ValidationError("Must be one line without control characters.")


def _role(**kwargs) -> Text:
    return Text(validate=validate.OneOf(MEMBER_ROLES, error="Must be one of: {choices}."),
                **kwargs)


# Team ------------------------------------------------------------------------------


class MemberSchema(ResponseSchema):
    """A member of the partner's team; ``id`` is the member's user id."""

    id = PublicId("user", attribute="user_id")
    email = fields.String(attribute="user.email")
    name = fields.String(attribute="user.name")
    role = fields.String(metadata={"description": ", ".join(MEMBER_ROLES)})
    created_at = Timestamp(metadata={"description": "when the user joined the partner"})


class UpdateMemberBody(BodySchema):
    role = _role(required=True)


class CreateInvitationBody(BodySchema):
    email = Email(required=True)
    role = _role(required=True)


class InvitationQuery(PageQuery):
    status = Text(validate=validate.OneOf(INVITATION_STATUSES), metadata={
        "description": "only the invitations in this state"})


class InvitationSchema(ResponseSchema):
    id = PublicId("inv")
    email = fields.String()
    role = fields.String()
    status = fields.Function(lambda invitation: invitation_status(invitation), metadata={
        "description": ", ".join(INVITATION_STATUSES)})
    invited_by = PublicId("user", attribute="invited_by_user_id")
    expires_at = Timestamp()
    accepted_at = Timestamp()
    accepted_by = PublicId("user", attribute="accepted_by_user_id")
    revoked_at = Timestamp()
    created_at = Timestamp()


class AcceptInvitationBody(BodySchema):
    """An account for the invited email, when the caller sends no login token."""

    name = Text(min_length=1, max_length=255, validate=_single_line)
    password = Text(strip=False, min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)

    @marshmallow.validates_schema
    def _both_or_neither(self, data, **kwargs):
        if ("name" in data) != ("password" in data):
            missing = "password" if "name" in data else "name"
            raise marshmallow.ValidationError(
                "Give name and password together to create the account.", missing)


class AcceptedInvitationSchema(ResponseSchema):
    """A login token that acts for the partner just joined."""

    access_token = fields.String()
    token_type = fields.String()
    expires_in = fields.Integer()
    user_id = fields.String()
    partner_id = fields.String()
    role = fields.String()
    company_name = fields.String()


# Verification -----------------------------------------------------------------------


class HttpsUrl(LinkUrl):
    """A public https link, checked like the other links a partner sets."""

    def _deserialize(self, value, attr, data, **kwargs):
        url = super()._deserialize(value, attr, data, **kwargs)
        if not url.startswith("https://"):
            raise marshmallow.ValidationError("Must be an https:// URL.")
        return url


class CountryCode(Text):
    def _deserialize(self, value, attr, data, **kwargs):
        code = super()._deserialize(value, attr, data, **kwargs)
        if code not in COUNTRY_CODES:
            raise marshmallow.ValidationError(
                "Must be an ISO 3166-1 alpha-2 country code in capitals, such as US or DE.")
        return code


class VerificationAddressSchema(BodySchema):
    line1 = Text(required=True, min_length=1, max_length=200, validate=_single_line)
    line2 = Text(max_length=200, validate=_single_line)
    city = Text(required=True, min_length=1, max_length=100, validate=_single_line)
    postal_code = Text(required=True, min_length=1, max_length=20, validate=_single_line)
    country = CountryCode(required=True)


class VerificationContactSchema(BodySchema):
    name = Text(required=True, min_length=1, max_length=255, validate=_single_line)
    email = Email(required=True)
    phone = Text(max_length=20, validate=validate.Regexp(
        r"^\+?[0-9 ()\-.]{4,20}$", error="Must be a phone number of digits, spaces and + ( ) - ."))


class SubmitVerificationBody(BodySchema):
    legal_name = Text(required=True, min_length=1, max_length=255, validate=_single_line)
    tax_id = Text(required=True, min_length=4, max_length=50, validate=validate.Regexp(
        r"^[A-Za-z0-9][A-Za-z0-9 ./-]*$",
        error="Must be letters and digits, optionally with spaces, dots, dashes or slashes."),
        metadata={"description": "stored encrypted; responses show at most its last 4 "
                                 "characters"})
    address = fields.Nested(VerificationAddressSchema, required=True)
    contact = fields.Nested(VerificationContactSchema, required=True)
    website = HttpsUrl(required=True, max_length=255)


class FilePart(fields.Field):
    """A file sent as a part of a multipart/form-data body."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, UploadedFile):
            raise marshmallow.ValidationError(
                "Must be a file part of a multipart/form-data body; in a JSON body, send "
                "content_base64, filename and content_type instead.")
        return value


class Base64Bytes(fields.Field):
    """Bytes sent as standard base64 text."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise marshmallow.ValidationError("Must be a base64 string.")
        try:
            return base64.b64decode(value.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error):
            raise marshmallow.ValidationError("Must be standard base64 (A-Z a-z 0-9 + /, "
                                              "padded with =).") from None


class UploadDocumentBody(BodySchema):
    """A document, as a multipart ``file`` part or as base64 in a JSON body."""

    kind = Text(required=True, validate=validate.OneOf(
        DOCUMENT_KINDS, error="Must be one of: {choices}."))
    file = FilePart(metadata={"description": "multipart/form-data only: the document"})
    content_base64 = Base64Bytes(metadata={
        "description": "JSON only: the document in base64; the JSON body limit "
                       "(fkod.api.max_body_bytes) bounds it"})
    filename = Text(max_length=255, metadata={"description": "JSON only"})
    content_type = Text(max_length=100, metadata={
        "description": "JSON only: " + ", ".join(DOCUMENT_TYPES)})

    @marshmallow.validates_schema
    def _one_way_of_sending(self, data, **kwargs):
        if "file" in data:
            extra = [name for name in ("content_base64", "filename", "content_type")
                     if name in data]
            if extra:
                raise marshmallow.ValidationError(
                    "A multipart upload names its file and type in the file part itself.",
                    extra[0])
            return
        if "content_base64" not in data:
            raise marshmallow.ValidationError(
                "Send the document as the file part of a multipart/form-data body.", "file")
        for name in ("filename", "content_type"):
            if name not in data:
                raise marshmallow.ValidationError(
                    "Required with content_base64.", name)


class DocumentSchema(ResponseSchema):
    """A verification document's metadata; the document itself is never served."""

    id = PublicId("doc")
    kind = fields.String(metadata={"description": ", ".join(DOCUMENT_KINDS)})
    filename = fields.String()
    content_type = fields.String()
    size = fields.Integer(metadata={"description": "bytes"})
    sha256 = fields.String(metadata={"description": "hex digest of the document"})
    uploaded_by = PublicId("user", attribute="uploaded_by_user_id")
    created_at = Timestamp()


class VerificationAddressOutSchema(ResponseSchema):
    line1 = fields.String()
    line2 = fields.String()
    city = fields.String()
    postal_code = fields.String()
    country = fields.String()


class VerificationContactOutSchema(ResponseSchema):
    name = fields.String()
    email = fields.String()
    phone = fields.String()


class VerificationSchema(ResponseSchema):
    """The partner's verification: its state, what was submitted and the documents."""

    verification_status = fields.String(metadata={
        "description": "unverified, submitted, verified or rejected"})
    legal_name = fields.String()
    tax_id = fields.String(metadata={"description": "masked: at most the last 4 characters"})
    address = fields.Nested(VerificationAddressOutSchema, allow_none=True)
    contact = fields.Nested(VerificationContactOutSchema, allow_none=True)
    website = fields.String()
    verification_submitted_at = Timestamp()
    verified_at = Timestamp()
    verification_rejection_reason = fields.String(metadata={
        "description": "why F-KOD rejected the last submission"})
    documents = fields.List(fields.Nested(DocumentSchema))


# Data rights ------------------------------------------------------------------------


class DeletionBody(BodySchema):
    confirm = Text(required=True, max_length=255, strip=False, metadata={
        "description": "the partner's company_name, exactly as it is"})


class DeletionSchema(ResponseSchema):
    id = PublicId("partner")
    deletion_requested_at = Timestamp()
    deleted_at = Timestamp()
    api_keys_revoked = fields.Integer()
    oauth_apps_deleted = fields.Integer()
    webhooks_deleted = fields.Integer()
    users_anonymised = fields.Integer()
    documents_deleted = fields.Integer()


class IntegrationSummarySchema(ResponseSchema):
    id = PublicId("int")
    name = fields.String()
    slug = fields.String()
    category = fields.String()
    version = fields.String()
    status = fields.String()
    created_at = Timestamp()
    updated_at = Timestamp()


class ExportSchema(ResponseSchema):
    """Everything the platform keeps about the partner, each list bounded by ``limits``."""

    exported_at = Timestamp()
    partner = fields.Dict(metadata={"description": "the profile; tax_id and bank_account "
                                                   "masked"})
    verification = fields.Dict(metadata={"description": "as GET /api/partners/verification"})
    members = fields.List(fields.Dict())
    invitations = fields.List(fields.Dict())
    api_keys = fields.List(fields.Dict(), metadata={"description": "metadata, never a secret"})
    webhooks = fields.List(fields.Dict(), metadata={
        "description": "without signing secrets; custom header values masked"})
    deliveries = fields.List(fields.Dict(), metadata={
        "description": "the newest deliveries of the export window, without payloads"})
    tickets = fields.List(fields.Dict(), metadata={"description": "with messages and evidence"})
    integrations = fields.List(fields.Dict())
    audit_log = fields.List(fields.Dict(), metadata={"description": "newest first"})
    limits = fields.Dict(metadata={"description": "the most items each list holds"})
    truncated = fields.List(fields.String(), metadata={
        "description": "the lists that reached their limit, so older items are left out"})
