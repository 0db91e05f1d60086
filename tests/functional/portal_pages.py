"""Helpers for the portal's page tests: forms with their CSRF token, a signed-in member."""

from __future__ import annotations

import re

from fkod.core.auth.models import PartnerMember
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import TEST_PASSWORD

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(page) -> str:
    """Return the CSRF token of the first form on ``page``."""
    match = CSRF_FIELD.search(page.text)
    assert match is not None, f"no CSRF token on {page.request.path}"
    return match.group(1)


def field_errors(page, name: str) -> list[str]:
    """Return the error messages shown next to field ``name``."""
    return re.findall(rf'<p class="field-error" id="{re.escape(name)}-error">([^<]*)</p>',
                      page.text)


def input_value(page, name: str) -> str | None:
    """Return the value attribute of input ``name``, or None when it has none."""
    tag = re.search(rf'<input[^>]*\bname="{re.escape(name)}"[^>]*>', page.text)
    assert tag is not None, f"no input {name} on {page.request.path}"
    value = re.search(r'\bvalue="([^"]*)"', tag.group(0))
    return value.group(1) if value else None


def post_form(web, path: str, fields, *, form_page: str | None = None, status="*"):
    """POST ``fields`` to ``path`` with the CSRF token of ``form_page`` (default: ``path``)."""
    page = web.get(form_page or path)
    items = list(fields.items()) if isinstance(fields, dict) else list(fields)
    return web.post(path, [("csrf_token", csrf_token(page)), *items], status=status)


def sign_up(client, email: str, company_name: str = "Acme Learning"):
    return post_form(client.web, "/portal/signup", {
        "company_name": company_name, "email": email, "password": TEST_PASSWORD}, status=303)


def log_in(web, email: str, password: str = TEST_PASSWORD):
    return post_form(web, "/portal/login", {"email": email, "password": password}, status=303)


def signed_in_owner(client, company_name: str = "Acme Learning") -> dict:
    """Register a partner through the API and sign its owner in to the portal."""
    registered = client.register_partner(company_name=company_name)
    log_in(client.web, registered["user"]["email"])
    return registered


def add_member(app, partner_id: str, user_id: str, role: str) -> None:
    """Make a user a member of a partner with ``role``, as an accepted invitation does."""
    def work(session):
        session.add(PartnerMember(partner_id=parse_id("partner", partner_id),
                                  user_id=parse_id("user", user_id), role=role))

    run_in_transaction(app.registry["db.session_factory"], work)

