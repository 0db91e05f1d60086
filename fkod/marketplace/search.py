"""Ranked full-text search over the listed integrations.

The query is matched literally. It is split into words (runs of letters and
digits), and only those words reach the full-text engine, each quoted. So
``%``, ``_``, quotes and the engines' query operators (AND OR NOT NEAR * ^ :
( ) -) are never interpreted. Results come in tiers:

0. the integration's name equals the query (case-insensitively);
1. the name starts with the query, as typed;
2. every word matches a word of the name, category, description or partner's
   company name by prefix ("cour" finds "Course Sync"), or, for a query with
   characters besides letters, digits and spaces ("100%"), the name contains it
   as typed; ranked by text relevance;
3. typo-tolerant matches: the name shares enough trigrams with the query
   ("slak" finds "Slack"); ranked by similarity.

PostgreSQL uses the generated ``search_document`` tsvector column and pg_trgm's
word similarity; SQLite uses the FTS5 tables ``integration_search`` and
``integration_search_trigram`` (migration b7e4d1a9c3f5), and scores the
typo candidates here. That score is the share of the query's trigrams found
anywhere in the name, so it is at least pg_trgm's word similarity and lets a
few more typo matches through.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re

import sqlalchemy as sa
from sqlalchemy import orm

from fkod.core.api import Page
from fkod.core.auth.models import Partner
from fkod.marketplace.catalog import (
    INTEGRATION_SORTS,
    filter_integrations,
    listed_clause,
)
from fkod.marketplace.models import Integration
from fkod.marketplace.schemas import MAX_SEARCH_RESULTS, encode_offset_cursor

MAX_QUERY_WORDS = 16
# pg_trgm's default word_similarity_threshold: the share of the query's
# trigrams that one stretch of the name must contain for a typo match.
TYPO_THRESHOLD = 0.6
# Added to the text relevance of an integration whose partner's company name
# contains every word. For scale, ts_rank of one word matched in a name is about 0.6.
PARTNER_MATCH_BONUS = 0.3
# On SQLite, the typo candidates scored in Python, best trigram overlap first.
MAX_TYPO_CANDIDATES = 200

_WORD = re.compile(r"[^\W_]+")
_TEXT_CONFIG = sa.literal_column("'english'::regconfig")
_TRGM_SCHEMA_KEY = "fkod.marketplace.pg_trgm_schema"


def query_words(text: str) -> list[str]:
    """Split a search query into lowercase words of letters and digits; nothing else survives."""
    return _WORD.findall(text.casefold())[:MAX_QUERY_WORDS]


def trigrams(text: str) -> set[str]:
    """Return the trigrams of ``text`` as pg_trgm forms them: per word, padded with spaces."""
    found = set()
    for word in query_words(text):
        padded = f"  {word} "
        found.update(padded[index:index + 3] for index in range(len(padded) - 2))
    return found


def typo_similarity(query: str, name: str) -> float:
    """Return the share of the query's trigrams that occur in ``name`` (0 to 1)."""
    wanted = trigrams(query)
    if not wanted:
        return 0.0
    return len(wanted & trigrams(name)) / len(wanted)


def needs_substring_match(text: str, words: list[str]) -> bool:
    """Return True unless ``text`` is only words and spaces, which the word prefixes cover.

    A query such as "100%" or "uptime_m" is looked for as a substring of the
    names, as typed, because the full-text engines drop its other characters.
    """
    return not words or " ".join(words) != " ".join(text.casefold().split())


def postgres_tsquery(words: list[str], operator: str) -> str:
    """Join prefix matches of the words with ``&`` or ``|``; words hold letters and digits only."""
    return f" {operator} ".join(f"'{word}':*" for word in words)


def fts5_query(words: list[str]) -> str:
    """Build an FTS5 query in which every word must match as a prefix, quoted as a string."""
    return " ".join('"' + word.replace('"', '""') + '"*' for word in words)


def fts5_trigram_query(text: str) -> str | None:
    """Build an FTS5 query that matches any trigram of any word of three or more characters."""
    grams = sorted({word[index:index + 3] for word in query_words(text)
                    for index in range(len(word) - 2)})
    if not grams:
        return None
    return " OR ".join('"' + gram.replace('"', '""') + '"' for gram in grams)


