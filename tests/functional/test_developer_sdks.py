"""The SDK list and archives (``/api/developers/sdks``)."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest

from fkod.core.testing import TestClient, auth_header
from tests.envelope import assert_envelope
from tests.functional.test_developer_me import customer_token

pytestmark = pytest.mark.shared_app

SDKS = "/api/developers/sdks"


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_sdk_dir(root):
    """An sdk folder with python, javascript and go SDKs and no java one."""
    write(root / "python" / "pyproject.toml",
          '[project]\nname = "fkod-sdk"\nversion = "1.4.2"\n')
    write(root / "python" / "fkod_sdk" / "__init__.py", "VERSION = '1.4.2'\n")
    write(root / "python" / "fkod_sdk" / "__pycache__" / "x.cpython-311.pyc", "compiled")
    write(root / "python" / "dist" / "fkod_sdk-1.4.2.tar.gz", "built")
    write(root / "python" / ".env", "SECRET=1")
    write(root / "python" / "README.md", "# F-KOD Python SDK\n")
    write(root / "javascript" / "package.json",
          json.dumps({"name": "@fkod/sdk", "version": "0.9.0"}))
    write(root / "javascript" / "src" / "index.js", "export const version = '0.9.0';\n")
    write(root / "javascript" / "node_modules" / "left-pad" / "index.js", "module.exports = 1;\n")
    write(root / "go" / "go.mod", "module github.com/fkod/fkod-go\n\ngo 1.22\n")
    write(root / "go" / "version.go", 'package fkod\n\nconst Version = "2.0.1"\n')
    write(root / "java" / "Client.class", "compiled")
    (root / "java").rename(root / "not-a-language")
    return root


def archive_names(body: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
        return sorted(archive.getnames())


def test_sdks_list_and_download(app_factory, tmp_path):
    sdk_dir = make_sdk_dir(tmp_path / "sdk")
    app = app_factory(**{"fkod.developers.sdk_dir": str(sdk_dir)})
    client = TestClient(app)
    _partner, token = client.partner_with_token()
    headers = auth_header(token)

    listed = client.web.get(SDKS, headers=headers, status=200).json["data"]
    by_language = {item["language"]: item for item in listed}
    assert list(by_language) == ["python", "javascript", "go"]
    python = by_language["python"]
    assert python["package_name"] == "fkod-sdk"
    assert python["version"] == "1.4.2"
    assert python["install_command"] == "pip install fkod-sdk==1.4.2"
    assert python["docs_url"] == "sdk/python/README.md"
    assert python["download_url"].endswith("/api/developers/sdks/python/download")
    assert by_language["javascript"]["install_command"] == "npm install @fkod/sdk@0.9.0"
    assert by_language["go"]["package_name"] == "github.com/fkod/fkod-go"
    assert by_language["go"]["version"] == "2.0.1"

    download = client.web.get(f"{SDKS}/python/download", headers=headers, status=200)
    assert download.content_type == "application/gzip"
    assert download.headers["Content-Disposition"] == \
        'attachment; filename="fkod-sdk-python-1.4.2.tar.gz"'
    assert archive_names(download.body) == [
        "fkod-sdk-python-1.4.2/README.md", "fkod-sdk-python-1.4.2/fkod_sdk/__init__.py",
        "fkod-sdk-python-1.4.2/pyproject.toml"]
    etag = download.headers["ETag"]
    again = client.web.get(f"{SDKS}/python/download", headers=headers, status=200)
    assert again.headers["ETag"] == etag
    assert again.body == download.body
    client.web.get(f"{SDKS}/python/download", headers={**headers, "If-None-Match": etag},
                   status=304)

    # A changed file gives a new archive and a new ETag.
    changed = sdk_dir / "python" / "fkod_sdk" / "__init__.py"
    changed.write_text("VERSION = '1.4.3'\n")
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    rebuilt = client.web.get(f"{SDKS}/python/download", headers=headers, status=200)
    assert rebuilt.headers["ETag"] != etag

    javascript = client.web.get(f"{SDKS}/javascript/download", headers=headers, status=200)
    assert archive_names(javascript.body) == ["fkod-sdk-javascript-0.9.0/package.json",
                                              "fkod-sdk-javascript-0.9.0/src/index.js"]

    for language in ("java", "ruby", "..", "python%2F.."):
        response = client.web.get(f"{SDKS}/{language}/download", headers=headers,
                                  expect_errors=True)
        assert response.status_int == 404, language
    assert_envelope(client.web.get(f"{SDKS}/java/download", headers=headers, status=404), 404,
                    "not_found")


def test_sdks_empty_folder_and_access(app_factory, tmp_path):
    app = app_factory(**{"fkod.developers.sdk_dir": str(tmp_path / "missing")})
    client = TestClient(app)
    _partner, token = client.partner_with_token()

    assert client.web.get(SDKS, headers=auth_header(token), status=200).json == {"data": []}
    assert_envelope(client.web.get(SDKS, status=401), 401)
    assert_envelope(client.web.get(f"{SDKS}/python/download", status=401), 401)
    learner = customer_token(client, "sdk-learner@example.org")
    assert_envelope(client.web.get(SDKS, headers=auth_header(learner), status=403), 403)
    response = client.web.get(SDKS + "?language=go", headers=auth_header(token), status=400)
    assert [error["name"] for error in assert_envelope(response, 400)["errors"]] == ["language"]
