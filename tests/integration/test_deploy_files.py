"""Checks of the deployment files under deploy/ and the Containerfile that need no server.

The systemd units are parsed with configparser. deploy/gunicorn.conf.py is
loaded the way gunicorn loads it, and gunicorn's own settings validate its
values. Every command the units and the container run is checked against the
``fkod`` argument parser and the entry points in setup.cfg.
"""

from __future__ import annotations

import configparser
import re
import runpy
import shlex
from pathlib import Path

import pytest
from gunicorn.config import Config

from fkod.cli import build_parser

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
UNITS = ["fkod-web.service", "fkod-worker.service", "fkod-worker@.service",
         "fkod-scheduler.service"]


def read_unit(name: str) -> configparser.ConfigParser:
    # systemd allows repeated keys and uses % for its own specifiers.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser


def fkod_subcommands() -> set[str]:
    parser = build_parser()
    commands = next(action for action in parser._actions
                    if action.__class__.__name__ == "_SubParsersAction")
    return set(commands.choices)


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO_ROOT / "setup.cfg")
    return parser


def entry_points(group: str) -> dict[str, str]:
    text = setup_cfg()["options.entry_points"][group]
    pairs = [line.split("=", 1) for line in text.strip().splitlines() if "=" in line]
    return {name.strip(): target.strip() for name, target in pairs}


def load_gunicorn_conf(monkeypatch, ini: Path) -> dict:
    monkeypatch.setenv("FKOD_INI", str(ini))
    namespace = runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))
    return {name: value for name, value in namespace.items()
            if not name.startswith("_") and name.islower()}


@pytest.mark.parametrize("name", UNITS)
def test_unit_sections_and_keys(name):
    unit = read_unit(name)

    assert unit.sections() == ["Unit", "Service", "Install"]
    assert unit["Unit"]["Description"]
    assert unit["Service"]["User"] == "fkod"
    assert unit["Service"]["Restart"] == "always"
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    assert int(unit["Service"]["TimeoutStopSec"]) > 0
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize("name, subcommand", [
    ("fkod-worker.service", "worker"), ("fkod-worker@.service", "worker"),
    ("fkod-scheduler.service", "scheduler"),
])
def test_unit_runs_fkod_subcommand(name, subcommand):
    command = shlex.split(read_unit(name)["Service"]["ExecStart"])

    assert Path(command[0]).name == "fkod"
    assert "fkod" in entry_points("console_scripts")
    assert command[1] == subcommand
    assert subcommand in fkod_subcommands()
    assert command[2].endswith(".ini")


def test_web_unit_runs_gunicorn_with_conf():
    service = read_unit("fkod-web.service")["Service"]
    command = shlex.split(service["ExecStart"])

    assert Path(command[0]).name == "gunicorn"
    assert command[1:] == ["-c", "/srv/fkod/deploy/gunicorn.conf.py"]
    # Repeated keys: configparser keeps the last Environment line.
    assert "Environment=FKOD_INI=/etc/fkod/production.ini" in (
        DEPLOY / "systemd" / "fkod-web.service").read_text()
    assert service["Environment"] == "PROMETHEUS_MULTIPROC_DIR=/run/fkod-web"
    assert service["RuntimeDirectory"] == "fkod-web"
    # Gunicorn's graceful_timeout is 30 s; systemd must wait longer before SIGKILL.
    assert int(service["TimeoutStopSec"]) > 30


def test_gunicorn_conf_names_app_factory(monkeypatch, tmp_path):
    ini = tmp_path / "site.ini"
    conf = load_gunicorn_conf(monkeypatch, ini)

    assert conf["wsgi_app"] == f"pyramid.paster:get_app({str(ini)!r}, 'main')"
    assert conf["logconfig"] == str(ini)
    # production.ini's [app:main] uses the egg, whose paste.app_factory is fkod:main.
    production = configparser.ConfigParser(interpolation=None)
    production.read(REPO_ROOT / "production.ini")
    assert production["app:main"]["use"] == "egg:fkod-partner-platform"
    assert setup_cfg()["metadata"]["name"] == "fkod-partner-platform"
    assert entry_points("paste.app_factory") == {"main": "fkod:main"}


