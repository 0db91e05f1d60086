"""Slugs of names: ASCII, hyphenated, bounded and unique within a column."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fkod.core.slugs import MAX_BASE_LENGTH, slugify, unique_slug


@pytest.mark.parametrize("text,expected", [
    ("Acme Learning", "acme-learning"),
    ("Café Sync!", "cafe-sync"),
    ("  --Course   Sync--  ", "course-sync"),
    ("日本語", "partner"),
    ("", "partner"),
])
def test_slugify_cases(text, expected):
    assert slugify(text, "partner") == expected


def test_slugify_truncation_strips_hyphen():
    text = "a" * (MAX_BASE_LENGTH - 1) + " tail"

    slug = slugify(text, "partner")

    assert slug == "a" * (MAX_BASE_LENGTH - 1)
    assert len(slug) <= MAX_BASE_LENGTH


def test_unique_slug_counts_up():
    engine = sa.create_engine("sqlite://")
    table = sa.Table("things", sa.MetaData(), sa.Column("slug", sa.String, unique=True))
    table.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(table.insert(), [{"slug": "acme"}, {"slug": "acme-2"},
                                            {"slug": "acme-corp"}])
    with sa.orm.Session(engine) as session:
        slug = unique_slug(session, table.c.slug, "ACME", "partner")
        fresh = unique_slug(session, table.c.slug, "Globex", "partner")

    assert slug == "acme-3"
    assert fresh == "globex"
