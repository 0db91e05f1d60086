"""Gateway overhead: a gateway call against a bare endpoint of the same application.

Both run in this process through WebTest on a SQLite file, so the ratio is
what authentication, the scope check, the rate limiter and metering add to
the platform's own request handling (request id, transaction, rendering).
Run: python bench/bench_gateway.py [requests]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from fkod import shutdown
from fkod.core.auth.models import Partner
from fkod.core.billing.models import Plan
from fkod.core.db import run_in_transaction
from fkod.core.migrations import upgrade_to_head
from fkod.core.testing import TestClient, auth_header, make_app, make_settings


def timed(call, count: int) -> float:
    for _ in range(50):
        call()
    started = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - started) / count


def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = make_settings(Path(folder))
        upgrade_to_head(settings["fkod.db.url"])
        app = make_app(settings)
        client = TestClient(app)
        try:
            partner, token = client.partner_with_token()
            key = client.create_key(token, scopes=("mentors:read",))["key"]

            def use_enterprise(session):
                enterprise = session.scalar(sa.select(Plan).where(Plan.code == "enterprise"))
                session.get(Partner, int(partner["id"].split("_")[1])).plan_id = enterprise.id

            run_in_transaction(app.registry["db.session_factory"], use_enterprise)
            headers = auth_header(key)
            bare = timed(lambda: client.web.get("/health"), count)
            gateway = timed(lambda: client.web.get("/api/v1/mentors", headers=headers), count)
        finally:
            shutdown(app.registry)
    print(f"{count} requests each, WebTest in-process, SQLite")
    print(f"bare endpoint (/health): {bare * 1e6:.0f} us per request")
    print(f"gateway (GET /api/v1/mentors, key + scope + limiter + metering): "
          f"{gateway * 1e6:.0f} us per request")
    print(f"gateway / bare endpoint: {gateway / bare:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
