"""URL slugs: lowercase ASCII words joined by hyphens, unique within one column."""

from __future__ import annotations

import re
import unicodedata

import sqlalchemy as sa

MAX_BASE_LENGTH = 80


def slugify(text: str, fallback: str) -> str:
    """Return ``text`` as a slug (``Café Sync!`` gives ``cafe-sync``), else ``fallback``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:MAX_BASE_LENGTH].strip("-") or fallback


def unique_slug(session, column, text: str, fallback: str) -> str:
    """Return a slug of ``text`` that no row uses yet in ``column`` (``acme``, ``acme-2``…)."""
    base = slugify(text, fallback)
    taken = set(session.scalars(sa.select(column).where(
        sa.or_(column == base, column.like(f"{base}-%")))))
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"
