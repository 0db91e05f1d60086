"""Marketplace search latency: the search function against a primary-key fetch, on PostgreSQL.

Creates a throwaway database on the local PostgreSQL, connecting to the
database ``test`` to create it. Migrates it and inserts 10,000 integrations of
500 partners. Then times ``fkod.marketplace.search.search_integrations`` over a
mix of queries (whole names, words, prefixes, typos, partner names, input with
operators), and as the baseline an ORM fetch of one integration by primary key.
Each call runs in its own transaction, as a request does. The database is
dropped at the end. Target: search p95 <= 20 ms.

After seeding, the script runs VACUUM ANALYZE, as autovacuum would on a
server that has it on. The GIN indexes are created empty by the migration,
so the 10,000 rows go to their pending lists (GIN's fast update), which every
search scans in full until a vacuum merges them. ``--no-vacuum`` keeps them
there, for the case of a server with autovacuum off.
Run: python bench/bench_marketplace_search.py [rounds] [--no-vacuum]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import sqlalchemy as sa
from sqlalchemy.orm import Session

from fkod import shutdown
from fkod.core.auth.models import Partner
from fkod.core.integrations import CATEGORIES
from fkod.core.migrations import upgrade_to_head
from fkod.core.testing import make_app, make_settings
from fkod.marketplace.models import Integration
from fkod.marketplace.search import search_integrations

ADMIN_URL = os.environ.get("FKOD_BENCH_POSTGRES_URL",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/test")
INTEGRATIONS = 10_000
PARTNERS = 500

PRODUCTS = ["Course", "Slack", "Zoom", "Grade", "Quiz", "Calendar", "Attendance", "Canvas",
            "Moodle", "Teams", "Notion", "Drive", "Stripe", "Salesforce", "HubSpot", "Mentor",
            "Cohort", "Certificate", "Badge", "Video", "Webinar", "Survey", "Forum", "Roster",
            "Transcript", "Lesson", "Syllabus", "Portfolio", "Invoice", "Discord"]
KINDS = ["Sync", "Notifications", "Export", "Bridge", "Connector", "Insights", "Scheduler",
         "Importer", "Tracker", "Reports", "Assistant", "Alerts", "Backup", "Analytics",
         "Planner", "Dashboard", "Gateway", "Reminders", "Publisher", "Archive"]
EDITIONS = ["", " Pro", " Lite", " Plus", " for Teams", " Enterprise", " Cloud", " Express"]
VERBS = ["Keeps", "Sends", "Copies", "Summarizes", "Schedules", "Tracks", "Exports", "Checks"]
OBJECTS = ["learner progress", "course enrolments", "mentor sessions", "quiz results",
           "certificates", "attendance records", "grades", "cohort milestones",
           "payment receipts", "video watch time", "forum replies", "survey answers"]
TARGETS = ["your LMS", "a Slack channel", "Google Sheets", "the CRM", "Microsoft Teams",
           "a data warehouse", "email digests", "the calendar", "Notion pages", "S3 buckets"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne",
             "Tyrell", "Cyberdyne", "Soylent", "Wonka", "Gringotts", "Monarch", "Oscorp"]
QUERIES = ["Slack Notifications", "course sync", "cour", "slak", "calender", "grade export pro",
           "attendance", "acme", "zoom schedular", "learner progress", "quiz", "mentor sessions",
           "cert", "100%", "a OR b", 'NEAR("x")', "stripe invoice", "teams"]


def seed(engine: sa.Engine, vacuum: bool) -> list[int]:
    rng = random.Random(20261206)
    now = dt.datetime(2026, 12, 1)
    with Session(engine) as session, session.begin():
        partners = [{"company_name": f"{rng.choice(COMPANIES)} {suffix} {index}",
                     "slug": f"partner-{index}", "status": "active",
                     "verification_status": "verified"}
                    for index, suffix in ((index, rng.choice(["Learning", "Labs", "Software",
                                                              "Education", "Tools"]))
                                          for index in range(PARTNERS))]
        session.execute(sa.insert(Partner), partners)
        partner_ids = list(session.scalars(sa.select(Partner.id)))
        rows = []
        for index in range(INTEGRATIONS):
            name = f"{rng.choice(PRODUCTS)} {rng.choice(KINDS)}{rng.choice(EDITIONS)}"
            description = (f"{rng.choice(VERBS)} {rng.choice(OBJECTS)} to {rng.choice(TARGETS)}"
                           f". {rng.choice(VERBS)} {rng.choice(OBJECTS)} every "
                           f"{rng.choice(['hour', 'night', 'week'])} and alerts admins when "
                           f"{rng.choice(OBJECTS)} change.")
            pricing = rng.choice(["free", "freemium", "paid"])
            rows.append({
                "partner_id": rng.choice(partner_ids), "name": name,
                "slug": f"integration-{index}", "description": description,
                "category": rng.choice(CATEGORIES), "version": "1.0.0",
                "status": "published" if rng.random() < 0.9 else "draft",
                "pricing_model": pricing,
                "price_cents": rng.randint(100, 5000) if pricing == "paid" else None,
                "install_count": int(rng.paretovariate(1.2) * 10),
                "published_at": now - dt.timedelta(days=rng.randint(0, 700)),
                "scopes": [], "event_types": [],
            })
        session.execute(sa.insert(Integration), rows)
    # VACUUM cannot run inside a transaction block.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE" if vacuum else "ANALYZE")
    with Session(engine) as session:
        return list(session.scalars(sa.select(Integration.id)))


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(app, integration_ids: list[int], rounds: int) -> tuple[dict, list[float]]:
    """Return the search times by query and the primary-key fetch times, in seconds."""
    factory = app.registry["db.session_factory"]
    rng = random.Random(7)
    searches = {text: [] for text in QUERIES}
    fetches = []
    with factory() as session:
        request = SimpleNamespace(registry=app.registry, dbsession=session)
        query = {"limit": 20, "cursor": None, "sort": "relevance"}
        for warmup in QUERIES:
            search_integrations(request, {**query, "q": warmup})
            session.rollback()
        for _ in range(rounds):
            for text in QUERIES:
                started = time.perf_counter()
                search_integrations(request, {**query, "q": text})
                session.rollback()
                searches[text].append(time.perf_counter() - started)

                wanted = rng.choice(integration_ids)
                started = time.perf_counter()
                session.execute(sa.select(Integration).where(Integration.id == wanted)
                                ).scalar_one()
                session.rollback()
                fetches.append(time.perf_counter() - started)
    return searches, fetches


def main(rounds: int, vacuum: bool) -> None:
    database = f"fkod_bench_search_{secrets.token_hex(4)}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{database}"')
    url = sa.engine.make_url(ADMIN_URL).set(database=database).render_as_string(
        hide_password=False)
    try:
        upgrade_to_head(url)
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        started = time.perf_counter()
        integration_ids = seed(engine, vacuum)
        engine.dispose()
        seeded = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as folder:
            app = make_app(make_settings(Path(folder), db_url=url))
            try:
                searches_by_query, fetches = measure(app, integration_ids, rounds)
            finally:
                shutdown(app.registry)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.dispose()

    searches = [value for values in searches_by_query.values() for value in values]
    search_p50, search_p95 = percentile(searches, 0.5), percentile(searches, 0.95)
    fetch_p50, fetch_p95 = percentile(fetches, 0.5), percentile(fetches, 0.95)
    print(f"{INTEGRATIONS} integrations of {PARTNERS} partners on PostgreSQL "
          f"(seeded in {seeded:.1f} s, {'VACUUM ANALYZE' if vacuum else 'ANALYZE only'}); "
          f"{len(searches)} searches over {len(QUERIES)} queries")
    print(f"search (20 results): p50 {search_p50 * 1e3:.2f} ms, p95 {search_p95 * 1e3:.2f} ms, "
          f"mean {statistics.mean(searches) * 1e3:.2f} ms")
    print(f"primary-key fetch: p50 {fetch_p50 * 1e3:.2f} ms, p95 {fetch_p95 * 1e3:.2f} ms")
    print(f"search / primary-key fetch: p50 {search_p50 / fetch_p50:.1f}x, "
          f"p95 {search_p95 / fetch_p95:.1f}x")
    print(f"target search p95 <= 20 ms: {'met' if search_p95 <= 0.020 else 'not met'}")
    slowest = sorted(searches_by_query.items(), key=lambda item: -statistics.median(item[1]))
    print("slowest queries (median): " + ", ".join(
        f"{text!r} {statistics.median(values) * 1e3:.1f} ms" for text, values in slowest[:5]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("rounds", type=int, nargs="?", default=20,
                        help="times each query is searched (default 20)")
    parser.add_argument("--no-vacuum", action="store_true",
                        help="run ANALYZE only after seeding, so the GIN pending lists stay full")
    arguments = parser.parse_args()
    main(arguments.rounds, vacuum=not arguments.no_vacuum)
