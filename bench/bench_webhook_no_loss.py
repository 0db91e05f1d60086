"""Check that no webhook is lost while ``fkod worker`` processes are killed with SIGKILL.

Usage: .venv/bin/python bench/bench_webhook_no_loss.py [--quick] [--events N]
       [--kills K] [--kill-interval S] [--sweep-interval-seconds I] [--budget-seconds B]

Uses the harness of bench_webhook_throughput.py: production.ini on a fresh
PostgreSQL schema and a random Redis key prefix, ``fkod worker``
subprocesses (8 delivery threads each) and an asyncio receiver on 127.0.0.1
in its own process that records every request's ``webhook-id`` and body.

Two workers run throughout. N events (default 10,000) are published in
transactions of 50 events, spread over K x S seconds. Meanwhile the older of
the two workers is killed with SIGKILL K times (default 20), each time S
seconds (default 3) after the last replacement logged that its delivery
threads started, and a replacement is started after each kill. Once the kills
and publishing have ended, the script waits up to B seconds (default 240)
until every delivery is ``succeeded``. Then it checks at the receiver that
every event id arrived at least once and that all requests for one event
carry the same ``webhook-id`` and identical body bytes. ``--quick`` runs
2,000 events, 5 kills and a budget of 120 s.

A kill loses the worker's claimed deliveries and its prefetched messages.
The sweeper gets them back. ``fkod.webhooks.in_flight_timeout_seconds`` is
10 (its minimum), so a claim counts as lost 10 s after it was made.
``fkod.webhooks.sweep_interval_seconds`` is 5 (``--sweep-interval-seconds``),
so every 5 s the sweeper returns lost claims to pending and re-enqueues
deliveries that have been due for 5 s. Its leader lock expires three
intervals after a killed holder's last renewal. The endpoint keeps the default
``fkod.webhooks.max_concurrency_per_endpoint`` of 4, so lost claims also hold
the endpoint's slots until they are returned. Its ``retry_count`` is 10, so a
delivery that several kills interrupt is not marked failed.

NOTE: the sweeper also re-enqueues deliveries that are only waiting behind a
backlog, up to 500 per sweep, so while the workers are behind, the broker's
queue grows faster than the outbox (47,000 messages for 10,000 deliveries
with a 2 s interval on a loaded 2-core machine). The progress lines show the
queue length.

It prints progress, the counts and how long the deliveries took to drain, and
last ``lost=<n> duplicates=<n>``. An event that has not arrived when the
budget runs out is lost when its delivery is failed or missing, and late
(added to the last line as ``late=<n>``) while it is still pending or in
flight. Duplicates are requests beyond the first for one event. A lost event
is a failure of the platform, not of the run, so the exit status is 0 unless
the run itself broke.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
import threading
import time

from bench_webhook_throughput import (
    BrokenRun,
    Published,
    WebhookStack,
    Worker,
    load_average,
    unreachable_service,
)

IN_FLIGHT_TIMEOUT_SECONDS = 10
SWEEP_INTERVAL_SECONDS = 5
BATCH_SIZE = 50
WORKERS = 2


class Publisher(threading.Thread):
    """Publishes events in batches at a steady rate over ``seconds``, in a thread."""

    def __init__(self, stack: WebhookStack, first: int, count: int, seconds: float):
        super().__init__(name="publisher", daemon=True)
        self.stack = stack
        self.first = first
        self.count = count
        self.seconds = seconds
        self.published: list[Published] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            batches = range(self.first, self.first + self.count, BATCH_SIZE)
            interval = self.seconds / len(batches)
            next_at = time.monotonic()
            for start in batches:
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                next_at += interval
                batch = self.stack.publish(range(start, min(start + BATCH_SIZE,
                                                            self.first + self.count)))
                self.stack.enqueue(batch)
                self.published += batch
        except BaseException as error:  # reported by the main thread after join()
            self.error = error


def kill_and_replace(stack: WebhookStack, running: list[Worker], kills: int,
                     interval: float) -> None:
    """Kill the oldest running worker ``kills`` times and start a replacement each time.

    Each kill comes ``interval`` seconds after the last replacement started its
    delivery threads, so every victim has been delivering (a worker takes
    seconds to start, more on a loaded machine).
    """
    for number in range(1, kills + 1):
        time.sleep(interval)
        stack.check_workers()
        victim = running.pop(0)
        victim.kill()
        replacement = stack.start_worker()
        running.append(replacement)
        start_seconds = stack.wait_until_ready(replacement)
        print(f"kill {number}/{kills}: worker {victim.pid} killed, worker {replacement.pid} "
              f"ready after {start_seconds:.1f} s; deliveries by status "
              f"{json.dumps(stack.status_counts())}, broker "
              f"{json.dumps(stack.queued_messages())}")


@dataclasses.dataclass
class Outcome:
    """The receiver's requests compared with the published events."""

    missing: list[str]
    duplicates: int
    differing: int