@dataclasses.dataclass
class Ranking:
    """The match rules and sort keys of one query, as SQL expressions over Integration.

    ``text_match`` selects the text matches (tiers 0 to 2) through the indexes,
    and ``is_text_match`` tests one row for the same rule. ``typo_match``
    selects a superset of the typo matches (tier 3), which exclude the text
    matches. ``tier`` is 0, 1 or 2 on a text match, ``relevance`` orders the
    text matches within a tier and ``similarity`` the typo matches.
    """

    text_match: sa.ColumnElement
    is_text_match: sa.ColumnElement
    typo_match: sa.ColumnElement
    tier: sa.ColumnElement
    relevance: sa.ColumnElement
    similarity: sa.ColumnElement
    # Subqueries the expressions read from, outer-joined to Integration on the clause.
    joins: list = dataclasses.field(default_factory=list)


MATCH_KINDS = {0: "exact", 1: "prefix", 2: "text", 3: "similar"}


def _tier(name, lowered_query: str, position) -> sa.ColumnElement:
    """Build the tier of a text match: 0 if the name equals the query, 1 if it starts with it.

    Other text matches are tier 2. The equality is tested only on names that
    start with the query, so the other names are lowered once, not twice.
    """
    return sa.case((position == 1, sa.case((name == lowered_query, 0), else_=1)), else_=2)


def search_integrations(request, query: dict) -> Page:
    """Return one page of listed integrations matching ``query["q"]``, best matches first.

    The filters of the integration list apply. ``query["cursor"]`` is the
    offset of the page, at most MAX_SEARCH_RESULTS. In relevance order the
    typo-tolerant matches follow the text matches and are looked for only when
    a page is not full of text matches, because they cost the most.
    """
    session = request.dbsession
    text = query["q"]
    if session.get_bind().dialect.name == "postgresql":
        ranking = _postgres_ranking(session, text)
    else:
        ranking = _sqlite_ranking(session, text)
    select = sa.select(Integration.id)
    for subquery, onclause in ranking.joins:
        select = select.outerjoin(subquery, onclause)
    select = filter_integrations(request, select.where(listed_clause(request)), query)
    offset = query.get("cursor") or 0
    limit = min(query["limit"], MAX_SEARCH_RESULTS - offset)

    with _index_scans_preferred(session):
        if query["sort"] == "relevance":
            rows = _relevance_page(session, select, ranking, offset, limit)
        else:
            tier = sa.case((ranking.is_text_match, ranking.tier), else_=3)
            keys = INTEGRATION_SORTS[query["sort"]]
            order = [key.desc() if descending else key.asc() for key, descending in keys]
            ranked = (select.add_columns(tier.label("tier"))
                      .where(sa.or_(ranking.text_match, ranking.typo_match))
                      .order_by(*order).offset(offset).limit(limit + 1).subquery("ranked"))
            # The page's rows are sorted again by the same keys, read from the same rows.
            rows = _load_page(session, ranked, order)

    has_more = len(rows) > limit
    integrations = []
    for integration, tier in rows[:limit]:
        # Read by SearchResultSchema; not a column, so the ORM ignores it.
        integration.match = MATCH_KINDS[tier]
        integrations.append(integration)
    next_cursor = encode_offset_cursor(offset + limit) if has_more else None
    return Page(integrations, next_cursor)


def _relevance_page(session, select, ranking: Ranking, offset: int, limit: int) -> list:
    """Return up to ``limit + 1`` rows (integration, tier) from ``offset``.

    Text matches come first, then typo matches.
    """
    text_matches = select.where(ranking.text_match)
    relevance = ranking.relevance.label("relevance")
    ranked = (text_matches.add_columns(ranking.tier.label("tier"), relevance)
              .order_by(ranking.tier.asc(), relevance.desc(),
                        Integration.install_count.desc(), Integration.id.desc())
              .offset(offset).limit(limit + 1).subquery("ranked"))
    text_rows = _load_page(session, ranked, [
        ranked.c.tier.asc(), ranked.c.relevance.desc(),
        Integration.install_count.desc(), Integration.id.desc()])
    if len(text_rows) > limit:
        return text_rows

    if text_rows or offset == 0:
        text_total = offset + len(text_rows)
    else:
        text_total = session.scalar(text_matches.with_only_columns(sa.func.count()))
    similarity = ranking.similarity.label("similarity")
    ranked = (select.add_columns(sa.literal(3).label("tier"), similarity)
              .where(ranking.typo_match, sa.not_(ranking.is_text_match))
              .order_by(similarity.desc(), Integration.install_count.desc(),
                        Integration.id.desc())
              .offset(max(0, offset - text_total)).limit(limit + 1 - len(text_rows))
              .subquery("ranked"))
    typo_rows = _load_page(session, ranked, [
        ranked.c.similarity.desc(), Integration.install_count.desc(), Integration.id.desc()])
    return text_rows + typo_rows


