"""The document stores: the contract every back end keeps, and the local store's own rules.

:class:`StorageContract` contains the tests every back end must pass; the S3
store runs them in ``tests/integration/test_storage_s3.py``.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

import fkod
from fkod.core.settings import ConfigurationError, load_settings
from fkod.core.storage import (
    DocumentNotFound,
    LocalFileStorage,
    S3Storage,
    StorageUnavailable,
    make_storage,
)

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
UNSAFE_KEYS = ["../../etc/passwd", "/etc/passwd", "..", "", "a" * 32 + "/../x",
               "ABCDEF0123456789ABCDEF0123456789", "0" * 31, "0" * 32 + "\n", None, 12]


class StorageContract:
    """Tests for any document store; a subclass provides the ``storage`` fixture."""

    def test_put_then_open_returns_bytes(self, storage):
        key = storage.put(PDF, "application/pdf")

        assert storage.open(key) == PDF

    def test_keys_are_new_each_time(self, storage):
        keys = {storage.put(b"\x89PNG\r\n\x1a\n same bytes", "image/png") for _ in range(5)}

        assert len(keys) == 5

    def test_key_names_no_user_input(self, storage):
        key = storage.put(PDF, "application/pdf")

        assert re.fullmatch(r"[A-Za-z0-9/_.-]*[0-9a-f]{32}", key), key

    def test_open_unknown_key_raises(self, storage):
        with pytest.raises(DocumentNotFound):
            storage.open("0123456789abcdef0123456789abcdef")

    def test_delete_then_open_raises(self, storage):
        key = storage.put(PDF, "application/pdf")

        storage.delete(key)

        with pytest.raises(DocumentNotFound):
            storage.open(key)

    def test_delete_twice_is_quiet(self, storage):
        key = storage.put(PDF, "application/pdf")

        storage.delete(key)
        storage.delete(key)

    def test_delete_keeps_other_documents(self, storage):
        kept_key = storage.put(b"%PDF- kept", "application/pdf")
        deleted_key = storage.put(b"%PDF- deleted", "application/pdf")

        storage.delete(deleted_key)

        assert storage.open(kept_key) == b"%PDF- kept"

    @pytest.mark.parametrize("key", UNSAFE_KEYS)
    def test_unsafe_key_not_found(self, storage, key):
        with pytest.raises(DocumentNotFound):
            storage.open(key)
        storage.delete(key)

    def test_large_document_round_trips(self, storage):
        data = b"\xff\xd8\xff" + os.urandom(3 * 1024 * 1024)

        key = storage.put(data, "image/jpeg")

        assert storage.open(key) == data


@pytest.fixture
def local_directory(tmp_path) -> Path:
    return tmp_path / "documents"


class TestLocalFileStorage(StorageContract):
    @pytest.fixture
    def storage(self, local_directory):
        return LocalFileStorage(local_directory)

    def test_file_readable_by_owner_only(self, storage, local_directory):
        key = storage.put(PDF, "application/pdf")

        path = local_directory / key[:2] / key
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_no_partial_file_left(self, storage, local_directory):
        storage.put(PDF, "application/pdf")

        names = [path.name for path in local_directory.rglob("*") if path.is_file()]
        assert len(names) == 1
        assert not names[0].startswith(".")

    def test_directory_created_on_first_put(self, storage, local_directory):
        assert not local_directory.exists()

        storage.put(PDF, "application/pdf")

        assert local_directory.is_dir()

    def test_unwritable_directory_unavailable(self, tmp_path):
        blocker = tmp_path / "not-a-directory"
        blocker.write_bytes(b"")
        storage = LocalFileStorage(blocker / "documents")

        with pytest.raises(StorageUnavailable) as caught:
            storage.put(PDF, "application/pdf")

        assert caught.value.status == 503
        assert caught.value.code == "storage_unavailable"


def settings_with(**values) -> dict:
    raw = {"fkod.db.url": "sqlite://", "fkod.secrets.api_key_pepper": "p" * 32,
           "fkod.secrets.webhook_encryption_key": "k"}
    raw.update({f"fkod.storage.{name}": value for name, value in values.items()})
    return load_settings(raw, environ={})


def test_make_storage_local_by_default(tmp_path):
    storage = make_storage(settings_with(local_directory=str(tmp_path / "docs")))

    assert isinstance(storage, LocalFileStorage)
    assert storage.directory == (tmp_path / "docs").resolve()


def test_relative_directory_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    storage = make_storage(settings_with(local_directory="var/documents"))

    assert storage.directory == (tmp_path / "var" / "documents").resolve()


@pytest.mark.parametrize("inside", ["", "static/documents", "portal"])
def test_directory_inside_package_refused(inside):
    package = Path(fkod.__file__).resolve().parent

    with pytest.raises(ConfigurationError, match=r"fkod\.storage\.local_directory"):
        make_storage(settings_with(local_directory=str(package / inside)))


def test_s3_without_bucket_refused():
    with pytest.raises(ConfigurationError, match=r"fkod\.storage\.s3_bucket"):
        make_storage(settings_with(backend="s3"))


def test_s3_settings_reach_client(monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    settings = settings_with(
        backend="s3", s3_bucket="documents",
        s3_endpoint_url="http://127.0.0.1:9", s3_region="eu-central-1",
        s3_access_key_id="AKIDEXAMPLE", s3_secret_access_key="secret-example",
        s3_key_prefix="docs/", s3_addressing_style="path")

    storage = make_storage(settings)

    assert isinstance(storage, S3Storage)
    assert storage.bucket == "documents"
    assert storage.key_prefix == "docs/"
    assert storage.client.meta.endpoint_url == "http://127.0.0.1:9"
    assert storage.client.meta.region_name == "eu-central-1"
    assert storage.client.meta.config.s3["addressing_style"] == "path"
    credentials = storage.client._request_signer._credentials
    assert credentials.access_key == "AKIDEXAMPLE"


def test_s3_unreachable_unavailable(monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # Port 9 on loopback (discard) has no listener here, so the connection is refused.
    storage = make_storage(settings_with(
        backend="s3", s3_bucket="documents", s3_endpoint_url="http://127.0.0.1:9",
        s3_access_key_id="AKIDEXAMPLE", s3_secret_access_key="secret-example",
        s3_addressing_style="path", s3_timeout_seconds="1"))

    with pytest.raises(StorageUnavailable):
        storage.put(PDF, "application/pdf")
