"""A module-scoped application for the security suite.

Each security module builds one application on its own copy of the migrated
SQLite template, so the requests of a module share the partners, keys and
tokens it sets up once. Limits on anonymous requests are off unless a test
builds its own application to exercise them.
"""

from __future__ import annotations

import shutil

import pytest

from fkod import shutdown
from fkod.core.testing import TestClient, make_app, make_settings


@pytest.fixture(scope="module")
def security_client(tmp_path_factory, migrated_sqlite_template):
    tmp_path = tmp_path_factory.mktemp("security")
    shutil.copy(migrated_sqlite_template, tmp_path / "fkod.sqlite")
    settings = make_settings(tmp_path, extra={
        "fkod.ratelimit.per_address_per_minute": "0",
        "fkod.ratelimit.per_address_per_hour": "0",
    })
    app = make_app(settings)
    yield TestClient(app)
    shutdown(app.registry)
