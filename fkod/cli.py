"""The ``fkod`` command: everything an operator runs besides the web server.

    fkod migrate INI          migrate the database to the newest schema
    fkod demo-data INI        load the demo partner, catalog courses and mentors
    fkod worker INI           run background tasks (webhook delivery, usage drain)
    fkod webhook-stats INI    print the webhook delivery queue figures as JSON
    fkod demo [--url URL]     run the main job end to end against a running server
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sys
import threading

log = logging.getLogger(__name__)


def _setup_logging(config_file: str) -> None:
    from pyramid.paster import setup_logging

    setup_logging(config_file)


def _load_settings(config_file: str) -> dict:
    import plaster

    from fkod.core.settings import load_settings

    return load_settings(plaster.get_settings(config_file, "app:main"))


def cmd_migrate(args) -> int:
    from fkod.core.migrations import resolve_db_url, upgrade_to_head

    _setup_logging(args.config)
    upgrade_to_head(resolve_db_url(args.config))
    print("database migrated to the newest schema")
    return 0


def cmd_demo_data(args) -> int:
    from fkod.core.db import make_engine, make_session_factory, run_in_transaction
    from fkod.demo_data import load_demo_data

    _setup_logging(args.config)
    settings = _load_settings(args.config)
    engine = make_engine(settings)
    try:
        result = run_in_transaction(make_session_factory(engine),
                                    lambda session: load_demo_data(session, settings))
    finally:
        engine.dispose()
    print(result)
    return 0


def cmd_worker(args) -> int:
    from pyramid.paster import get_app

    from fkod import shutdown

    _setup_logging(args.config)
    app = get_app(args.config, "main")
    registry = app.registry
    tasks = registry["tasks"]
    stop = threading.Event()

    def request_stop(signum, _frame):
        log.info("stopping the worker", extra={"signal": signum})
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    if not tasks.in_process:
        tasks.start()
    else:
        log.info("fkod.tasks.broker is inprocess: the web process runs its own tasks, "
                 "so this worker only runs the periodic jobs")
    tasks.run_periodic_now()
    stop.wait()
    shutdown(registry)
    return 0


def _json_time(value):
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds") + "Z"
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def cmd_webhook_stats(args) -> int:
    from fkod.core.db import make_engine, read_only
    from fkod.core.webhooks.stats import queue_stats

    _setup_logging(args.config)
    settings = _load_settings(args.config)
    engine = make_engine(settings)
    try:
        stats = read_only(engine, queue_stats)
    finally:
        engine.dispose()
    print(json.dumps(stats, default=_json_time, indent=2, sort_keys=True))
    return 0


def cmd_demo(args) -> int:
    from fkod.demo import run_demo

    return run_demo(args.url)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fkod", description="F-KOD Partner Platform commands.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = commands.add_parser("migrate", help="Migrate the database to the newest schema.")
    migrate.add_argument("config", metavar="INI", help="the .ini file, e.g. development.ini")
    migrate.set_defaults(run=cmd_migrate)

    demo_data = commands.add_parser(
        "demo-data", help="Load the verified demo partner with a new test key, catalog "
                          "courses, mentors and plans; safe to run again.")
    demo_data.add_argument("config", metavar="INI")
    demo_data.set_defaults(run=cmd_demo_data)

    worker = commands.add_parser(
        "worker", help="Run background tasks: webhook deliveries, the delivery sweeper and "
                       "the usage drain. Stop with SIGTERM or Ctrl-C.")
    worker.add_argument("config", metavar="INI")
    worker.set_defaults(run=cmd_worker)

    webhook_stats = commands.add_parser(
        "webhook-stats", help="Print the webhook delivery queue as JSON: pending, due, "
                              "delivering, held and failed deliveries, the age of the oldest "
                              "pending one in seconds, and endpoints by status.")
    webhook_stats.add_argument("config", metavar="INI")
    webhook_stats.set_defaults(run=cmd_webhook_stats)

    demo = commands.add_parser(
        "demo", help="Register a partner, create a key, call the API and receive a signed "
                     "webhook on loopback, against a running server.")
    demo.add_argument("--url", default="http://127.0.0.1:6543",
                      help="base URL of the running server (default: %(default)s)")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from fkod.core.settings import ConfigurationError

    try:
        return args.run(args)
    except ConfigurationError as exc:
        print(f"fkod: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
