"""GET /metrics: what it counts, who may read it, and the multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fkod.core import metrics
from fkod.core.db import run_in_transaction
from fkod.core.tasks import WorkerHeartbeat
from fkod.core.testing import TestClient, auth_header
from fkod.core.webhooks import outbox
from tests.functional.test_gateway_limits import put_partner_on_plan

pytestmark = pytest.mark.shared_app

LOOPBACK = {"REMOTE_ADDR": "127.0.0.1"}
OUTSIDE = {"REMOTE_ADDR": "203.0.113.7"}


def scrape(client, environ=LOOPBACK, headers=None) -> dict:
    """Return {(name, sorted labels): value} of every sample of /metrics."""
    response = client.web.get("/metrics", extra_environ=environ, headers=headers or {},
                              status=200)
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move_with_requests(client):
    before = scrape(client)
    for _ in range(3):
        client.web.get("/health")
    client.web.get("/api/no-such-route", status=404)
    after = scrape(client)

    health = {"route": "health", "method": "GET", "status": "200"}
    assert value(after, "fkod_http_requests_total", **health) == \
        value(before, "fkod_http_requests_total", **health) + 3
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(after, "fkod_http_requests_total", **unmatched) >= \
        value(before, "fkod_http_requests_total", **unmatched) + 1
    assert value(after, "fkod_http_request_duration_seconds_count", route="health") == \
        value(before, "fkod_http_request_duration_seconds_count", route="health") + 3
    assert value(after, "fkod_http_request_duration_seconds_bucket", route="health",
                 le="+Inf") >= 3
    # Scrapes are not counted.
    assert value(after, "fkod_http_requests_total", route="metrics", method="GET",
                 status="200") == 0


def test_state_gauges(client):
    registry = client.registry
    heartbeat = None
    if not registry["tasks"].in_process:
        # fkod worker processes announce themselves with a heartbeat key.
        heartbeat = WorkerHeartbeat(registry["redis"],
                                    key_prefix=registry.settings["fkod.redis.key_prefix"],
                                    name="metrics-test-1")
        assert value(scrape(client), "fkod_workers_live") == 0
        heartbeat.beat()
    try:
        samples = scrape(client)
    finally:
        if heartbeat is not None:
            heartbeat.stop()
    assert ("fkod_task_queue_depth", (("queue", "fkod"),)) in samples
    assert value(samples, "fkod_workers_live") == 1
    assert value(samples, "fkod_webhook_outbox_lag_seconds") >= 0
    assert ("fkod_webhook_backlog", ()) in samples
    assert value(samples, "fkod_metrics_scrape_errors") == 0


def test_rate_limit_refusals_counted(client, app):
    partner, token = client.partner_with_token()
    key = client.create_key(token, scopes=("mentors:read",))
    put_partner_on_plan(app, partner["id"], per_hour=1, per_day=None)
    before = scrape(client)
    client.web.get("/api/v1/mentors", headers=auth_header(key["key"]))
    client.web.get("/api/v1/mentors", headers=auth_header(key["key"]), status=429)
    after = scrape(client)
    total = "fkod_rate_limit_refusals_total"
    assert sum(v for (name, _), v in after.items() if name == total) == \
        sum(v for (name, _), v in before.items() if name == total) + 1


def test_webhook_deliveries_counted(client, make_receiver):
    receiver = make_receiver(200, 500)
    partner, token = client.partner_with_token()
    client.web.post_json("/api/partners/webhooks", {
        "url": receiver.url, "event_types": ["user.created"], "retry_count": 3,
        "retry_delay": 60}, headers=auth_header(token), status=201)
    partner_id = int(partner["id"].rsplit("_", 1)[1])

    def work(session):
        _event, deliveries = outbox.publish_event(
            session, event_type="user.created", data={"id": "user_0"}, livemode=False,
            partner_ids=[partner_id], request_id=None)
        return [item.id for item in deliveries]

    before = scrape(client)
    worker = client.registry["webhook_worker"]
    for delivery_id in run_in_transaction(client.registry["db.session_factory"], work) + \
            run_in_transaction(client.registry["db.session_factory"], work):
        worker.deliver(delivery_id)
    after = scrape(client)
    for outcome in ("succeeded", "retrying"):
        assert value(after, "fkod_webhook_deliveries_total", outcome=outcome) == \
            value(before, "fkod_webhook_deliveries_total", outcome=outcome) + 1
    assert len(receiver.requests) == 2


@pytest.mark.parametrize("environ, headers", [
    (OUTSIDE, {}),
    (OUTSIDE, {"X-Forwarded-For": "127.0.0.1"}),  # no trusted proxy: the header is ignored
    (OUTSIDE, {"Authorization": "Bearer wrong-token"}),
    (LOOPBACK, {"Authorization": "Bearer wrong-token"}),
])
def test_hidden_from_others(app_factory, environ, headers):
    client = TestClient(app_factory(**{"fkod.metrics.token": "scrape-token-0123456789"}))
    response = client.web.get("/metrics", extra_environ=environ, headers=headers, status=404)
    unknown = client.web.get("/no-such-page", extra_environ=environ, status=404)
    assert response.body == unknown.body.replace(b"/no-such-page", b"/metrics") or \
        response.json["code"] == unknown.json["code"]
    assert b"fkod_http_requests_total" not in response.body


def test_token_opens_from_anywhere(app_factory):
    client = TestClient(app_factory(**{"fkod.metrics.token": "scrape-token-0123456789"}))
    samples = scrape(client, OUTSIDE, {"Authorization": "Bearer scrape-token-0123456789"})
    assert ("fkod_workers_live", ()) in samples


def test_allowed_networks_and_trusted_proxy(app_factory):
    client = TestClient(app_factory(**{
        "fkod.metrics.allowed_networks": "10.20.0.0/16",
        "fkod.proxy.trusted_proxies": "192.0.2.1"}))
    client.web.get("/metrics", extra_environ=LOOPBACK, status=404)
    client.web.get("/metrics", extra_environ={"REMOTE_ADDR": "10.20.3.4"}, status=200)
    # Through the trusted proxy, the forwarded address is the client's.
    client.web.get("/metrics", extra_environ={"REMOTE_ADDR": "192.0.2.1"},
                   headers={"X-Forwarded-For": "10.20.9.9"}, status=200)
    client.web.get("/metrics", extra_environ={"REMOTE_ADDR": "192.0.2.1"},
                   headers={"X-Forwarded-For": "198.51.100.2"}, status=404)


def test_multiprocess_mode_adds_up_the_processes(tmp_path):
    """Under gunicorn each worker process writes its own files; a scrape sums them."""
    directory = tmp_path / "prom"
    directory.mkdir()
    script = textwrap.dedent("""
        import multiprocessing, sys
        from prometheus_client.parser import text_string_to_metric_families
        from fkod.core import metrics

        def work():
            for _ in range(5):
                metrics.REQUESTS.labels("health", "GET", "200").inc()
            metrics.count_delivery("succeeded")

        if __name__ == "__main__":
            context = multiprocessing.get_context("spawn")
            workers = [context.Process(target=work) for _ in range(3)]
            for process in workers:
                process.start()
            for process in workers:
                process.join()
            text = metrics.render({}).decode()
            totals = {}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    totals[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
            print(totals[("fkod_http_requests_total",
                          (("method", "GET"), ("route", "health"), ("status", "200")))])
            print(totals[("fkod_webhook_deliveries_total", (("outcome", "succeeded"),))])
    """)
    (tmp_path / "multi.py").write_text(script)
    env = {**os.environ, metrics.MULTIPROC_ENV: str(directory)}
    result = subprocess.run([sys.executable, str(tmp_path / "multi.py")], env=env,
                            capture_output=True, text=True, timeout=120,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["15.0", "3.0"]
    assert list(directory.iterdir()), "no multiprocess files were written"


def test_exported_names_cover_the_output(client):
    client.web.get("/health")
    names = {name for name, _labels in scrape(client)}
    ours = {name for name in names if name.startswith("fkod_")}
    assert ours <= metrics.exported_metric_names()
