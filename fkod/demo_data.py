"""Demo data for the embedded default: a verified demo partner with a key, courses, mentors."""

from __future__ import annotations

import sqlalchemy as sa

from fkod.core.auth.apikeys import KeyHasher, generate_key
from fkod.core.auth.models import PLATFORM_NAMESPACE, ApiKey, Partner, PartnerMember, User
from fkod.core.auth.passwords import PasswordHasher
from fkod.core.auth.scopes import SCOPES
from fkod.core.billing.models import Plan
from fkod.core.db import utcnow
from fkod.plugins.learning.models import Course, Mentor

DEMO_EMAIL = "demo@fkod.example"
DEMO_PASSWORD = "demo-password-123"
DEMO_KEY_NAME = "demo key"

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
    return (
        "Demo data loaded.\n"
        f"  demo partner: {partner.company_name} (partner_{partner.id}), verified\n"
        f"  log in with:  {DEMO_EMAIL} / {DEMO_PASSWORD}\n"
        f"  test API key: {secret}\n"
        "  try:         curl -H 'Authorization: Bearer <key>' http://127.0.0.1:6543/api/v1/courses"
    )
