"""Demo data for the embedded default: a verified demo partner with a key, courses, mentors.

It also creates F-KOD Labs, the verified publisher (slug ``fkod-labs``) of the
integrations in ``plugins_contrib``, and marks those plugins trusted, so the
next start-up lists their integrations in the marketplace without a review.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa

# Every model, so that foreign keys between their tables resolve.
import fkod.models  # noqa: F401
from fkod.core.auth.apikeys import KeyHasher, generate_key
from fkod.core.auth.models import PLATFORM_NAMESPACE, ApiKey, Partner, PartnerMember, User
from fkod.core.auth.passwords import PasswordHasher
from fkod.core.auth.scopes import SCOPES
from fkod.core.billing.models import Plan
from fkod.core.db import utcnow
from fkod.core.plugin_models import PluginState
from fkod.plugins.learning.models import Course, Mentor

DEMO_EMAIL = "demo@fkod.example"
DEMO_PASSWORD = "demo-password-123"
DEMO_KEY_NAME = "demo key"
LABS_SLUG = "fkod-labs"
LABS_EMAIL = "labs@fkod.example"
# The contributed plugins that F-KOD Labs publishes.
LABS_PLUGINS = ("slack", "csv_export")

COURSES = (
    ("Design Thinking 101", "Frame problems before solving them.", "beginner"),
    ("Data Literacy", "Read, question and present data.", "beginner"),
    ("Leading Product Teams", "Plan, prioritise and ship with a team.", "intermediate"),
    ("Applied Machine Learning", "From a baseline to a deployed model.", "advanced"),
)
MENTORS = (
    ("Ada Mentor", "Product design", "Fifteen years of shipping learning products."),
    ("Grace Coach", "Engineering leadership", "Coaches first-time engineering managers."),
    ("Alan Guide", "Data science", "Teaches statistics through real projects."),
)


def load_demo_data(session, settings: dict) -> str:
    """Create what is missing and a fresh demo key; return a summary that shows the key."""
    if not session.scalar(sa.select(sa.func.count()).select_from(Course)):
        session.add_all(Course(title=title, description=description, level=level)
                        for title, description, level in COURSES)
    if not session.scalar(sa.select(sa.func.count()).select_from(Mentor)):
        session.add_all(Mentor(name=name, expertise=expertise, bio=bio)
                        for name, expertise, bio in MENTORS)

    user = session.scalar(sa.select(User).where(User.email_namespace == PLATFORM_NAMESPACE,
                                                User.email == DEMO_EMAIL))
    if user is None:
        password_hash = PasswordHasher.from_settings(settings).hash(DEMO_PASSWORD)
        user = User(email=DEMO_EMAIL, name="Demo Owner", password_hash=password_hash,
                    email_verified_at=utcnow())
        session.add(user)
        session.flush()
    partner = session.scalar(sa.select(Partner).where(Partner.user_id == user.id))
    if partner is None:
        starter = session.scalar(sa.select(Plan).where(Plan.code == "starter"))
        partner = Partner(user_id=user.id, company_name="Demo Learning Co", slug="demo",
                          company_website="https://demo.example", category="education",
                          contact_email=DEMO_EMAIL, status="active",
                          verification_status="verified", plan_id=starter.id if starter else None)
        session.add(partner)
        session.flush()
        session.add(PartnerMember(partner_id=partner.id, user_id=user.id, role="owner"))

    # Earlier demo keys are revoked, so exactly one demo key works: the one printed now.
    session.execute(sa.update(ApiKey).where(
        ApiKey.partner_id == partner.id, ApiKey.key_name == DEMO_KEY_NAME,
        ApiKey.status == "active").values(status="revoked", revoked_at=utcnow()))
    secret, prefix = generate_key(livemode=False)
    session.add(ApiKey(
        partner_id=partner.id, key_name=DEMO_KEY_NAME, key_prefix=prefix,
        key_hash=KeyHasher(settings["fkod.secrets.api_key_pepper"]).hash(secret),
        scopes=[scope.name for scope in SCOPES if not scope.admin_only], livemode=False,
        created_by_user_id=user.id,
    ))
    session.flush()
    _load_publisher(session, settings)
    return (
        "Demo data loaded.\n"
        f"  demo partner: {partner.company_name} (partner_{partner.id}), verified\n"
        f"  log in with:  {DEMO_EMAIL} / {DEMO_PASSWORD}\n"
        f"  test API key: {secret}\n"
        "  try:         curl -H 'Authorization: Bearer <key>' http://127.0.0.1:6543/api/v1/courses"
    )


def _load_publisher(session, settings: dict) -> None:
    """Create the F-KOD Labs partner and trust the plugins it publishes, if missing."""
    if session.scalar(sa.select(Partner.id).where(Partner.slug == LABS_SLUG)) is None:
        # Nobody logs in as this owner: its password is random and never shown.
        password_hash = PasswordHasher.from_settings(settings).hash(secrets.token_urlsafe(32))
        owner = User(email=LABS_EMAIL, name="F-KOD Labs", password_hash=password_hash,
                     email_verified_at=utcnow())
        session.add(owner)
        session.flush()
        labs = Partner(user_id=owner.id, company_name="F-KOD Labs", slug=LABS_SLUG,
                       company_website="https://fkod.example", category="education",
                       contact_email=LABS_EMAIL, status="active", verification_status="verified",
                       description="Integrations built by the F-KOD team.")
        session.add(labs)
        session.flush()
        session.add(PartnerMember(partner_id=labs.id, user_id=owner.id, role="owner"))
    for name in LABS_PLUGINS:
        state = session.get(PluginState, name) or PluginState(name=name)
        state.trusted = True
        session.add(state)
    session.flush()
