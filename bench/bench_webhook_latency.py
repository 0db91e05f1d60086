"""Measure webhook latency from the outbox commit to the receiver, with idle ``fkod worker``s.

Usage: .venv/bin/python bench/bench_webhook_latency.py [--events N] [--rate R] [--workers W]
       [--max-concurrency-per-endpoint C]

Uses the harness of bench_webhook_throughput.py: production.ini on a fresh
PostgreSQL schema and a random Redis key prefix, and W ``fkod worker``
subprocesses (default 1, 8 delivery threads each). An asyncio receiver on
127.0.0.1 runs in its own process and records each request's arrival time.

After a warm-up of 10 events, N events (default 500) are published one at a
time at R events per second (default 20). Each is written in its own
transaction with ``publish_event``, and then ``deliver_webhook`` is sent, as
``outbox.publish`` does after a request's commit. The latency of an event is its arrival time at
the receiver minus the time its commit returned, both from this machine's
clock. The event's ``data`` carries the time it was written
(``benchmark.published_at``), because data is written before the commit; the
median time from the start of the transaction to the end of its commit is
printed as the outbox write time.

It prints p50, p90, p99 and the maximum, and the medians of the latency's
two parts. The split is the delivery's ``last_attempt_at``, which the worker
takes when its claim transaction starts: commit to claim is the broker and its
polling, and claim to arrival is the claim transaction, signing and the POST.
Last comes one line with p50 and p99 against a target of p50 <= 50 ms.
Settings are production.ini's (sweep interval 15 s,
max_concurrency_per_endpoint 4, which ``--max-concurrency-per-endpoint``
changes) with loopback receivers allowed.

NOTE: an idle worker does not wait on Redis. dramatiq 2.2's Redis consumer
(``_RedisConsumer.__next__`` in dramatiq/brokers/redis.py) fetches, and when
the queue is empty sleeps a backoff of 5 ms doubled per empty fetch with
jitter, capped at the consumer's timeout. ``fkod.core.tasks.TaskQueue.start``
passes ``worker_timeout=100`` (ms) to ``dramatiq.Worker``, which becomes that
cap, so an idle consumer polls every 50 to 100 ms. That wait is most of the
latency at low rates.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time

from bench_webhook_throughput import (
    BrokenRun,
    Published,
    WebhookStack,
    load_average,
    unreachable_service,
)

TARGET_P50_MS = 50.0
WARM_UP_EVENTS = 10


def publish_steadily(stack: WebhookStack, first: int, count: int,
                     rate: float) -> tuple[list[Published], list[float]]:
    """Publish ``count`` events one per transaction at ``rate`` per second.

    Returns the events and, for each, the seconds between the start of its
    transaction and the end of its commit.
    """
    published: list[Published] = []
    write_seconds: list[float] = []
    interval = 1 / rate
    next_at = time.monotonic()
    for sequence in range(first, first + count):
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        next_at += interval
        started = time.time()
        (item,) = stack.publish([sequence])
        stack.enqueue([item])
        published.append(item)
        write_seconds.append(item.committed_at - started)
    return published, write_seconds


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Return the value at ``fraction`` of a sorted list (nearest rank)."""
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def claim_times(stack: WebhookStack, published: list[Published]) -> dict[int, float]:
    """Return each delivery's claim time (``last_attempt_at``, naive UTC) as Unix seconds."""
    import sqlalchemy as sa

    ids = [item.delivery_id for item in published]
    with stack.engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT id, last_attempt_at FROM webhook_events WHERE id = ANY(:ids)"),
            {"ids": ids}).all()
    return {delivery_id: claimed.replace(tzinfo=dt.UTC).timestamp()
            for delivery_id, claimed in rows if claimed is not None}


def run_benchmark(stack: WebhookStack, options) -> None:
    for _ in range(options.workers):
        stack.start_worker()
    warm_up = stack.publish(range(WARM_UP_EVENTS))
    stack.enqueue(warm_up)
    stack.wait_for_arrivals(len(warm_up), 60)
    # Let the consumers back off to their idle polling interval before the first event.
    time.sleep(1)
    print(f"{options.workers} worker(s) idle; publishing {options.events} events at "
          f"{options.rate:g}/s; {load_average()}")

    published, write_seconds = publish_steadily(stack, WARM_UP_EVENTS, options.events,
                                                options.rate)
    stack.wait_for_arrivals(len(warm_up) + len(published), 60)
    load = load_average()

    first_arrival: dict[str, float] = {}
    for arrival in stack.receiver.arrivals():
        first_arrival.setdefault(arrival.webhook_id, arrival.arrived_at)
    missing = [item.event_id for item in published if item.event_id not in first_arrival]
    if missing:
        raise BrokenRun(f"{len(missing)} events never reached the receiver, the first "
                        f"{missing[0]}")
    latencies = sorted(1000 * (first_arrival[item.event_id] - item.committed_at)
                       for item in published)
    p50 = percentile(latencies, 0.50)
    p90 = percentile(latencies, 0.90)
    p99 = percentile(latencies, 0.99)
    claimed_at = claim_times(stack, published)
    waits = [1000 * (claimed_at[item.delivery_id] - item.committed_at) for item in published]
    sends = [1000 * (first_arrival[item.event_id] - claimed_at[item.delivery_id])
             for item in published]
    print(f"outbox write (transaction start to commit end): median "
          f"{1000 * statistics.median(write_seconds):.1f} ms")
    print(f"commit to claim: median {statistics.median(waits):.1f} ms, max {max(waits):.1f} "
          f"ms; claim to arrival: median {statistics.median(sends):.1f} ms, max "
          f"{max(sends):.1f} ms")
    print(f"commit to arrival over {len(latencies)} events: min {latencies[0]:.1f} ms, "
          f"p50 {p50:.1f} ms, p90 {p90:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms; "
          f"{load}")
    verdict = "met" if p50 <= TARGET_P50_MS else "NOT met"
    print(f"target p50 <= {TARGET_P50_MS:.0f} ms: {verdict}")
    print(f"latency commit to arrival: p50 {p50:.1f} ms, p99 {p99:.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500,
                        help="events published one at a time (default 500)")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="events published per second (default 20)")
    parser.add_argument("--workers", type=int, default=1,
                        help="fkod worker processes (default 1)")
    parser.add_argument("--max-concurrency-per-endpoint", type=int,
                        help="fkod.webhooks.max_concurrency_per_endpoint of the workers "
                             "(default: the setting's default, 4)")
    options = parser.parse_args()
    # Progress lines appear as they happen, also when the output goes to a file.
    sys.stdout.reconfigure(line_buffering=True)
    if options.events < 1 or options.rate <= 0 or options.workers < 1:
        parser.error("--events and --workers must be at least 1 and --rate above 0")

    problem = unreachable_service()
    if problem is not None:
        print(f"skipped: {problem}")
        return 0

    settings = {}
    if options.max_concurrency_per_endpoint is not None:
        settings["FKOD_WEBHOOKS_MAX_CONCURRENCY_PER_ENDPOINT"] = str(
            options.max_concurrency_per_endpoint)
    print(f"{load_average()}; settings: production.ini's, with loopback receivers allowed, "
          f"and {settings or 'nothing else'}")
    try:
        with WebhookStack("latency", settings) as stack:
            print(f"schema {stack.schema}, Redis key prefix {stack.key_prefix}, "
                  f"receiver {stack.receiver.url}")
            run_benchmark(stack, options)
            stack.keep_logs = False
    except BrokenRun as error:
        print(f"FAILED: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
