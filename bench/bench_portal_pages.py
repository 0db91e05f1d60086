"""Portal page times on the demo data, against the cheapest request of the same app.

Loads the demo data (`make demo-data`), signs in as the demo partner's owner
and as a superadmin, and requests every portal and admin console page whose
path has no placeholder, as the OpenAPI document lists them. Each page is
timed in this process through WebTest on a SQLite file; the baseline is
`GET /health` of the same app, run the same way.
Run: python bench/bench_portal_pages.py [requests per page]
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fkod import shutdown
from fkod.admin.testing import ADMIN_TEST_PASSWORD, create_admin
from fkod.core.db import run_in_transaction
from fkod.core.migrations import upgrade_to_head
from fkod.core.openapi import get_document
from fkod.core.testing import TestClient, make_app, make_settings
from fkod.demo_data import DEMO_EMAIL, DEMO_PASSWORD, load_demo_data

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
# The target: every page responds within this many seconds at the median.
TARGET_SECONDS = 1.0


def median_seconds(call, count: int) -> float:
    call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def sign_in(web, login_path: str, email: str, password: str) -> None:
    page = web.get(login_path)
    token = CSRF_FIELD.search(page.text).group(1)
    web.post(login_path, {"csrf_token": token, "email": email, "password": password},
             status=303)


def page_paths(app, prefix: str) -> list[str]:
    """GET pages under ``prefix`` whose path needs no id, from the OpenAPI document."""
    document = get_document(app.registry).document
    return sorted(path for path, methods in document["paths"].items()
                  if path.startswith(prefix) and "get" in methods and "{" not in path
                  and not path.endswith(("/logout", "/login")))


def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = make_settings(Path(folder))
        upgrade_to_head(settings["fkod.db.url"])
        app = make_app(settings)
        try:
            run_in_transaction(app.registry["db.session_factory"],
                               lambda session: load_demo_data(session, app.registry.settings))
            partner = TestClient(app)
            sign_in(partner.web, "/portal/login", DEMO_EMAIL, DEMO_PASSWORD)
            admin = TestClient(app)
            admin_email = create_admin(app, role="superadmin")["email"]
            sign_in(admin.web, "/admin/login", admin_email, ADMIN_TEST_PASSWORD)

            baseline = median_seconds(lambda: partner.web.get("/health"), count)
            timings = []
            for client, prefix in ((partner, "/portal"), (partner, "/marketplace"),
                                   (admin, "/admin")):
                for path in page_paths(app, prefix):
                    status = client.web.get(path, status="*").status_int
                    seconds = median_seconds(
                        lambda web=client.web, path=path: web.get(path, status="*"), count)
                    timings.append((path, status, seconds))
        finally:
            shutdown(app.registry)

    print(f"{count} requests per page, WebTest in-process, SQLite, demo data")
    print(f"baseline GET /health: {baseline * 1e3:.2f} ms")
    for path, status, seconds in timings:
        print(f"{path:45} {status}  {seconds * 1e3:8.2f} ms  {seconds / baseline:7.1f}x")
    slowest_path, _status, slowest = max(timings, key=lambda item: item[2])
    print(f"pages: {len(timings)}; slowest {slowest_path} at {slowest * 1e3:.2f} ms, "
          f"{slowest / baseline:.1f}x the baseline")
    verdict = "met" if slowest <= TARGET_SECONDS else "NOT met"
    print(f"target: every page within {TARGET_SECONDS:.0f} s at the median: {verdict}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
