"""The S3 document store against moto's S3 server on 127.0.0.1: the store contract and an upload.

Every client gets the server's endpoint and static credentials, and the
instance metadata service is switched off, so nothing reaches AWS.
"""

from __future__ import annotations

import hashlib
import secrets

import boto3
import pytest
from moto.server import ThreadedMotoServer

from fkod.core.settings import load_settings
from fkod.core.storage import S3Storage, StorageUnavailable, make_storage
from fkod.core.testing import TestClient, auth_header
from tests.unit.test_storage import PDF, StorageContract

ACCESS_KEY_ID = "testing-access-key"
SECRET_ACCESS_KEY = "testing-secret-key"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def s3_endpoint():
    """Start moto's S3 server on a free loopback port for this module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def new_bucket(endpoint: str) -> str:
    name = f"documents-{secrets.token_hex(4)}"
    admin_client(endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def shared_bucket(s3_endpoint) -> str:
    """One bucket for the contract tests; each of them works on keys of its own."""
    return new_bucket(s3_endpoint)


def admin_client(endpoint: str):
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY)


def s3_settings(endpoint: str, bucket: str) -> dict:
    return {
        "fkod.storage.backend": "s3",
        "fkod.storage.s3_endpoint_url": endpoint,
        "fkod.storage.s3_bucket": bucket,
        "fkod.storage.s3_region": REGION,
        "fkod.storage.s3_access_key_id": ACCESS_KEY_ID,
        "fkod.storage.s3_secret_access_key": SECRET_ACCESS_KEY,
        "fkod.storage.s3_addressing_style": "path",
        "fkod.storage.s3_key_prefix": "verification/",
    }


class TestS3Storage(StorageContract):
    @pytest.fixture
    def storage(self, s3_endpoint, shared_bucket):
        settings = load_settings({
            "fkod.db.url": "sqlite://", "fkod.secrets.api_key_pepper": "p" * 32,
            "fkod.secrets.webhook_encryption_key": "k",
            **s3_settings(s3_endpoint, shared_bucket),
        }, environ={})
        return make_storage(settings)

    def test_object_has_prefix_and_type(self, storage, s3_endpoint, shared_bucket):
        key = storage.put(PDF, "application/pdf")

        stored = admin_client(s3_endpoint).get_object(Bucket=shared_bucket, Key=key)
        assert key.startswith("verification/")
        assert stored["ContentType"] == "application/pdf"
        assert stored["Body"].read() == PDF

    def test_missing_bucket_unavailable(self, s3_endpoint):
        client = admin_client(s3_endpoint)
        storage = S3Storage(client, f"missing-{secrets.token_hex(4)}")

        with pytest.raises(StorageUnavailable):
            storage.put(PDF, "application/pdf")


def test_upload_through_api_lands_in_bucket(app_factory, s3_endpoint):
    bucket = new_bucket(s3_endpoint)
    app = app_factory(**s3_settings(s3_endpoint, bucket))
    client = TestClient(app)
    _partner, token = client.partner_with_token()

    uploaded = client.web.post(
        "/api/partners/verification/documents", params={"kind": "registration"},
        upload_files=[("file", "registration.pdf", PDF, "application/pdf")],
        headers=auth_header(token), status=201).json

    objects = admin_client(s3_endpoint).list_objects_v2(Bucket=bucket).get("Contents", [])
    assert len(objects) == 1
    stored = admin_client(s3_endpoint).get_object(Bucket=bucket, Key=objects[0]["Key"])
    assert stored["Body"].read() == PDF
    assert uploaded["sha256"] == hashlib.sha256(PDF).hexdigest()
    assert app.registry["document_storage"].open(objects[0]["Key"]) == PDF

    client.web.delete(f"/api/partners/verification/documents/{uploaded['id']}",
                      headers=auth_header(token), status=204)

    assert admin_client(s3_endpoint).list_objects_v2(Bucket=bucket).get("KeyCount") == 0
