"""API key verification: the gateway's HMAC lookup against bcrypt at cost 12.

The gateway verifies a key by HMAC-SHA256 under the pepper, then looks the
digest up in its per-process cache (kept at most one second) and, on a miss,
with one indexed equality query joined with the partner and its plan. This
script stores 100, 10,000 and 100,000 keys in a fresh PostgreSQL schema
(SQLite when PostgreSQL is unreachable), times the uncached lookup for keys
picked at random and the cached path, and times one bcrypt check at cost 12
in the same run. It prints microseconds per verification and, last, the
bcrypt ratio of the cached path.
Run: python bench/bench_key_verification.py
"""

from __future__ import annotations

import os
import random
import secrets
import tempfile
import time

import bcrypt
import sqlalchemy as sa

from fkod.core.auth.apikeys import KeyHasher, generate_key
from fkod.core.auth.keycache import KeyCache, KeySnapshot
from fkod.core.auth.models import ApiKey, Partner
from fkod.core.billing.models import Plan
from fkod.core.migrations import upgrade_to_head

SIZES = (100, 10_000, 100_000)
LOOKUPS = 2_000
POSTGRES_URL = os.environ.get("FKOD_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def database_url(folder: str) -> tuple[str, callable]:
    """A fresh PostgreSQL schema when reachable, else a SQLite file; and its clean-up."""
    schema = f"fkod_bench_{secrets.token_hex(4)}"
    engine = sa.create_engine(POSTGRES_URL, poolclass=sa.pool.NullPool,
                              connect_args={"connect_timeout": 2})
    try:
        with engine.begin() as connection:
            connection.execute(sa.schema.CreateSchema(schema))
    except sa.exc.OperationalError:
        engine.dispose()
        print("PostgreSQL is unreachable; measuring on SQLite")
        return f"sqlite:///{folder}/bench.sqlite", lambda: None

    def drop():
        with engine.begin() as connection:
            connection.execute(sa.schema.DropSchema(schema, cascade=True))
        engine.dispose()

    url = sa.engine.make_url(POSTGRES_URL).update_query_dict(
        {"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    return url, drop


def store_keys(engine, hasher: KeyHasher, partner_id: int, count: int) -> list[str]:
    secrets_kept = []
    rows = []
    for _ in range(count):
        secret, prefix = generate_key(livemode=False)
        secrets_kept.append(secret)
        rows.append({"partner_id": partner_id, "key_name": "bench", "key_hash": hasher.hash(secret),
                     "key_prefix": prefix, "scopes": ["mentors:read"], "status": "active",
                     "livemode": False, "allowed_ips": []})
    with engine.begin() as connection:
        for start in range(0, len(rows), 5000):
            connection.execute(sa.insert(ApiKey), rows[start:start + 5000])
    return secrets_kept


def time_lookups(engine, hasher: KeyHasher, keys: list[str]) -> float:
    query = (sa.select(ApiKey, Partner, Plan)
             .join(Partner, Partner.id == ApiKey.partner_id)
             .outerjoin(Plan, Plan.id == Partner.plan_id))
    picks = [random.choice(keys) for _ in range(LOOKUPS)]
    with sa.orm.Session(engine) as session:
        for secret in picks[:100]:
            session.execute(query.where(ApiKey.key_hash == hasher.hash(secret))).one()
        started = time.perf_counter()
        for secret in picks:
            digest = hasher.hash(secret)
            session.execute(query.where(sa.or_(ApiKey.key_hash == digest,
                                               ApiKey.previous_key_hash == digest))).one()
        return (time.perf_counter() - started) / LOOKUPS


def time_cached(hasher: KeyHasher, keys: list[str]) -> float:
    """HMAC plus a cache hit: what a key used more than once a second costs."""
    picks = [random.choice(keys) for _ in range(LOOKUPS * 10)]
    cache = KeyCache(ttl_seconds=3600, max_entries=len(picks))
    for secret in set(picks):
        cache.put(hasher.hash(secret), _snapshot())
    started = time.perf_counter()
    for secret in picks:
        if cache.get(hasher.hash(secret)) is None:
            raise AssertionError("cache miss in the cached measurement")
    return (time.perf_counter() - started) / len(picks)


def _snapshot() -> KeySnapshot:
    return KeySnapshot(
        id=1, partner_id=1, livemode=False, scopes=("mentors:read",), key_prefix="sk_test_",
        key_hash="", previous_key_hash=None, previous_key_expires_at=None, status="active",
        expires_at=None, allowed_ips=(), api_version=None, rate_limit=None,
        rate_limit_window=None, partner_status="active", partner_deleted=False, plan=None)


def main() -> None:
    hasher = KeyHasher(secrets.token_urlsafe(32))
    with tempfile.TemporaryDirectory() as folder:
        url, drop = database_url(folder)
        try:
            upgrade_to_head(url)
            engine = sa.create_engine(url)
            with engine.begin() as connection:
                partner_id = connection.execute(sa.insert(Partner).values(
                    company_name="Bench").returning(Partner.id)).scalar_one()
            stored: list[str] = []
            per_size = {}
            for size in SIZES:
                stored += store_keys(engine, hasher, partner_id, size - len(stored))
                per_size[size] = time_lookups(engine, hasher, stored)
            engine.dispose()
        finally:
            drop()
    cached = time_cached(hasher, stored)

    hashed = bcrypt.hashpw(b"sk_test_" + secrets.token_urlsafe(32).encode(), bcrypt.gensalt(12))
    started = time.perf_counter()
    for _ in range(3):
        bcrypt.checkpw(b"wrong", hashed)
    bcrypt_seconds = (time.perf_counter() - started) / 3

    for size, seconds in per_size.items():
        print(f"{size:>7} stored keys: {seconds * 1e6:8.0f} us per uncached verification")
    flatness = max(per_size.values()) / min(per_size.values())
    print(f"largest / smallest size: {flatness:.2f}x")
    print(f"cached verification (HMAC + cache hit): {cached * 1e6:.1f} us")
    print(f"bcrypt cost 12: {bcrypt_seconds * 1e6:.0f} us per check")
    worst = max(per_size.values())
    print(f"bcrypt / uncached lookup (worst size): {bcrypt_seconds / worst:.0f}x")
    print(f"bcrypt / cached verification: {bcrypt_seconds / cached:.0f}x")


if __name__ == "__main__":
    main()