def _load_page(session, ranked, order: list) -> list:
    """Read the integrations, with their partners, of the page subquery ``ranked``.

    ``ranked`` selects one page of (id, tier, sort keys), already limited, so
    the page costs one statement. ``order`` repeats the page's sort keys over
    ``ranked`` and the integrations, the id last, so the rows come in the order
    the page was cut in. Returns (integration, tier) rows. The partner is an
    inner join because a listed integration has an active partner.
    """
    statement = (sa.select(Integration, ranked.c.tier)
                 .join(ranked, ranked.c.id == Integration.id)
                 .join(Integration.partner)
                 .options(orm.contains_eager(Integration.partner))
                 .order_by(*order))
    return session.execute(statement).all()


# PostgreSQL -----------------------------------------------------------------------


@contextlib.contextmanager
def _index_scans_preferred(session):
    """Turn PostgreSQL's sequential scans off for the statements run inside, in this transaction.

    pg_trgm (1.6, PostgreSQL 15) declares its similarity operators with the
    default cost of a cheap function, so the planner estimates a sequential
    scan of 10,000 names as cheap as the trigram index and picks it, although
    the scan costs about 40 ms and the index about 1 ms. Every branch of the
    search query has an index, so ruling sequential scans out costs nothing.

    NOTE: after VACUUM had merged the GIN pending lists, the planner chose the
    indexes for the relevance statements without this setting in one run on
    10,000 integrations. The setting stays because that choice follows the
    statistics, and it costs two round trips per search.
    """
    if session.get_bind().dialect.name != "postgresql":
        yield
        return
    # JIT compilation would then start on the inflated cost estimates and take
    # longer than the query. One statement changes both, and one restores them.
    previous = session.execute(sa.text(
        "SELECT current_setting('enable_seqscan'), current_setting('jit'), "
        "set_config('enable_seqscan', 'off', true), set_config('jit', 'off', true)")).one()
    try:
        yield
    finally:
        session.execute(sa.text("SELECT set_config('enable_seqscan', :seqscan, true), "
                                "set_config('jit', :jit, true)"),
                        {"seqscan": previous[0], "jit": previous[1]})


def _trgm_schema(session) -> str:
    """Return the schema of the pg_trgm extension, cached on the database connection."""
    info = session.connection().info
    schema = info.get(_TRGM_SCHEMA_KEY)
    if schema is None:
        schema = session.execute(sa.text(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
            "ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'")).scalar_one()
        info[_TRGM_SCHEMA_KEY] = schema
    return schema