def check_arrivals(stack: WebhookStack, published: list[Published]) -> Outcome:
    """Compare the receiver's requests with the published events.

    Requests are grouped by the event id in their body; every request of one
    event must carry the same webhook-id and the same body bytes.
    """
    by_event: dict[str, list] = collections.defaultdict(list)
    for arrival in stack.receiver.arrivals():
        event_id = json.loads(arrival.body)["id"]
        by_event[event_id].append(arrival)
    expected = {item.event_id for item in published}
    arrived = expected & by_event.keys()
    duplicates = sum(len(by_event[event_id]) - 1 for event_id in arrived)
    differing = 0
    for event_id in arrived:
        arrivals = by_event[event_id]
        if ({arrival.webhook_id for arrival in arrivals} != {event_id}
                or len({arrival.body for arrival in arrivals}) != 1):
            differing += 1
    return Outcome(sorted(expected - arrived), duplicates, differing)


def delivery_statuses(stack: WebhookStack, event_ids: list[str]) -> collections.Counter:
    """Count the delivery statuses of the given events; "missing" counts events with none."""
    import sqlalchemy as sa

    statuses: collections.Counter = collections.Counter()
    with stack.engine.connect() as connection:
        for start in range(0, len(event_ids), 1000):
            chunk = event_ids[start:start + 1000]
            found = dict(connection.execute(sa.text(
                "SELECT e.public_id, d.status FROM events e "
                "JOIN webhook_events d ON d.event_id = e.id "
                "WHERE e.public_id = ANY(:ids)"), {"ids": chunk}).all())
            statuses.update(found.get(event_id, "missing") for event_id in chunk)
    return statuses


