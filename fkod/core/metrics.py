"""Prometheus metrics and the ``GET /metrics`` endpoint.

Two kinds of metrics:

* Counters and histograms that requests and workers move as they run
  (requests, latency, rate-limit refusals, webhook deliveries). They live in
  prometheus_client's default registry. Under gunicorn with several worker
  processes, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory writable
  by every process (and empty it at each start): each process then writes its
  values to files there and a scrape adds them up
  (:class:`prometheus_client.multiprocess.MultiProcessCollector`), whichever
  process serves the scrape.
* Gauges read from the shared state at scrape time (task queue depth, the
  webhook backlog and outbox lag, live workers), by :class:`StateCollector`.
  They come from the database and Redis, so every process reports the same
  values, and they need no multiprocess files.

``/metrics`` answers only clients whose address (after the trusted proxies of
``fkod.proxy.trusted_proxies``) is in ``fkod.metrics.allowed_networks``, or
that send ``Authorization: Bearer <fkod.metrics.token>``. Everyone else gets
the platform's ordinary 404, so the endpoint's existence is not revealed.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time

import sqlalchemy as sa
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from pyramid.httpexceptions import HTTPNotFound
from pyramid.response import Response

from fkod.core.clientaddr import client_address
from fkod.core.db import read_only, utcnow
from fkod.core.settings import ConfigurationError

log = logging.getLogger(__name__)

ROUTE_NAME = "metrics"
PATH = "/metrics"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Requests that matched no route share one label, so unknown paths cannot
# create a series each.
UNMATCHED = "unmatched"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "fkod_http_requests_total", "HTTP requests answered, by route name, method and status.",
    ("route", "method", "status"))
LATENCY = Histogram(
    "fkod_http_request_duration_seconds",
    "Time from the request's arrival to its response, by route name.",
    ("route",), buckets=LATENCY_BUCKETS)
RATE_LIMITED = Counter(
    "fkod_rate_limit_refusals_total",
    "Calls refused with 429 by the gateway's rate limits, by route name and mode.",
    ("route", "mode"))
WEBHOOK_DELIVERIES = Counter(
    "fkod_webhook_deliveries_total",
    "Webhook delivery attempts, by outcome: succeeded, retrying (failed, another attempt "
    "is scheduled) or failed (the last attempt failed).",
    ("outcome",))
PARTNER_ALERTS = Counter(
    "fkod_partner_alerts_total", "Partner alerts raised, by event type.", ("event_type",))

# Names of every metric this module exports, with the suffixes Prometheus adds;
# the alert rules in deploy/prometheus/alerts.yml may use only these (and up).
STATE_METRICS = ("fkod_task_queue_depth", "fkod_webhook_backlog",
                 "fkod_webhook_outbox_lag_seconds", "fkod_workers_live",
                 "fkod_metrics_scrape_errors")


def exported_metric_names() -> set[str]:
    names = set(STATE_METRICS)
    for base in ("fkod_http_requests", "fkod_rate_limit_refusals", "fkod_webhook_deliveries",
                 "fkod_partner_alerts"):
        names |= {base + "_total", base + "_created"}
    for suffix in ("_bucket", "_sum", "_count", "_created"):
        names.add("fkod_http_request_duration_seconds" + suffix)
    return names


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


# Recording -------------------------------------------------------------------------


def observe_request(request, response) -> None:
    route = request.matched_route.name if request.matched_route else UNMATCHED
    if route == ROUTE_NAME:
        return
    REQUESTS.labels(route, request.method, str(response.status_code)).inc()
    started = getattr(request, "started_at", None)
    if started is not None:
        LATENCY.labels(route).observe(max(0.0, time.perf_counter() - started))


def count_rate_limited(request, livemode: bool) -> None:
    route = request.matched_route.name if request.matched_route else UNMATCHED
    RATE_LIMITED.labels(route, "live" if livemode else "test").inc()


def count_delivery(status: str) -> None:
    """Count one recorded attempt by the status it left the delivery in."""
    outcome = {"succeeded": "succeeded", "failed": "failed", "pending": "retrying"}.get(
        status, status)
    WEBHOOK_DELIVERIES.labels(outcome).inc()


# Gauges read at scrape time ---------------------------------------------------------------


class StateCollector:
    """Reads the task queue, the webhook outbox and the worker heartbeats of one application."""

    def __init__(self, registry):
        self.registry = registry

    def describe(self):
        return []

    def collect(self):
        errors = 0
        depth = GaugeMetricFamily("fkod_task_queue_depth",
                                  "Messages waiting in the task broker, by queue.",
                                  labels=("queue",))
        try:
            for queue, size in queue_depths(self.registry["tasks"]).items():
                depth.add_metric((queue,), size)
        except Exception as exc:
            errors += 1
            log.warning("metrics: queue depth unavailable", extra={"error": str(exc)[:200]})
        yield depth

        backlog = GaugeMetricFamily("fkod_webhook_backlog",
                                    "Webhook deliveries not yet completed (pending or "
                                    "delivering).")
        lag = GaugeMetricFamily("fkod_webhook_outbox_lag_seconds",
                                "Age of the oldest undelivered webhook delivery, in seconds; "
                                "0 when none waits.")
        try:
            count, oldest = outbox_state(self.registry["db.engine"])
            backlog.add_metric((), count)
            lag.add_metric((), oldest)
        except Exception as exc:
            errors += 1
            log.warning("metrics: outbox state unavailable", extra={"error": str(exc)[:200]})
        yield backlog
        yield lag

        workers = GaugeMetricFamily("fkod_workers_live",
                                    "Task worker processes alive: fkod worker processes with "
                                    "a fresh heartbeat, or 1 for the embedded worker.")
        try:
            workers.add_metric((), live_workers(self.registry))
        except Exception as exc:
            errors += 1
            log.warning("metrics: worker heartbeats unavailable", extra={"error": str(exc)[:200]})
        yield workers

        failures = GaugeMetricFamily("fkod_metrics_scrape_errors",
                                     "Gauges of this scrape that could not be read.")
        failures.add_metric((), errors)
        yield failures


def queue_depths(tasks) -> dict[str, int]:
    from dramatiq.brokers.stub import StubBroker
    from dramatiq.common import dq_name

    from fkod.core.tasks import QUEUE

    broker = tasks.broker
    if isinstance(broker, StubBroker):
        return {QUEUE: broker.queues[QUEUE].qsize(),
                dq_name(QUEUE): broker.queues[dq_name(QUEUE)].qsize()}
    client = broker.client
    return {QUEUE: int(client.llen(f"{broker.namespace}:{QUEUE}")),
            dq_name(QUEUE): int(client.llen(f"{broker.namespace}:{dq_name(QUEUE)}"))}


def outbox_state(engine) -> tuple[int, float]:
    from fkod.core.webhooks.models import WebhookEvent

    def read(connection):
        return connection.execute(
            sa.select(sa.func.count(), sa.func.min(WebhookEvent.created_at))
            .where(WebhookEvent.status.in_(("pending", "delivering")))
        ).one()

    count, oldest = read_only(engine, read)
    if oldest is None:
        return int(count), 0.0
    if oldest.tzinfo is not None:
        oldest = oldest.replace(tzinfo=None)
    now = utcnow()
    if now.tzinfo is not None:
        now = now.replace(tzinfo=None)
    return int(count), max(0.0, (now - oldest).total_seconds())


def live_workers(registry) -> int:
    from fkod.core.tasks import heartbeat_prefix

    tasks = registry["tasks"]
    if tasks.in_process:
        return 1 if tasks.worker_alive() else 0
    client = registry["redis"]
    prefix = heartbeat_prefix(registry.settings["fkod.redis.key_prefix"])
    return sum(1 for _ in client.scan_iter(match=prefix + "*", count=500))


# The endpoint -------------------------------------------------------------------------


def parse_networks(values) -> tuple:
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ConfigurationError(
                f"invalid setting fkod.metrics.allowed_networks: {value!r} is not a CIDR range"
            ) from None
    return tuple(networks)


def allowed(request) -> bool:
    """Whether the caller may read /metrics: an allowed address, or the token."""
    settings = request.registry.settings
    token = settings["fkod.metrics.token"]
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        # A wrong token is refused even from an allowed address.
        return hmac.compare_digest(header[len("Bearer "):].encode(), token.encode())
    address = client_address(request)
    if not address:
        return False
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in request.registry["metrics.allowed_networks"])


def render(registry) -> bytes:
    """The text exposition of every metric: this process's (or all processes') and the state."""
    if multiprocess_mode():
        from prometheus_client import multiprocess

        counted = CollectorRegistry()
        multiprocess.MultiProcessCollector(counted)
        body = generate_latest(counted)
    else:
        body = generate_latest(REGISTRY)
    state = CollectorRegistry(auto_describe=False)
    state.register(StateCollector(registry))
    return body + generate_latest(state)


def metrics_view(request):
    if not allowed(request):
        raise HTTPNotFound()
    response = Response(body=render(request.registry))
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    response.headers["Cache-Control"] = "no-store"
    return response


def includeme(config):
    settings = config.get_settings()
    config.registry["metrics.allowed_networks"] = parse_networks(
        settings["fkod.metrics.allowed_networks"])
    config.add_route(ROUTE_NAME, PATH, request_method="GET")
    config.add_view(metrics_view, route_name=ROUTE_NAME, request_method="GET")