def _postgres_ranking(session, text: str) -> Ranking:
    """Rank ``text`` on PostgreSQL: the tsvector column, the partners' names and pg_trgm."""
    words = query_words(text)
    lowered_query = text.lower()
    name = sa.func.lower(Integration.name)
    schema = _trgm_schema(session)
    quoted_schema = schema.replace('"', '""')
    # name %> query is pg_trgm's "query <% name" with the indexed column first,
    # so the index condition is the whole test and is checked once per row.
    typo_match = name.op(f'OPERATOR("{quoted_schema}".%>)')(sa.literal(lowered_query))
    similarity = getattr(sa.func, schema).word_similarity(sa.literal(lowered_query), name)
    position = sa.func.strpos(name, lowered_query)
    substring = needs_substring_match(text, words)
    # Candidates are the rows one of the indexes finds (PostgreSQL combines
    # them with a BitmapOr), and the exact rule is then checked on those rows
    # only, so no text vector is computed for every row.
    candidates = []
    text_match_row = sa.false()
    relevance = sa.literal(0.0)
    if substring:
        candidates.append(name.contains(lowered_query, autoescape=True))
        text_match_row = position > 0

    if words:
        document = sa.literal_column("integrations.search_document")
        every_word = sa.func.to_tsquery(_TEXT_CONFIG, postgres_tsquery(words, "&"))
        any_word = sa.func.to_tsquery(_TEXT_CONFIG, postgres_tsquery(words, "|"))
        # The same expression as the index idx_partners_search_company.
        partner_vector = sa.func.to_tsvector(
            _TEXT_CONFIG, sa.func.coalesce(Partner.company_name, sa.literal_column("''")))
        partners_with_any = sa.select(Partner.id).where(partner_vector.op("@@")(any_word))
        partners_with_all = sa.select(Partner.id).where(partner_vector.op("@@")(every_word))
        # Words split between the integration and its partner's name ("globex zoom"),
        # checked only on the integrations of partners that match one word.
        own_and_partner = document.op("||")(
            sa.select(partner_vector).where(Partner.id == Integration.partner_id)
            .scalar_subquery())
        partner_match = Integration.partner_id.in_(partners_with_all)
        # = ANY(ARRAY(subquery)) lets the partner_id index join the BitmapOr.
        of_partners_with_any = Integration.partner_id == sa.any_(
            sa.func.array(partners_with_any.scalar_subquery()))
        candidates += [document.op("@@")(every_word), of_partners_with_any]
        text_match_row = sa.or_(text_match_row, document.op("@@")(every_word), partner_match,
                                sa.and_(of_partners_with_any,
                                        own_and_partner.op("@@")(every_word)))
        relevance = sa.func.ts_rank(document, every_word) + sa.case(
            (partner_match, PARTNER_MATCH_BONUS), else_=0.0)

    return Ranking(text_match=sa.and_(sa.or_(*candidates), text_match_row),
                   is_text_match=text_match_row, typo_match=typo_match,
                   tier=_tier(name, lowered_query, position),
                   relevance=relevance, similarity=similarity)


# SQLite ---------------------------------------------------------------------------


def _sqlite_ranking(session, text: str) -> Ranking:
    """Rank ``text`` on SQLite: the FTS5 tables, with typo candidates scored in Python."""
    words = query_words(text)
    lowered_query = text.lower()
    name = sa.func.lower(Integration.name)
    position = sa.func.instr(name, lowered_query)
    text_match = position > 0 if needs_substring_match(text, words) else sa.false()
    relevance = sa.literal(0.0)
    joins = []

    if words:
        # bm25 weights the columns name, description, category and company_name.
        # It is negative, and lower for better matches.
        fts = sa.text(
            "SELECT rowid AS id, bm25(integration_search, 10.0, 1.0, 4.0, 3.0) AS rank "
            "FROM integration_search WHERE integration_search MATCH :match"
        ).bindparams(match=fts5_query(words)).columns(id=sa.Integer, rank=sa.Float) \
            .subquery("fts")
        joins.append((fts, fts.c.id == Integration.id))
        text_match = sa.or_(text_match, fts.c.id.is_not(None))
        relevance = sa.func.coalesce(-fts.c.rank, 0.0)

    similar = _sqlite_typo_matches(session, text)
    typo_match = Integration.id.in_(list(similar)) if similar else sa.false()
    similarity = sa.case(similar, value=Integration.id, else_=0.0) if similar \
        else sa.literal(0.0)
    return Ranking(text_match=text_match, is_text_match=text_match, typo_match=typo_match,
                   tier=_tier(name, lowered_query, position),
                   relevance=relevance, similarity=similarity, joins=joins)


def _sqlite_typo_matches(session, text: str) -> dict[int, float]:
    """Return {integration id: similarity} of the names close enough to ``text``."""
    match = fts5_trigram_query(text)
    if match is None:
        return {}
    rows = session.execute(sa.text(
        "SELECT t.rowid AS id, t.name AS name FROM integration_search_trigram t "
        "WHERE integration_search_trigram MATCH :match ORDER BY rank LIMIT :limit"
    ), {"match": match, "limit": MAX_TYPO_CANDIDATES})
    scores = {row.id: typo_similarity(text, row.name or "") for row in rows}
    return {key: value for key, value in scores.items() if value >= TYPO_THRESHOLD}
