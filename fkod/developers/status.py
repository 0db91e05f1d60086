"""The platform status for developers: each component checked with a short timeout.

Components: ``database`` (``SELECT 1``), ``redis`` (PING), ``broker`` (the
dramatiq queue depth), ``workers`` (the in-process worker, or the heartbeat
keys of ``fkod worker`` processes), ``webhooks`` (the oldest pending
delivery) and ``availability`` (calls without a 5xx over 24 hours and 7 days).

Overall status:

- ``down`` when the database check fails, because no API call can succeed;
- ``degraded`` when any other component is ``down`` or ``degraded``;
- ``operational`` otherwise (``not_configured`` counts as fine).

Checks run in parallel threads and the whole report waits at most
CHECK_DEADLINE_SECONDS; a check that has not finished by then is reported
``down`` with ``timed out``. A check that raises is ``down`` with its error
class, never a 500. Each process reuses the report for
``fkod.developers.status_cache_seconds``.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import threading
import time

import sqlalchemy as sa

from fkod.core.db import read_only, utcnow
from fkod.core.metering.models import ApiUsage, ApiUsageHourly
from fkod.core.metering.rollup import floor_hour, read_rolled_until
from fkod.core.tasks import QUEUE, heartbeat_prefix
from fkod.core.webhooks.models import WebhookEvent

log = logging.getLogger(__name__)

# The report is returned within about 2 seconds even when a dependency hangs.
CHECK_DEADLINE_SECONDS = 1.5
REDIS_TIMEOUT_SECONDS = 0.5
# A due delivery still pending after this long means the workers are behind.
WEBHOOK_BACKLOG_SECONDS = 300
# Availability below this share of calls over 24 hours makes the platform degraded.
AVAILABILITY_TARGET = 0.99
SERVER_ERROR_STATUS = 500

UP, DOWN, DEGRADED, NOT_CONFIGURED = "up", "down", "degraded", "not_configured"
REGISTRY_KEY = "developers.status"


class StatusChecker:
    """The status checks of one application, their thread pool and the cached report."""

    def __init__(self, registry):
        self.registry = registry
        settings = registry.settings
        self.key_prefix = settings["fkod.redis.key_prefix"]
        self.cache_seconds = settings["fkod.developers.status_cache_seconds"]
        self.redis = _status_redis_client(settings["fkod.redis.url"])
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=6,
                                                          thread_name_prefix="fkod-status")
        self._lock = threading.Lock()
        self._cached: tuple[float, dict] | None = None

    def report(self) -> dict:
        """Return the cached report while it is fresh, otherwise check every component."""
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.cache_seconds:
                return self._cached[1]
            report = self._check_all()
            self._cached = (time.monotonic(), report)
            return report

    def _check_all(self) -> dict:
        checks = {
            "database": self.check_database,
            "redis": self.check_redis,
            "broker": self.check_broker,
            "workers": self.check_workers,
            "webhooks": self.check_webhooks,
            "availability": self.check_availability,
        }
        futures = {name: self.pool.submit(_timed, check) for name, check in checks.items()}
        deadline = time.monotonic() + CHECK_DEADLINE_SECONDS
        components = {}
        for name, future in futures.items():
            try:
                components[name] = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except concurrent.futures.TimeoutError:
                log.warning("status check timed out", extra={"component": name})
                components[name] = {"status": DOWN, "error": "timed out"}
            except Exception as exc:
                log.warning("status check failed", extra={"component": name,
                                                          "error": str(exc)[:200]})
                components[name] = {"status": DOWN, "error": _error_text(exc)}
        return {"status": overall_status(components), "checked_at": utcnow(),
                "components": components}

    # Checks ------------------------------------------------------------------

    def check_database(self) -> dict:
        read_only(self.registry["db.engine"],
                  lambda connection: connection.execute(sa.text("SELECT 1")).scalar_one())
        return {"status": UP}

    def check_redis(self) -> dict:
        if self.redis is None:
            return {"status": NOT_CONFIGURED}
        self.redis.ping()
        return {"status": UP}

    def check_broker(self) -> dict:
        tasks = self.registry["tasks"]
        if tasks.in_process:
            queues = tasks.broker.queues
            waiting = queues[QUEUE].qsize() if QUEUE in queues else 0
            delayed_name = f"{QUEUE}.DQ"
            delayed = queues[delayed_name].qsize() if delayed_name in queues else 0
            return {"status": UP, "kind": "inprocess", "queue_depth": waiting,
                    "delayed": delayed}
        # The Redis broker keeps each queue as a list of message ids named
        # "<namespace>:<queue>", and delayed messages in "<queue>.DQ".
        namespace = tasks.broker.namespace
        waiting = self.redis.llen(f"{namespace}:{QUEUE}")
        delayed = self.redis.llen(f"{namespace}:{QUEUE}.DQ")
        return {"status": UP, "kind": "redis", "queue_depth": int(waiting),
                "delayed": int(delayed)}

    def check_workers(self) -> dict:
        tasks = self.registry["tasks"]
        if tasks.in_process:
            alive = tasks.worker_alive()
            return {"status": UP if alive else DOWN, "kind": "inprocess",
                    "live_workers": 1 if alive else 0}
        names = sorted(
            key.decode()[len(heartbeat_prefix(self.key_prefix)):] for key in
            self.redis.scan_iter(match=heartbeat_prefix(self.key_prefix) + "*", count=100))
        return {"status": UP if names else DOWN, "kind": "redis",
                "live_workers": len(names), "workers": names}

    def check_webhooks(self) -> dict:
        def query(connection):
            oldest = connection.execute(
                sa.select(sa.func.min(WebhookEvent.created_at))
                .where(WebhookEvent.status == "pending")).scalar()
            due_since = sa.func.coalesce(WebhookEvent.next_retry_at, WebhookEvent.created_at)
            oldest_due = connection.execute(
                sa.select(sa.func.min(due_since))
                .where(WebhookEvent.status == "pending", due_since <= utcnow())).scalar()
            return oldest, oldest_due

        oldest, oldest_due = read_only(self.registry["db.engine"], query)
        now = utcnow()
        age = _age_seconds(now, oldest)
        overdue = _age_seconds(now, oldest_due)
        status = DEGRADED if overdue is not None and overdue > WEBHOOK_BACKLOG_SECONDS else UP
        return {"status": status, "oldest_pending_age_seconds": age,
                "oldest_due_age_seconds": overdue}

    def check_availability(self) -> dict:
        now = utcnow()
        engine = self.registry["db.engine"]
        day = read_only(engine, lambda c: availability(c, now - dt.timedelta(days=1), now))
        week = read_only(engine, lambda c: availability(c, now - dt.timedelta(days=7), now))
        status = DEGRADED if day is not None and day < AVAILABILITY_TARGET else UP
        return {"status": status, "last_24_hours": day, "last_7_days": week}

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.redis is not None:
            self.redis.close()


def _status_redis_client(url: str):
    """Return a Redis client with short timeouts and no retry, or None without a URL."""
    if not url:
        return None
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                                retry=Retry(NoBackoff(), 0))


def _timed(check) -> dict:
    started = time.perf_counter()
    result = check()
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def _error_text(exc: Exception) -> str:
    # The class name says what failed without echoing hosts or credentials.
    return type(exc).__name__


def _age_seconds(now: dt.datetime, since) -> int | None:
    if since is None:
        return None
    if isinstance(since, str):
        since = dt.datetime.fromisoformat(since)
    return max(0, int((now - since.replace(tzinfo=None)).total_seconds()))


def overall_status(components: dict) -> str:
    """Apply the rule of the module docstring to the component statuses."""
    if components["database"]["status"] != UP:
        return "down"
    if any(component["status"] in (DOWN, DEGRADED) for component in components.values()):
        return "degraded"
    return "operational"


def availability(connection, since: dt.datetime, until: dt.datetime) -> float | None:
    """Return the share of gateway calls in [since, until) without a 5xx, or None without calls.

    Whole hours that the roll-up job has rolled up come from
    ``api_usage_hourly``; the rest comes from the raw ``api_usage`` rows.
    """
    hourly_start = floor_hour(since) + dt.timedelta(hours=1) if floor_hour(since) != since \
        else since
    rolled_until = read_rolled_until(connection)
    hourly_end = min(floor_hour(until), rolled_until) if rolled_until is not None \
        else hourly_start
    total = failed = 0
    raw_ranges = [(since, until)]
    if hourly_end > hourly_start:
        hourly = ApiUsageHourly.__table__
        server_errors = sa.case((hourly.c.status_code >= SERVER_ERROR_STATUS,
                                 hourly.c.request_count), else_=0)
        row = connection.execute(
            sa.select(sa.func.coalesce(sa.func.sum(hourly.c.request_count), 0),
                      sa.func.coalesce(sa.func.sum(server_errors), 0))
            .where(hourly.c.hour >= hourly_start, hourly.c.hour < hourly_end)).one()
        total, failed = int(row[0]), int(row[1])
        raw_ranges = [(start, end) for start, end in ((since, hourly_start),
                                                      (hourly_end, until)) if start < end]
    if raw_ranges:
        usage = ApiUsage.__table__
        server_errors = sa.case((usage.c.status_code >= SERVER_ERROR_STATUS, 1), else_=0)
        row = connection.execute(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(server_errors), 0))
            .where(sa.or_(*(sa.and_(usage.c.created_at >= start, usage.c.created_at < end)
                            for start, end in raw_ranges)))).one()
        total += int(row[0])
        failed += int(row[1])
    if total == 0:
        return None
    return round((total - failed) / total, 6)


_checker_lock = threading.Lock()


def checker_for(registry) -> StatusChecker:
    """Return the application's checker, creating it on first use."""
    checker = registry.get(REGISTRY_KEY)
    if checker is None:
        with _checker_lock:
            checker = registry.get(REGISTRY_KEY)
            if checker is None:
                checker = StatusChecker(registry)
                registry[REGISTRY_KEY] = checker
    return checker
