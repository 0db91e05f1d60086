"""Schemathesis over the OpenAPI document: every operation, with real credentials.

Each operation gets generated requests, valid and invalid, sent to the real
application in process. A response fails the test when it is a 5xx, has a
status code the document does not list for the operation, or has a body that
does not match the documented schema. One application serves the module in
each test process, so state built by earlier operations (keys, webhooks,
tickets) is there for later ones, as it is for a real client.

The run is bounded: ``FKOD_FUZZ_EXAMPLES`` generated cases per operation
(default 10; set 100 or more for a deeper run), without shrinking.
"""

from __future__ import annotations

import os
import shutil

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fkod import shutdown
from fkod.admin.testing import admin_with_headers
from fkod.core.auth.scopes import SCOPES
from fkod.core.openapi import (
    ADMIN_TOKEN_SCHEME,
    API_KEY_SCHEME,
    LOGIN_TOKEN_SCHEME,
    OAUTH_SCHEME,
)
from fkod.core.testing import TestClient, auth_header, make_app, make_settings, verify_partner

EXAMPLES = int(os.environ.get("FKOD_FUZZ_EXAMPLES", "10"))
# What a response must satisfy. Schemathesis's positive_data_acceptance is left
# out: the document states types and enums, while some rules (a cursor this
# API issued, an id that exists) can only be checked by the server, so a
# request that fits the schema may still get a documented 400 or 404.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
PARTNER_SCOPES = [scope.name for scope in SCOPES if not scope.admin_only]
# The operations are dealt into this many tests, so that parallel test
# processes share the run instead of one process doing all of it.
SHARDS = 4


class Identities:
    """The headers of each credential kind the document's security schemes name.

    An earlier operation may have logged its caller out everywhere, revoked a
    key or locked an account, so ``refresh`` sets up a new verified partner
    and a new admin before each operation, and every operation is tried with
    working credentials.
    """

    def __init__(self, app):
        self.app = app
        self.client = TestClient(app)
        self.by_scheme: dict[str, dict] = {}

    def refresh(self) -> None:
        partner, token = self.client.partner_with_token()
        verify_partner(self.app, partner["id"])
        key = self.client.create_key(token, scopes=PARTNER_SCOPES, key_name="fuzz")
        _admin, admin_headers = admin_with_headers(self.client, role="superadmin")
        self.by_scheme = {
            API_KEY_SCHEME: auth_header(key["key"]),
            OAUTH_SCHEME: auth_header(key["key"]),
            LOGIN_TOKEN_SCHEME: auth_header(token),
            ADMIN_TOKEN_SCHEME: admin_headers,
        }

    def headers_for(self, definition: dict) -> dict:
        for requirement in definition.get("security", []):
            for scheme in requirement:
                if scheme in self.by_scheme:
                    return dict(self.by_scheme[scheme])
        return {}


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory, migrated_sqlite_template):
    path = tmp_path_factory.mktemp("fuzz")
    shutil.copy(migrated_sqlite_template, path / "fkod.sqlite")
    # Per-address limits off: every request of the run comes from one address,
    # and Identities registers and logs in before each operation.
    app = make_app(make_settings(path, extra={"fkod.ratelimit.per_address_per_minute": "0",
                                              "fkod.ratelimit.per_address_per_hour": "0"}))
    yield app
    shutdown(app.registry)


@pytest.fixture(scope="module")
def identities(fuzzed_app) -> Identities:
    return Identities(fuzzed_app)


@pytest.mark.parametrize("shard", range(SHARDS))
def test_every_operation_keeps_its_contract(fuzzed_app, identities, subtests, shard):
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", fuzzed_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 100

    for operation in operations[shard::SHARDS]:
        identities.refresh()
        with subtests.test(msg=operation.label):
            check_operation(operation, identities.headers_for(operation.definition.raw))


def check_operation(operation, headers: dict) -> None:
    """Send ``EXAMPLES`` generated requests to one operation and validate each response."""

    @hypothesis.given(case=operation.as_strategy())
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def run(case):
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()
