"""The platform status (``GET /api/developers/status``)."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import subprocess
import time

import pytest
import redis
import sqlalchemy as sa

from fkod.core.db import run_in_transaction, utcnow
from fkod.core.ids import parse_id
from fkod.core.metering.models import ApiUsage
from fkod.core.tasks import WorkerHeartbeat
from fkod.core.testing import TestClient, auth_header
from fkod.core.webhooks.models import Event, Webhook, WebhookEvent
from tests.envelope import assert_envelope
from tests.functional.test_developer_limits import free_port
from tests.functional.test_developer_me import customer_token

pytestmark = pytest.mark.shared_app

STATUS = "/api/developers/status"
# Without a cache every request checks the components again.
NO_CACHE = {"fkod.developers.status_cache_seconds": "0"}
# Redis tests keep the rest of the stack off Redis, so only the status check uses it.
WITHOUT_REDIS_BACK_ENDS = {"fkod.ratelimit.backend": "memory", "fkod.metering.backend": "memory",
                           "fkod.tasks.broker": "inprocess"}


def status_of(client, token) -> dict:
    return client.web.get(STATUS, headers=auth_header(token), status=200).json


def add_pending_delivery(app, partner_id: str, age: dt.timedelta) -> None:
    """Store a pending delivery of ``age`` to a paused endpoint, so no worker sends it."""
    def work(session):
        endpoint = Webhook(partner_id=parse_id("partner", partner_id), event_type="user.created",
                           event_types=["user.created"], url="http://127.0.0.1:9/hook",
                           secret_key="unused", status="paused", livemode=False)
        event = Event(public_id=f"evt_status_{time.monotonic_ns()}", type="user.created",
                      payload={}, livemode=False, created_at=utcnow() - age)
        session.add_all([endpoint, event])
        session.flush()
        session.add(WebhookEvent(webhook_id=endpoint.id, event_id=event.id,
                                 event_type="user.created", event_data={}, status="pending",
                                 created_at=utcnow() - age))

    run_in_transaction(app.registry["db.session_factory"], work)


def test_status_components_and_rule(app_factory):
    app = app_factory(**NO_CACHE)
    client = TestClient(app)
    partner, token = client.partner_with_token()
    production = not app.registry["tasks"].in_process

    body = status_of(client, token)
    components = body["components"]
    assert body["checked_at"].endswith("Z")
    assert components["database"]["status"] == "up"
    assert components["database"]["latency_ms"] >= 0
    assert components["broker"]["status"] == "up"
    assert components["broker"]["queue_depth"] >= 0
    assert components["webhooks"]["oldest_pending_age_seconds"] is None
    assert components["availability"]["last_24_hours"] is None
    if production:
        assert components["redis"]["status"] == "up"
        assert components["broker"]["kind"] == "redis"
        # The test process runs a worker but writes no heartbeat: no live worker.
        assert components["workers"] == {"status": "down", "kind": "redis", "live_workers": 0,
                                         "workers": [],
                                         "latency_ms": components["workers"]["latency_ms"]}
        assert body["status"] == "degraded"
        settings = app.registry.settings
        heartbeat = WorkerHeartbeat(app.registry["redis"],
                                    key_prefix=settings["fkod.redis.key_prefix"],
                                    name="test-host-1", interval_seconds=1)
        heartbeat.start()
        try:
            body = status_of(client, token)
            assert body["components"]["workers"]["workers"] == ["test-host-1"]
            assert body["status"] == "operational"
        finally:
            heartbeat.stop()
        assert status_of(client, token)["components"]["workers"]["status"] == "down"
    else:
        assert components["redis"] == {"status": "not_configured",
                                       "latency_ms": components["redis"]["latency_ms"]}
        assert components["broker"]["kind"] == "inprocess"
        assert components["workers"]["status"] == "up"
        assert body["status"] == "operational"
        app.registry["tasks"].stop()
        body = status_of(client, token)
        assert body["components"]["workers"]["status"] == "down"
        assert body["status"] == "degraded"

    add_pending_delivery(app, partner["id"], dt.timedelta(minutes=20))
    webhooks = status_of(client, token)["components"]["webhooks"]
    assert 20 * 60 <= webhooks["oldest_pending_age_seconds"] < 21 * 60
    assert webhooks["status"] == "degraded"


def test_status_availability_and_cache(app_factory):
    app = app_factory()
    client = TestClient(app)
    partner, token = client.partner_with_token()
    now = utcnow()
    rows = [{"partner_id": parse_id("partner", partner["id"]), "endpoint": "/api/v1/users",
             "method": "GET", "status_code": status, "livemode": False,
             "created_at": now - dt.timedelta(hours=hours)}
            for status, hours in ((200, 1), (200, 2), (503, 3), (404, 4), (500, 48))]
    with app.registry["db.engine"].begin() as connection:
        connection.execute(ApiUsage.__table__.insert(), rows)

    availability = status_of(client, token)["components"]["availability"]
    assert availability["last_24_hours"] == 0.75
    assert availability["last_7_days"] == 0.6
    assert availability["status"] == "degraded"

    # The report is cached for fkod.developers.status_cache_seconds (5 by default).
    with app.registry["db.engine"].begin() as connection:
        connection.execute(sa.delete(ApiUsage.__table__))
    assert status_of(client, token)["components"]["availability"]["last_24_hours"] == 0.75

    assert_envelope(client.web.get(STATUS, status=401), 401)
    learner = customer_token(client, "status-learner@example.org")
    assert_envelope(client.web.get(STATUS, headers=auth_header(learner), status=403), 403)
    response = client.web.get(STATUS + "?fresh=1", headers=auth_header(token), status=400)
    assert [error["name"] for error in assert_envelope(response, 400)["errors"]] == ["fresh"]


def test_status_redis_unreachable_or_hanging(app_factory):
    # Nothing listens on the first port. The second accepts connections and never replies.
    app = app_factory(**NO_CACHE, **WITHOUT_REDIS_BACK_ENDS,
                      **{"fkod.redis.url": f"redis://127.0.0.1:{free_port()}/0"})
    client = TestClient(app)
    _partner, token = client.partner_with_token()

    body = status_of(client, token)
    assert body["components"]["redis"]["status"] == "down"
    assert body["components"]["redis"]["error"]
    assert body["status"] == "degraded"

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        hanging = app_factory(**NO_CACHE, **WITHOUT_REDIS_BACK_ENDS, **{
            "fkod.redis.url": f"redis://127.0.0.1:{silent.getsockname()[1]}/0"})
        hanging_client = TestClient(hanging)
        _partner, hanging_token = hanging_client.partner_with_token()
        started = time.monotonic()
        body = status_of(hanging_client, hanging_token)
        elapsed = time.monotonic() - started
    assert body["components"]["redis"]["status"] == "down"
    assert body["components"]["database"]["status"] == "up"
    assert elapsed < 2.5


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_status_private_redis_stopped(app_factory, tmp_path):
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                probe.ping()
                break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        probe.close()
        app = app_factory(**NO_CACHE, **WITHOUT_REDIS_BACK_ENDS,
                          **{"fkod.redis.url": f"redis://127.0.0.1:{port}/0"})
        client = TestClient(app)
        _partner, token = client.partner_with_token()
        assert status_of(client, token)["components"]["redis"]["status"] == "up"

        server.terminate()
        server.wait(timeout=10)
        body = status_of(client, token)
        assert body["components"]["redis"]["status"] == "down"
        assert body["status"] == "degraded"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
