"""Code samples generated from the OpenAPI document (``/api/developers/samples``)."""

from __future__ import annotations

import os
import shutil
import subprocess

import httpx
import pytest

from fkod.core.testing import auth_header, verify_partner
from tests.envelope import assert_envelope
from tests.live import serve

pytestmark = pytest.mark.shared_app

SAMPLES = "/api/developers/samples"
LANGUAGES = {"curl", "python", "javascript", "go", "java"}


@pytest.fixture
def member(client) -> dict:
    _partner, token = client.partner_with_token()
    return auth_header(token)


def all_samples(client, headers, **query) -> list[dict]:
    items, cursor = [], None
    while True:
        params = {"limit": "100", **query}
        if cursor:
            params["cursor"] = cursor
        body = client.web.get(SAMPLES, params=params, headers=headers).json
        items += body["data"]
        if not body["has_more"]:
            return items
        cursor = body["next_cursor"]


def test_samples_cover_every_operation(client, member):
    document = client.web.get("/api/openapi.json").json
    ids = {op["operationId"] for item in document["paths"].values()
           for method, op in item.items() if method in ("get", "put", "post", "delete")}

    samples = all_samples(client, member)
    by_operation: dict[str, set[str]] = {}
    for sample in samples:
        by_operation.setdefault(sample["operation_id"], set()).add(sample["language"])

    assert set(by_operation) == ids
    assert all(languages == LANGUAGES for languages in by_operation.values())
    assert len(samples) == len({(s["operation_id"], s["language"]) for s in samples})


def test_python_samples_compile(client, member):
    for sample in all_samples(client, member, language="python"):
        compile(sample["code"], sample["operation_id"], "exec")


def test_sample_fields_and_auth_header(client, member):
    body = client.web.get(SAMPLES, params={"operation_id": "v1_users.get"}, headers=member).json
    by_language = {sample["language"]: sample for sample in body["data"]}

    assert set(by_language) == LANGUAGES
    assert by_language["go"]["method"] == "GET"
    assert by_language["go"]["path"] == "/api/v1/users"
    assert "FKOD_API_KEY" in by_language["curl"]["code"]
    assert "System.getenv(\"FKOD_API_KEY\")" in by_language["java"]["code"]


def test_post_sample_has_body(client, member):
    body = client.web.get(SAMPLES, params={"operation_id": "developer_applications.post",
                                           "language": "curl"}, headers=member).json

    assert len(body["data"]) == 1
    code = body["data"][0]["code"]
    assert "--data" in code
    assert "FKOD_LOGIN_TOKEN" in code


def test_unknown_operation_not_found(client, member):
    response = client.web.get(SAMPLES, params={"operation_id": "nope.get"}, headers=member,
                              status=404)

    body = assert_envelope(response, 404, "not_found")
    assert "nope.get" in body["message"]
    assert body["errors"][0]["name"] == "operation_id"


@pytest.mark.parametrize("query, field", [
    ({"language": "rust"}, "language"),
    ({"limit": "0"}, "limit"),
    ({"cursor": "???"}, "cursor"),
    ({"unknown": "1"}, "unknown"),
])
def test_bad_query_rejected(client, member, query, field):
    response = client.web.get(SAMPLES, params=query, headers=member, status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert [error["name"] for error in body["errors"]] == [field]


def test_samples_need_login(client):
    client.web.get(SAMPLES, status=401)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_sample_runs_against_live_server(app, client):
    partner, token = client.partner_with_token()
    verify_partner(app, partner["id"])
    key = client.create_key(token, scopes=["users:read"])["key"]
    with serve(app) as base_url:
        samples = httpx.get(f"{base_url}{SAMPLES}", headers=auth_header(token),
                            params={"operation_id": "v1_users.get", "language": "curl"}).json()
        code = samples["data"][0]["code"]
        assert code.startswith(f"curl -sS -X GET {base_url}/api/v1/users")

        result = subprocess.run(["bash", "-c", code.rstrip() + " -w '\\n%{http_code}'"],
                                env={**os.environ, "FKOD_API_KEY": key}, capture_output=True,
                                text=True, timeout=30, check=True)

    body, status = result.stdout.rsplit("\n", 1)
    assert status == "200"
    assert '"data"' in body


COMPILED_OPERATIONS = ("v1_users.get", "developer_applications.post")


def samples_for(client, headers, language: str) -> list[dict]:
    return [sample for operation in COMPILED_OPERATIONS
            for sample in client.web.get(SAMPLES, headers=headers, params={
                "operation_id": operation, "language": language}).json["data"]]


@pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed")
def test_go_samples_build(client, member, tmp_path):
    for number, sample in enumerate(samples_for(client, member, "go")):
        directory = tmp_path / f"go{number}"
        directory.mkdir()
        (directory / "main.go").write_text(sample["code"])
        result = subprocess.run(["go", "vet", "main.go"], cwd=directory, capture_output=True,
                                text=True, timeout=120,
                                env={**os.environ, "GOFLAGS": "-mod=mod", "GO111MODULE": "off",
                                     "GOCACHE": str(tmp_path / "gocache")})
        assert result.returncode == 0, (sample["operation_id"], result.stderr)


@pytest.mark.skipif(shutil.which("javac") is None, reason="javac is not installed")
def test_java_samples_compile(client, member, tmp_path):
    for number, sample in enumerate(samples_for(client, member, "java")):
        directory = tmp_path / f"java{number}"
        directory.mkdir()
        (directory / "Example.java").write_text(sample["code"])
        result = subprocess.run(["javac", "Example.java"], cwd=directory, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, (sample["operation_id"], result.stderr)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_javascript_samples_parse(client, member, tmp_path):
    for number, sample in enumerate(samples_for(client, member, "javascript")):
        path = tmp_path / f"sample{number}.mjs"
        path.write_text(sample["code"])
        result = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, (sample["operation_id"], result.stderr)
