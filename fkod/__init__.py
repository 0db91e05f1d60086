"""F-KOD Partner Platform: the Pyramid application factory."""

from __future__ import annotations

import atexit
import logging
import os
import socket
import weakref

from pyramid.config import Configurator

from fkod.core.settings import ConfigurationError, load_settings

log = logging.getLogger(__name__)


def main(global_config, **settings):
    """Build the WSGI application from the ``[app:main]`` settings of an .ini file."""
    settings = load_settings(settings)
    from fkod.core.requestlog import apply_log_format

    apply_log_format(settings)
    # The platform's exception views render every error; Cornice's stay out.
    settings["handle_exceptions"] = False
    with Configurator(settings=settings) as config:
        config.include("cornice")
        config.include("fkod.core.db")
        config.include("fkod.core.errors")
        config.include("fkod.core.requestlog")
        config.include(include_runtime)
        config.include("fkod.core.auth.views")
        config.include("fkod.core.oauth")
        config.include("fkod.core.gateway")
        config.include("fkod.core.webhooks")
        config.include("fkod.core.billing.jobs")
        config.include("fkod.core.billing.inbound")
        config.include("fkod.core.mail")
        config.include("fkod.core.storage")
        config.include("fkod.core.health")
        config.include("fkod.core.metrics")
        config.include("fkod.core.alerts")
        config.include("fkod.partners.views")
        config.include("fkod.developers")
        config.include("fkod.core.auth.authorization_views")
        config.include("fkod.admin")
        config.include("fkod.marketplace")
        config.include("fkod.portal")
        config.include("fkod.core.plugins")
        app = config.make_wsgi_app()

    registry = app.registry
    registry["plugins"].record_load_state()
    from fkod.marketplace.sync import sync_integrations

    sync_integrations(registry)
    if registry["tasks"].in_process:
        registry["tasks"].start()
    if registry.settings["fkod.scheduler.embedded"]:
        from fkod.core.scheduler import Scheduler

        registry["scheduler"] = Scheduler(registry)
        registry["scheduler"].start()
    _running_registries[id(registry)] = registry
    return app


def include_runtime(config):
    """Create the interchangeable back ends the settings choose: Redis or in-process."""
    import datetime as dt
    import threading

    import redis

    from fkod.core.metering import (
        LastUsedThrottle,
        drain_usage_stream,
        make_usage_recorder,
        purge_usage,
        rollup_usage,
    )
    from fkod.core.ratelimit import make_rate_limiter
    from fkod.core.tasks import LeaderLock, make_task_queue

    settings = config.get_settings()
    registry = config.registry
    redis_url = settings["fkod.redis.url"] or None
    key_prefix = settings["fkod.redis.key_prefix"]
    raw_retention_days = settings["fkod.metering.raw_retention_days"]
    hourly_retention_days = settings["fkod.metering.hourly_retention_days"]
    if hourly_retention_days < raw_retention_days:
        # Reports read rolled-up hours from the roll-ups only, so an hour whose
        # roll-ups are gone would show no usage even while its raw rows are kept.
        raise ConfigurationError(
            f"invalid setting fkod.metering.hourly_retention_days = {hourly_retention_days}: "
            f"expected at least fkod.metering.raw_retention_days ({raw_retention_days})"
        )
    uses_redis = "redis" in (settings["fkod.ratelimit.backend"], settings["fkod.metering.backend"],
                             settings["fkod.tasks.broker"])
    if uses_redis and not redis_url:
        raise ConfigurationError(
            "missing setting fkod.redis.url: a redis back end is configured "
            "(ratelimit.backend, metering.backend or tasks.broker) but no Redis URL is set"
        )
    redis_client = redis.Redis.from_url(redis_url, socket_timeout=2,
                                        socket_connect_timeout=2) if redis_url else None
    registry["redis"] = redis_client

    registry["rate_limiter"] = make_rate_limiter(
        settings["fkod.ratelimit.backend"], redis_url=redis_url,
        sub_buckets=settings["fkod.ratelimit.sub_buckets"], key_prefix=key_prefix + "rl:",
        lease_size=settings["fkod.ratelimit.lease_size"],
    )
    stream = key_prefix + "usage"
    registry["usage_recorder"] = make_usage_recorder(
        settings["fkod.metering.backend"], engine=registry["db.engine"],
        redis_client=redis_client, stream=stream,
        flush_interval_seconds=settings["fkod.metering.flush_interval_ms"] / 1000,
    )
    tasks = make_task_queue(settings)
    registry["tasks"] = tasks
    # A lock that outlives three sweeps passes to another worker soon after its
    # holder dies, without changing hands between two sweeps of a live holder.
    registry["leader_lock"] = LeaderLock(
        redis_client if not tasks.in_process else None, prefix=key_prefix + "leader:",
        ttl_seconds=3 * settings["fkod.webhooks.sweep_interval_seconds"],
    )

    if settings["fkod.metering.backend"] == "redis":
        consumer = f"{socket.gethostname()}-{os.getpid()}"
        last_used = LastUsedThrottle()
        # The periodic thread and run_periodic_now() (at worker start, in tests)
        # can run the job at the same time. Both use one consumer name, so
        # without the lock each would read the other's pending entries and
        # write them a second time.
        drain_lock = threading.Lock()

        def drain_usage():
            with drain_lock:
                while drain_usage_stream(redis_client, stream, engine=registry["db.engine"],
                                         consumer=consumer, last_used=last_used):
                    pass

        tasks.every("drain_usage", settings["fkod.metering.flush_interval_ms"] / 1000,
                    drain_usage)

    # The hourly roll-up and the retention purge, each run by one worker at a time.
    def rollup():
        rollup_usage(
            registry["db.engine"],
            delay=dt.timedelta(seconds=settings["fkod.metering.rollup_delay_seconds"]),
            reroll_hours=settings["fkod.metering.rollup_reroll_hours"],
        )

    def purge():
        purge_usage(registry["db.engine"], raw_retention=dt.timedelta(days=raw_retention_days),
                    hourly_retention=dt.timedelta(days=hourly_retention_days))

    tasks.every("rollup_usage", settings["fkod.metering.rollup_interval_seconds"],
                registry["leader_lock"].wrap("rollup_usage", rollup))
    tasks.every("purge_usage", settings["fkod.metering.purge_interval_seconds"],
                registry["leader_lock"].wrap("purge_usage", purge))


# Applications built in this process and not shut down yet, shut down at exit.
# They are held weakly: a registry kept by an exit hook would never be freed,
# and the test suite builds thousands of applications in one process.
_running_registries: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


@atexit.register
def _shut_down_running_applications() -> None:
    for registry in list(_running_registries.values()):
        shutdown(registry)


def shutdown(registry) -> None:
    """Stop background threads and flush buffered usage; safe to call twice."""
    _running_registries.pop(id(registry), None)
    if registry.get("fkod.shut_down"):
        return
    registry["fkod.shut_down"] = True
    from fkod.core.webhooks.http import close_pooled_connections

    if registry.get("scheduler") is not None:
        registry["scheduler"].stop()
    registry["tasks"].stop()
    if registry.get("developers.status") is not None:
        registry["developers.status"].close()
    registry["plugins"].close()
    close_pooled_connections()
    registry["usage_recorder"].close()
    limiter = registry["rate_limiter"]
    if hasattr(limiter, "close"):
        limiter.close()
    if registry["redis"] is not None:
        registry["redis"].close()
    registry["db.engine"].dispose()
    log.info("application stopped")
