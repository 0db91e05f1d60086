"""Storage of verification documents: local files or an S3-compatible object store.

``fkod.storage.backend`` chooses the back end, and both have one interface:

* ``put(data, content_type) -> key`` stores the bytes under a new key that the
  platform generates from a random UUID, so no user input ever becomes part
  of a file path or an object name;
* ``open(key) -> bytes`` returns the bytes, or raises :class:`DocumentNotFound`;
* ``delete(key)`` removes them; deleting a key that does not exist does nothing.

Documents are never served publicly: no route reads the store, and the local
directory must lie outside the ``fkod`` package, where static assets live.
A failure of the back end raises :class:`StorageUnavailable`, which the API
returns as a 503 error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from pathlib import Path
from typing import Protocol

import fkod
from fkod.core.errors import ServiceUnavailable
from fkod.core.settings import ConfigurationError

log = logging.getLogger(__name__)

# A key of the local store is the UUID's 32 hex digits. An S3 key is the
# configured prefix followed by them. The prefix setting may have changed since
# a document was stored, so any prefix of safe characters is accepted.
_LOCAL_KEY = re.compile(r"[0-9a-f]{32}")
_S3_KEY = re.compile(r"[A-Za-z0-9!_.*'()/-]{0,200}[0-9a-f]{32}")


class DocumentNotFound(KeyError):
    """No document is stored under the key."""


class StorageUnavailable(ServiceUnavailable):
    """The document store failed or could not be reached."""

    code = "storage_unavailable"


class DocumentStorage(Protocol):
    """Interface of every document store."""

    def put(self, data: bytes, content_type: str) -> str: ...

    def open(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...


def _unavailable(action: str, error: Exception) -> StorageUnavailable:
    log.error("document storage failed", extra={"action": action, "error": str(error)[:200]})
    return StorageUnavailable(f"The document store failed to {action} the document; "
                              "retry the request later.")


class LocalFileStorage:
    """Documents as files under one directory, sharded by the first two hex digits of the key.

    Files are written to a temporary name, synced and renamed, so a reader
    never sees a partial file; files are readable by the owner only. The
    content type is not kept here, because the caller's database row stores it.
    """

    def __init__(self, directory: Path):
        self.directory = directory.resolve()
        package = Path(fkod.__file__).resolve().parent
        if self.directory == package or package in self.directory.parents:
            raise ConfigurationError(
                f"invalid setting fkod.storage.local_directory = {str(directory)!r}: the "
                f"directory is inside the fkod package ({package}); choose one outside it, "
                "such as %(here)s/var/documents")

    def _path(self, key: str) -> Path:
        if not isinstance(key, str) or _LOCAL_KEY.fullmatch(key) is None:
            raise DocumentNotFound(key)
        return self.directory / key[:2] / key

    def put(self, data: bytes, content_type: str) -> str:
        key = uuid.uuid4().hex
        path = self._path(key)
        temporary = path.with_name(f".{key}.partial")
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            raise _unavailable("store", exc) from None
        return key

    def open(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise DocumentNotFound(key) from None
        except OSError as exc:
            raise _unavailable("read", exc) from None

    def delete(self, key: str) -> None:
        try:
            path = self._path(key)
        except DocumentNotFound:
            return
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise _unavailable("delete", exc) from None


class S3Storage:
    """Documents as objects in one bucket of Amazon S3 or an S3-compatible server."""

    def __init__(self, client, bucket: str, key_prefix: str = ""):
        self.client = client
        self.bucket = bucket
        self.key_prefix = key_prefix

    @classmethod
    def from_settings(cls, settings: dict) -> S3Storage:
        """Build the store from the ``fkod.storage.s3_*`` settings.

        Without an access key id in the settings, boto3 looks credentials up
        itself (``AWS_*`` environment variables, shared files, an instance role).
        """
        import boto3
        from botocore.config import Config

        bucket = settings["fkod.storage.s3_bucket"]
        if not bucket:
            raise ConfigurationError(
                "missing setting fkod.storage.s3_bucket: fkod.storage.backend = s3 needs a "
                "bucket")
        timeout = settings["fkod.storage.s3_timeout_seconds"]
        config = Config(
            connect_timeout=timeout, read_timeout=timeout,
            retries={"mode": "standard", "max_attempts": 3},
            signature_version="s3v4",
            s3={"addressing_style": settings["fkod.storage.s3_addressing_style"]},
            # Checksums only where S3 requires them, which every S3-compatible
            # server understands.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        options = {"region_name": settings["fkod.storage.s3_region"], "config": config}
        if settings["fkod.storage.s3_endpoint_url"]:
            options["endpoint_url"] = settings["fkod.storage.s3_endpoint_url"]
        if settings["fkod.storage.s3_access_key_id"]:
            options["aws_access_key_id"] = settings["fkod.storage.s3_access_key_id"]
            options["aws_secret_access_key"] = settings["fkod.storage.s3_secret_access_key"]
        client = boto3.session.Session().client("s3", **options)
        return cls(client, bucket, settings["fkod.storage.s3_key_prefix"])

    def _check_key(self, key: str) -> str:
        if not isinstance(key, str) or _S3_KEY.fullmatch(key) is None:
            raise DocumentNotFound(key)
        return key

    def put(self, data: bytes, content_type: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.key_prefix + uuid.uuid4().hex
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                   ContentType=content_type)
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable("store", exc) from None
        return key

    def open(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._check_key(key)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            with response["Body"] as body:
                return body.read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise DocumentNotFound(key) from None
            raise _unavailable("read", exc) from None
        except BotoCoreError as exc:
            raise _unavailable("read", exc) from None

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            key = self._check_key(key)
        except DocumentNotFound:
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable("delete", exc) from None


def make_storage(settings: dict) -> DocumentStorage:
    """Build the document store that ``fkod.storage.backend`` names."""
    if settings["fkod.storage.backend"] == "s3":
        return S3Storage.from_settings(settings)
    return LocalFileStorage(Path(settings["fkod.storage.local_directory"]))


def includeme(config):
    config.registry["document_storage"] = make_storage(config.get_settings())