def test_gunicorn_conf_values_valid(monkeypatch, tmp_path):
    conf = load_gunicorn_conf(monkeypatch, tmp_path / "site.ini")
    config = Config()

    for name, value in conf.items():
        if name in config.settings:
            config.set(name, value)  # gunicorn's validators raise on a bad value

    assert config.worker_class_str == "gthread"
    assert config.workers >= 1
    assert config.timeout == 30
    assert config.graceful_timeout == 30
    assert config.max_requests > 0
    assert 0 < config.max_requests_jitter < config.max_requests
    assert config.preload_app is False
    assert config.address == [("127.0.0.1", 6543)]
    unknown = sorted(name for name in conf if name not in config.settings
                     and name not in {"multiprocessing", "os"} and name != "FKOD_INI")
    assert unknown == []


def test_gunicorn_conf_reads_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FKOD_GUNICORN_BIND", "127.0.0.1:7001")
    monkeypatch.setenv("FKOD_GUNICORN_WORKERS", "3")
    monkeypatch.setenv("FKOD_GUNICORN_FORWARDED_ALLOW_IPS", "10.0.0.5")
    conf = load_gunicorn_conf(monkeypatch, tmp_path / "site.ini")

    assert conf["bind"] == ["127.0.0.1:7001"]
    assert conf["workers"] == 3
    assert conf["forwarded_allow_ips"] == "10.0.0.5"


def containerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO_ROOT / "Containerfile").read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_containerfile_runs_as_non_root():
    instructions = containerfile_instructions()
    users = [rest for keyword, rest in instructions if keyword == "USER"]

    assert users, "the Containerfile sets no USER, so the container runs as root"
    assert users[-1] not in {"root", "0"}
    # The final USER comes after the last FROM, so it applies to the runtime stage.
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    last_user = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "USER")
    assert last_user > last_from


def test_containerfile_copies_existing_paths():
    for keyword, rest in containerfile_instructions():
        if keyword != "COPY" or "--from=" in rest:
            continue
        sources = [part for part in rest.split() if not part.startswith("--")][:-1]
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"COPY source {source} does not exist"
            assert not _dockerignored(source), f"COPY source {source} is in .dockerignore"


def _dockerignored(path: str) -> bool:
    patterns = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    return any(path == pattern or path.startswith(pattern.rstrip("/") + "/")
               for pattern in patterns)


def test_containerfile_roles_exist():
    instructions = dict(containerfile_instructions())
    entrypoint = instructions["ENTRYPOINT"]
    script = (DEPLOY / "container-entrypoint.sh").read_text()

    assert '"/usr/local/bin/fkod-entrypoint"' in entrypoint
    assert instructions["CMD"] == '["web"]'
    assert "gunicorn -c /srv/fkod/deploy/gunicorn.conf.py" in script
    roles = re.search(r"^\s*([a-z|]+)\)\s*\n\s*exec fkod \"\$role\"", script, re.MULTILINE)
    assert roles is not None
    for role in roles.group(1).split("|"):
        assert role in fkod_subcommands(), f"the container role {role} is no fkod subcommand"
    assert "fkod" in entry_points("console_scripts")


def test_containerfile_healthcheck_asks_health():
    instructions = dict(containerfile_instructions())
    script = (DEPLOY / "container-entrypoint.sh").read_text()

    assert "healthcheck" in instructions["HEALTHCHECK"]
    assert "http://127.0.0.1:6543/health" in script
    assert (DEPLOY / "container-entrypoint.sh").stat().st_mode & 0o111


def test_nginx_sets_trusted_headers():
    text = (DEPLOY / "nginx" / "fkod.conf").read_text()

    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in text
    assert "proxy_pass http://fkod_web;" in text
    assert "server 127.0.0.1:6543" in text
    assert text.count("{") == text.count("}")


def test_gunicorn_child_exit_marks_metrics(monkeypatch, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    # Files that prometheus_client's live gauges write for a worker with pid 4242.
    dead = metrics_dir / "gauge_livesum_4242.db"
    dead.write_bytes(b"")
    other = metrics_dir / "gauge_livesum_4243.db"
    other.write_bytes(b"")
    conf = load_gunicorn_conf(monkeypatch, tmp_path / "site.ini")

    class ExitedWorker:
        pid = 4242

    conf["child_exit"](None, ExitedWorker())

    assert not dead.exists()
    assert other.exists()
