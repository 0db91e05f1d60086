"""The ``fkod`` command: everything an operator runs besides the web server.

    fkod migrate INI          migrate the database to the newest schema
    fkod demo-data INI        load the demo partner, catalog courses and mentors
    fkod worker INI           run background tasks (webhook delivery, usage drain)
    fkod webhook-stats INI    print the webhook delivery queue figures as JSON
    fkod demo [--url URL]     run the main job end to end against a running server
    fkod admin create INI --email E --name N [--role R]
                              create an admin user (the password from
                              FKOD_ADMIN_PASSWORD or a prompt)
    fkod plugin new NAME [--dir DIR] [--publisher SLUG]
                              create a plugin package in DIR/fkod-NAME
    fkod scheduler INI        send the messages of scheduled jobs at their cron times
    fkod jobs list INI        print the scheduled jobs, their next fire and last run
    fkod jobs run INI NAME [--argument TEXT] [--inline]
                              run a scheduled job now
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
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
    heartbeat = None
    if not tasks.in_process:
        tasks.start()
        heartbeat = _start_heartbeat(registry)
    else:
        log.info("fkod.tasks.broker is inprocess: the web process runs its own tasks, "
                 "so this worker only runs the periodic jobs")
    tasks.run_periodic_now()
    stop.wait()
    if heartbeat is not None:
        heartbeat.stop()
    shutdown(registry)
    return 0


def _start_heartbeat(registry):
    """Start the heartbeat that /api/developers/status reads to list live workers."""
    import socket

    from fkod.core.tasks import WorkerHeartbeat

    settings = registry.settings
    heartbeat = WorkerHeartbeat(
        registry["redis"], key_prefix=settings["fkod.redis.key_prefix"],
        name=f"{socket.gethostname()}-{os.getpid()}",
        interval_seconds=settings["fkod.tasks.worker_heartbeat_seconds"])
    heartbeat.start()
    return heartbeat


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


# The name of the variable, not a password.
ADMIN_PASSWORD_VARIABLE = "FKOD_ADMIN_PASSWORD"  # noqa: S105


def _admin_password() -> str | None:
    """Return the password from FKOD_ADMIN_PASSWORD, or prompt twice; None if they differ."""
    import getpass
    import os

    password = os.environ.get(ADMIN_PASSWORD_VARIABLE)
    if password is not None:
        return password
    first = getpass.getpass("Password (at least 12 characters): ")
    if getpass.getpass("Repeat the password: ") != first:
        return None
    return first


def cmd_admin_create(args) -> int:
    import marshmallow

    from fkod.admin.schemas import CreateAdminBody
    from fkod.admin.services import create_admin_from_command
    from fkod.core.auth.passwords import PasswordHasher
    from fkod.core.db import make_engine, make_session_factory, run_in_transaction
    from fkod.core.errors import Conflict

    _setup_logging(args.config)
    settings = _load_settings(args.config)
    password = _admin_password()
    if password is None:
        print("fkod: the passwords do not match; nothing was created", file=sys.stderr)
        return 2
    try:
        data = CreateAdminBody().load({"email": args.email, "name": args.name,
                                       "role": args.role, "password": password})
    except marshmallow.ValidationError as exc:
        for name, messages in sorted(exc.normalized_messages().items()):
            print(f"fkod: invalid {name}: {' '.join(map(str, messages))}", file=sys.stderr)
        return 2

    engine = make_engine(settings)
    hasher = PasswordHasher.from_settings(settings)
    try:
        admin_id = run_in_transaction(
            make_session_factory(engine),
            lambda session: create_admin_from_command(session, hasher, data).id)
    except Conflict as exc:
        print(f"fkod: {exc.message} Nothing was created.", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"created admin admin_{admin_id} <{data['email']}> with role {data['role']}")
    return 0


def cmd_demo(args) -> int:
    from fkod.demo import run_demo

    return run_demo(args.url)


def cmd_plugin_new(args) -> int:
    from fkod.scaffold import ScaffoldError, create_plugin, plugin_names

    try:
        target = create_plugin(args.name, args.dir, publisher=args.publisher)
    except ScaffoldError as exc:
        print(f"fkod: {exc}", file=sys.stderr)
        return 2
    names = plugin_names(args.name)
    print(f"created the plugin package {target}\n"
          f"  module {names.module}, entry point {names.entry_point}, "
          f"integration {names.slug}\n"
          f"next: pip install -e {target} && python -m pytest {target / 'tests'}")
    return 0


def _stop_on_signals(what: str) -> threading.Event:
    """Return an event that SIGTERM and SIGINT set."""
    stop = threading.Event()

    def request_stop(signum, _frame):
        log.info("stopping on a signal", extra={"signal": signum, "command": what})
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def cmd_scheduler(args) -> int:
    from pyramid.paster import get_app

    from fkod import shutdown
    from fkod.core.scheduler import Scheduler

    _setup_logging(args.config)
    app = get_app(args.config, "main")
    registry = app.registry
    stop = _stop_on_signals("scheduler")
    if registry["tasks"].in_process:
        log.info("fkod.tasks.broker is inprocess: this process runs the jobs it sends")
    try:
        Scheduler(registry).run_forever(stop)
    finally:
        shutdown(registry)
    return 0


def _time_text(value: dt.datetime | None) -> str:
    return "none" if value is None else value.isoformat(timespec="seconds") + "Z"


def cmd_jobs_list(args) -> int:
    from pyramid.paster import get_app

    from fkod import shutdown
    from fkod.core.scheduler import last_runs, next_fire_time, schedule_for

    _setup_logging(args.config)
    app = get_app(args.config, "main")
    registry = app.registry
    try:
        schedule = schedule_for(registry)
        runs = last_runs(registry["db.session_factory"])
        if not len(schedule):
            print("no scheduled jobs")
        for job in schedule:
            run = runs.get(job.name)
            last = "never" if run is None else (
                f"{_time_text(run.fire_time)} ({run.trigger}, sent {_time_text(run.sent_at)})")
            print(f"{job.name}" + (f"  {job.description}" if job.description else ""))
            print(f"  cron      {job.cron} (UTC)")
            print(f"  actor     {job.actor}")
            print(f"  next      {_time_text(next_fire_time(job))}")
            print(f"  last run  {last}")
    finally:
        shutdown(registry)
    return 0


def cmd_jobs_run(args) -> int:
    from pyramid.paster import get_app

    from fkod import shutdown
    from fkod.core.scheduler import UnknownJob, run_job_now
    from fkod.core.settings import ConfigurationError

    _setup_logging(args.config)
    app = get_app(args.config, "main")
    registry = app.registry
    try:
        try:
            run = run_job_now(registry, args.name, argument=args.argument, inline=args.inline)
        except UnknownJob as exc:
            print(f"fkod: {exc}", file=sys.stderr)
            return 2
        except ConfigurationError:
            raise
        except Exception as exc:
            # Only --inline runs the job here; the operator sees its error.
            log.error("the job failed", exc_info=True, extra={"job": args.name})
            print(f"fkod: {args.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        if not run.claimed:
            print(f"fkod: a run of {args.name} is recorded for {_time_text(run.fire_time)} "
                  f"already; nothing was sent, try again", file=sys.stderr)
            return 1
        if run.inline:
            print(f"ran {args.name} ({run.job.actor}) with {run.argument!r}")
        elif registry["tasks"].in_process:
            # The in-process broker lives in this process: wait for the job to finish.
            registry["tasks"].join()
            print(f"ran {args.name} ({run.job.actor}) with {run.argument!r} "
                  f"on the in-process worker")
        else:
            print(f"sent {args.name} to {run.job.actor} with {run.argument!r}")
    finally:
        shutdown(registry)
    return 0


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

    admin = commands.add_parser("admin", help="Manage admin users.")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True,
                                          metavar="COMMAND")
    admin_create = admin_commands.add_parser(
        "create", help="Create an admin user, such as the first superadmin. The password "
                       "(at least 12 characters) comes from FKOD_ADMIN_PASSWORD or a prompt.")
    admin_create.add_argument("config", metavar="INI")
    admin_create.add_argument("--email", required=True, help="the admin's email address")
    admin_create.add_argument("--name", required=True, help="the admin's full name")
    admin_create.add_argument(
        "--role", default="superadmin", choices=("superadmin", "support", "finance", "readonly"),
        help="the admin role (default: %(default)s)")
    admin_create.set_defaults(run=cmd_admin_create)

    plugin = commands.add_parser("plugin", help="Work on plugin packages.")
    plugin_commands = plugin.add_subparsers(dest="plugin_command", required=True,
                                            metavar="COMMAND")
    plugin_new = plugin_commands.add_parser(
        "new", help="Create a plugin package (pyproject.toml with the fkod.plugins entry "
                    "point, a module with a sample event type and integration, a README and "
                    "a test) in DIR/fkod-NAME.")
    plugin_new.add_argument("name", metavar="NAME",
                            help="the plugin name: lowercase letters, digits, hyphens")
    plugin_new.add_argument("--dir", default=".",
                            help="the existing directory to create it in (default: %(default)s)")
    plugin_new.add_argument("--publisher", default="your-partner-slug",
                            help="your partner slug, the integration's publisher "
                                 "(default: %(default)s)")
    plugin_new.set_defaults(run=cmd_plugin_new)

    scheduler = commands.add_parser(
        "scheduler", help="Send the messages of scheduled jobs at their cron times (UTC), "
                          "after catching up a firing missed while stopped. Several may run "
                          "at once; each firing is sent once. Stop with SIGTERM or Ctrl-C.")
    scheduler.add_argument("config", metavar="INI")
    scheduler.set_defaults(run=cmd_scheduler)

    jobs = commands.add_parser("jobs", help="List and run scheduled jobs.")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")
    jobs_list = jobs_commands.add_parser(
        "list", help="Print each scheduled job: cron line, actor, next fire time and last run.")
    jobs_list.add_argument("config", metavar="INI")
    jobs_list.set_defaults(run=cmd_jobs_list)
    jobs_run = jobs_commands.add_parser(
        "run", help="Run a scheduled job now. Its actor gets the current time in ISO 8601, "
                    "or the --argument text.")
    jobs_run.add_argument("config", metavar="INI")
    jobs_run.add_argument("name", metavar="NAME", help="the job name, e.g. billing.close_period")
    jobs_run.add_argument("--argument", metavar="TEXT",
                          help="the text the actor gets instead of the current time")
    jobs_run.add_argument("--inline", action="store_true",
                          help="run the actor's function in this process and wait for it, "
                               "instead of sending a message to the workers")
    jobs_run.set_defaults(run=cmd_jobs_run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from fkod.core.settings import ConfigurationError, env_name

    # A command builds the app only to use it; the embedded scheduler belongs to the
    # serving process, and fkod scheduler runs its own.
    os.environ[env_name("fkod.scheduler.embedded")] = "false"

    try:
        return args.run(args)
    except ConfigurationError as exc:
        print(f"fkod: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
