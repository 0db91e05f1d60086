"""How search input becomes full-text queries: words only, quoted, never an operator."""

from __future__ import annotations

import sqlite3

import pytest

from fkod.marketplace.search import (
    fts5_query,
    fts5_trigram_query,
    postgres_tsquery,
    query_words,
    trigrams,
    typo_similarity,
)

HOSTILE = ["%", "_", "'", '"', "*", "NEAR(", "a OR b", "-x", "^", ":", "\\", "a AND b",
           "NOT a", "(a", "a)", "name:a", "a*", '"a" "b"', "''", "🚀", "a\u0301", "ǅ",
           "１００", "x" * 200, "col:NEAR(a b)", "{a b}", "a + b", "a -- b"]


def test_words_keep_letters_and_digits():
    assert query_words("Course-Sync: 2.0!") == ["course", "sync", "2", "0"]
    assert query_words("a_b") == ["a", "b"]
    assert query_words("%_*^:()\"'\\") == []
    assert query_words("Café Ünïcode") == ["café", "ünïcode"]


def test_words_are_bounded():
    assert len(query_words("word " * 100)) == 16


def test_postgres_tsquery_has_only_words():
    assert postgres_tsquery(["cour", "sync"], "&") == "'cour':* & 'sync':*"
    assert postgres_tsquery(["a"], "|") == "'a':*"


def test_trigrams_padded_like_pg_trgm():
    assert trigrams("slak") == {"  s", " sl", "sla", "lak", "ak "}


@pytest.mark.parametrize(("query", "name", "expected"), [
    ("slak", "Slack Notifications", 0.6),
    ("slack", "Slack Notifications", 1.0),
    ("zoom", "Slack Notifications", 0.0),
    ("%", "100% Uptime", 0.0),
])
def test_typo_similarity(query, name, expected):
    assert typo_similarity(query, name) == pytest.approx(expected)


@pytest.fixture(scope="module")
def fts5():
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE VIRTUAL TABLE words USING fts5(name, tokenize = "
                       "'unicode61 remove_diacritics 2', prefix = '2 3 4')")
    connection.execute("CREATE VIRTUAL TABLE grams USING fts5(name, tokenize = 'trigram')")
    for table in ("words", "grams"):
        # The table names are the constants of the loop.
        connection.executemany(f"INSERT INTO {table} (rowid, name) VALUES (?, ?)", [  # noqa: S608
            (1, "Course Sync"), (2, "Slack Notifications"), (3, "NEAR OR AND NOT"),
            (4, "Café Ünïcode")])
    yield connection
    connection.close()


@pytest.mark.parametrize("text", HOSTILE, ids=repr)
def test_fts5_queries_never_fail(fts5, text):
    words = query_words(text)
    if words:
        fts5.execute("SELECT rowid FROM words WHERE words MATCH ?", (fts5_query(words),))
    grams = fts5_trigram_query(text)
    if grams is not None:
        fts5.execute("SELECT rowid FROM grams WHERE grams MATCH ?", (grams,))


def test_fts5_operators_are_words(fts5):
    rows = fts5.execute("SELECT rowid FROM words WHERE words MATCH ?",
                        (fts5_query(query_words("near or")),)).fetchall()
    assert rows == [(3,)]


def test_fts5_prefix_and_diacritics(fts5):
    def match(text):
        return fts5.execute("SELECT rowid FROM words WHERE words MATCH ?",
                            (fts5_query(query_words(text)),)).fetchall()

    assert match("cour") == [(1,)]
    assert match("cafe unicode") == [(4,)]
    assert match("course slack") == []


def test_fts5_trigram_query_for_typos(fts5):
    query = fts5_trigram_query("slak")
    assert query == '"lak" OR "sla"'
    rows = fts5.execute("SELECT rowid FROM grams WHERE grams MATCH ?", (query,)).fetchall()
    assert rows == [(2,)]
    assert fts5_trigram_query("ab") is None
