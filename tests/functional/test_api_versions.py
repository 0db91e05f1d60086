"""Dated API versions: the FKOD-Version header, keys pinned to a version, and adapters."""

from __future__ import annotations

import pytest

from fkod.core import versions
from fkod.core.db import run_in_transaction
from fkod.core.testing import auth_header
from fkod.plugins.learning.models import Mentor

pytestmark = pytest.mark.shared_app

MENTORS = "/api/v1/mentors"


@pytest.fixture
def mentor(app):
    def work(session):
        session.add(Mentor(name="Versioned Mentor", expertise="Design, Data", livemode=False))

    run_in_transaction(app.registry["db.session_factory"], work)
    return "Versioned Mentor"


def find(body: dict, name: str) -> dict:
    return next(item for item in body["data"] if item["name"] == name)


@pytest.fixture
def token(client):
    return client.partner_with_token()[1]


def test_new_key_uses_latest(client, token, mentor):
    key = client.create_key(token, scopes=("mentors:read",))
    response = client.web.get(MENTORS, headers=auth_header(key["key"]))
    assert key["api_version"] == versions.LATEST
    assert response.headers["FKOD-Version"] == versions.LATEST
    assert find(response.json, mentor)["expertise_areas"] == ["Design", "Data"]


def test_header_selects_first_version(client, token, mentor):
    key = client.create_key(token, scopes=("mentors:read",))
    headers = {**auth_header(key["key"]), "FKOD-Version": versions.FIRST_VERSION}
    response = client.web.get(MENTORS, headers=headers)
    item = find(response.json, mentor)
    assert response.headers["FKOD-Version"] == versions.FIRST_VERSION
    assert item["expertise"] == "Design, Data"
    assert "expertise_areas" not in item


def test_pinned_key_uses_its_version(client, token, mentor):
    key = client.create_key(token, scopes=("mentors:read",), api_version=versions.FIRST_VERSION)
    pinned = client.web.get(MENTORS, headers=auth_header(key["key"]))
    overridden = client.web.get(MENTORS, headers={**auth_header(key["key"]),
                                                  "FKOD-Version": versions.LATEST})
    assert find(pinned.json, mentor)["expertise"] == "Design, Data"
    assert find(overridden.json, mentor)["expertise_areas"] == ["Design", "Data"]


def test_pin_can_change(client, token, mentor):
    key = client.create_key(token, scopes=("mentors:read",))
    client.web.put_json(f"/api/partners/api-keys/{key['id']}",
                        {"api_version": versions.FIRST_VERSION}, headers=auth_header(token))
    response = client.web.get(MENTORS, headers=auth_header(key["key"]))
    assert response.headers["FKOD-Version"] == versions.FIRST_VERSION


@pytest.mark.parametrize("value", ["2020-01-01", "latest", "", "2026-12-01x", "é"])
def test_unknown_version_lists_known(client, token, value):
    key = client.create_key(token, scopes=("mentors:read",))
    response = client.web.get(MENTORS, headers={**auth_header(key["key"]),
                                                "FKOD-Version": value.encode().decode("latin-1")},
                              status=400)
    assert response.json["code"] == "unknown_api_version"
    assert response.json["errors"][0]["location"] == "header"
    assert all(version in response.json["message"] for version in versions.VERSIONS)


def test_unknown_pin_rejected(client, token):
    response = client.web.post_json("/api/partners/api-keys", {
        "key_name": "k", "scopes": ["mentors:read"], "api_version": "1999-01-01"},
        headers=auth_header(token), status=400)
    assert response.json["errors"][0]["name"] == "api_version"


def test_envelope_same_in_every_version(client, token, mentor):
    key = client.create_key(token, scopes=("mentors:read",))
    bodies = [client.web.get(MENTORS, headers={**auth_header(key["key"]),
                                               "FKOD-Version": version}).json
              for version in versions.VERSIONS]
    assert {tuple(sorted(body)) for body in bodies} == {("data", "has_more", "next_cursor")}
    assert {find(body, mentor)["id"] for body in bodies} == {find(bodies[0], mentor)["id"]}


def test_errors_same_in_every_version(client, token):
    key = client.create_key(token, scopes=("users:read",))
    codes = {client.web.get(MENTORS, headers={**auth_header(key["key"]), "FKOD-Version": v},
                            status=403).json["code"] for v in versions.VERSIONS}
    assert codes == {"missing_scope"}


def test_versions_ordered_and_dated():
    assert list(versions.VERSIONS) == sorted(versions.VERSIONS)
    assert len(set(versions.VERSIONS)) == len(versions.VERSIONS)
    assert all(len(version) == 10 and version[4] == version[7] == "-"
               for version in versions.VERSIONS)


def test_every_change_in_changelog():
    from pathlib import Path

    changelog = (Path(__file__).resolve().parents[2] / "docs" / "api-versions.md").read_text()
    assert all(f"### {change.version}" in changelog for change in versions.CHANGES)