def run_benchmark(stack: WebhookStack, options) -> bool:
    """Run the kill phase and the checks; return True when the platform lost or altered events."""
    running = [stack.start_worker() for _ in range(WORKERS)]
    for worker in running:
        stack.wait_until_ready(worker)
    warm_up = stack.publish(range(10))
    stack.enqueue(warm_up)
    stack.wait_for_arrivals(len(warm_up), 60)
    print(f"{WORKERS} workers delivering; {load_average()}")

    # Publishing is spread over the kill phase as planned; the phase lasts longer
    # by the time each replacement takes to start.
    planned_seconds = options.kills * options.kill_interval
    publisher = Publisher(stack, len(warm_up), options.events, planned_seconds)
    started = time.monotonic()
    publisher.start()
    kill_and_replace(stack, running, options.kills, options.kill_interval)
    kill_phase = time.monotonic() - started
    publisher.join()
    if publisher.error is not None:
        raise BrokenRun(f"publishing failed: {publisher.error!r}")
    published = warm_up + publisher.published
    print(f"killed {options.kills} workers in {kill_phase:.1f} s; published "
          f"{len(publisher.published)} events in {time.monotonic() - started:.1f} s; "
          f"{load_average()}")

    drain_started = time.monotonic()
    counts = stack.wait_until_succeeded(len(published), options.budget_seconds,
                                        report_every=10)
    drained = time.monotonic() - drain_started
    succeeded = counts.get("succeeded", 0)
    print(f"deliveries by status {drained:.1f} s after the kills and publishing ended: "
          f"{json.dumps(counts)} ({time.monotonic() - started:.1f} s since publishing began); "
          f"{load_average()}")
    if succeeded < len(published):
        print(f"{len(published) - succeeded} deliveries did not succeed within the budget of "
              f"{options.budget_seconds:g} s after the kills and publishing ended")

    outcome = check_arrivals(stack, published)
    print(f"events {len(published)}, arrived {len(published) - len(outcome.missing)}, "
          f"duplicate requests {outcome.duplicates}, events whose requests differ in "
          f"webhook-id or body {outcome.differing}")
    # An event that has not arrived is late while its delivery is still
    # pending or in flight, and lost otherwise (failed, or no delivery row).
    statuses = delivery_statuses(stack, outcome.missing)
    late = statuses["pending"] + statuses["delivering"]
    lost = len(outcome.missing) - late
    if outcome.missing:
        print(f"deliveries of the events that did not arrive, by status: "
              f"{json.dumps(dict(statuses))}")
    print(f"lost={lost} duplicates={outcome.duplicates}"
          + (f" late={late} (still pending when the budget ran out)" if late else ""))
    return lost > 0 or outcome.differing > 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2,000 events, 5 kills every 3 s, budget 120 s")
    parser.add_argument("--events", type=int, help="events to publish (default 10,000)")
    parser.add_argument("--kills", type=int, help="workers to kill (default 20)")
    parser.add_argument("--kill-interval", type=float,
                        help="seconds between two kills (default 3)")
    parser.add_argument("--sweep-interval-seconds", type=int, default=SWEEP_INTERVAL_SECONDS,
                        help="fkod.webhooks.sweep_interval_seconds of the workers "
                             f"(default {SWEEP_INTERVAL_SECONDS})")
    parser.add_argument("--budget-seconds", type=float,
                        help="how long to wait, once the kills and publishing have ended, "
                             "for every delivery to succeed, in seconds (default 240)")
    options = parser.parse_args()
    # Progress lines appear as they happen, also when the output goes to a file.
    sys.stdout.reconfigure(line_buffering=True)
    defaults = ({"events": 2000, "kills": 5, "kill_interval": 3.0, "budget_seconds": 120.0}
                if options.quick else
                {"events": 10_000, "kills": 20, "kill_interval": 3.0, "budget_seconds": 240.0})
    for name, value in defaults.items():
        if getattr(options, name) is None:
            setattr(options, name, value)
    if options.events < 1 or options.kills < 1 or options.kill_interval <= 0:
        parser.error("--events and --kills must be at least 1 and --kill-interval above 0")

    problem = unreachable_service()
    if problem is not None:
        print(f"skipped: {problem}")
        return 0

    settings = {
        "FKOD_WEBHOOKS_IN_FLIGHT_TIMEOUT_SECONDS": str(IN_FLIGHT_TIMEOUT_SECONDS),
        "FKOD_WEBHOOKS_SWEEP_INTERVAL_SECONDS": str(options.sweep_interval_seconds),
    }
    print(f"{load_average()}; settings: {json.dumps(settings)}; {options.events} events, "
          f"{options.kills} kills every {options.kill_interval:g} s")
    try:
        with WebhookStack("no-loss", settings, retry_count=10, retry_delay_seconds=1) as stack:
            print(f"schema {stack.schema}, Redis key prefix {stack.key_prefix}, "
                  f"receiver {stack.receiver.url}")
            # The worker logs are kept when an event was lost or altered.
            stack.keep_logs = run_benchmark(stack, options)
    except BrokenRun as error:
        print(f"FAILED: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
