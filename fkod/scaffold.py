"""``fkod plugin new``: create the skeleton of a plugin package.

The package it writes installs with ``pip install -e`` and is found through
its ``fkod.plugins`` entry point without edits. It contains a module with a
sample event type, a sample integration manifest and its install and event
hooks, a README, and a test that builds the platform with
:mod:`fkod.core.testing` and checks that the plugin is loaded.

The files are kept here as templates, so they ship inside the ``fkod``
package without package data.
"""

from __future__ import annotations

import dataclasses
import keyword
import re
import string
from pathlib import Path

from fkod.core.integrations import SLUG

# Lowercase letters and digits, with single hyphens or underscores between them.
PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
MAX_NAME_LENGTH = 40
DEFAULT_PUBLISHER = "your-partner-slug"


class ScaffoldError(Exception):
    """An error that stops the plugin from being created, with the reason and the fix."""


@dataclasses.dataclass(frozen=True)
class PluginNames:
    """The names one plugin name turns into.

    For ``acme-quizzes``: distribution ``fkod-acme-quizzes``, module
    ``fkod_acme_quizzes``, entry point ``acme_quizzes``, integration slug
    ``acme-quizzes`` and sample event type ``acme_quizzes.sample_created``.
    """

    name: str
    distribution: str
    module: str
    entry_point: str
    slug: str
    event_type: str
    title: str


def plugin_names(name: str) -> PluginNames:
    """Derive the package names from ``name``; raise ScaffoldError for an invalid name."""
    if not isinstance(name, str) or not PLUGIN_NAME.match(name) or len(name) > MAX_NAME_LENGTH:
        raise ScaffoldError(
            f"invalid plugin name {name!r}: use 1 to {MAX_NAME_LENGTH} lowercase letters and "
            "digits, starting with a letter, with single hyphens or underscores between "
            "words, for example acme-quizzes")

    base = re.sub(r"^fkod[-_]", "", name)
    if not base:
        raise ScaffoldError(f"invalid plugin name {name!r}: add a word after fkod-")
    entry_point = base.replace("-", "_")
    if keyword.iskeyword(entry_point):
        raise ScaffoldError(f"invalid plugin name {name!r}: it is a Python keyword")
    slug = base.replace("_", "-")
    if not SLUG.match(slug):
        raise ScaffoldError(f"invalid plugin name {name!r}: {slug!r} is not a valid "
                            "integration slug")
    return PluginNames(
        name=name,
        distribution=f"fkod-{slug}",
        module=f"fkod_{entry_point}",
        entry_point=entry_point,
        slug=slug,
        event_type=f"{entry_point}.sample_created",
        title=" ".join(word.capitalize() for word in re.split(r"[-_]", base)),
    )


def create_plugin(name: str, directory: Path | str = ".", *,
                  publisher: str = DEFAULT_PUBLISHER) -> Path:
    """Write a new plugin package into ``directory``/<distribution> and return its path.

    Raises ScaffoldError for an invalid name or publisher slug, a missing
    ``directory``, or a package folder that already exists.
    """
    names = plugin_names(name)
    if not SLUG.match(publisher):
        raise ScaffoldError(f"invalid publisher {publisher!r}: give your partner slug, "
                            "lowercase letters, digits and hyphens")

    parent = Path(directory)
    if not parent.is_dir():
        raise ScaffoldError(f"the directory {str(parent)!r} does not exist; create it first "
                            "or choose another with --dir")
    target = parent / names.distribution
    if target.exists():
        raise ScaffoldError(f"{str(target)!r} already exists; choose another name or "
                            "another directory with --dir")

    values = {**dataclasses.asdict(names), "publisher": publisher}
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"{names.module}/__init__.py": MODULE,
        f"tests/test_{names.module}.py": TEST,
    }
    target.mkdir()
    for relative, template in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(string.Template(template).substitute(values), encoding="utf-8")
    return target


PYPROJECT = """\
[build-system]
requires = ["setuptools>=68", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "$distribution"
version = "0.1.0"
description = "F-KOD plugin: $title"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["fkod-partner-platform"]

# The platform finds the plugin through this entry point. The name on the left
# is the plugin's name for admins, so it must not change between releases.
[project.entry-points."fkod.plugins"]
$entry_point = "$module"

[tool.setuptools]
packages = ["$module"]

[tool.pytest.ini_options]
testpaths = ["tests"]
filterwarnings = [
    "error",
    # WebOb still imports the cgi module, deprecated since Python 3.11.
    "ignore:'cgi' is deprecated:DeprecationWarning",
]
"""

README = """\
# $title

An F-KOD plugin. It contributes the event type `$event_type` and the marketplace
integration `$slug`, published by the partner `$publisher`.

## Develop

    pip install -e .
    python -m pytest tests

The platform finds the plugin through the `fkod.plugins` entry point
`$entry_point` after a restart. `docs/plugins.md` in the platform's repository
describes every hook and how a plugin is reviewed and published.
"""

MODULE = '''\
"""F-KOD plugin $entry_point: a sample event type and a sample marketplace integration."""

from __future__ import annotations

import logging

from fkod.core.hookspecs import hookimpl
from fkod.core.integrations import IntegrationError, IntegrationManifest
from fkod.core.webhooks.catalog import EventType

log = logging.getLogger(__name__)

EVENT_TYPE = "$event_type"
INTEGRATION_SLUG = "$slug"
# The slug of your verified partner account; the platform links the
# integration to it at start-up.
PUBLISHER = "$publisher"

SAMPLE_DATA_SCHEMA = {
    "type": "object",
    "required": ["id", "user_id"],
    "properties": {
        "id": {"type": "string"},
        "user_id": {"type": "string", "pattern": "^user_[0-9]+$$"},
        "created_at": {"type": "string", "format": "date-time"},
    },
}

CONFIG_SCHEMA = {
    "type": "object",
    "required": ["api_token"],
    "additionalProperties": False,
    "properties": {
        # writeOnly: the platform encrypts it and never shows it again.
        "api_token": {"type": "string", "minLength": 8, "writeOnly": True,
                      "title": "API token of your $title account"},
    },
}


@hookimpl
def fkod_register_event_types():
    return [EventType(EVENT_TYPE, "A sample record was created.", SAMPLE_DATA_SCHEMA,
                      {"id": "sample_1", "user_id": "user_123",
                       "created_at": "2026-06-05T10:00:00Z"})]


@hookimpl
def fkod_register_integrations():
    return [IntegrationManifest(
        slug=INTEGRATION_SLUG,
        name="$title",
        publisher=PUBLISHER,
        category="other",
        description="Describe what the integration does for the customer.",
        version="0.1.0",
        event_types=("course.completed",),
        config_schema=CONFIG_SCHEMA,
    )]


@hookimpl
def fkod_integration_installed(install):
    # The configuration is already valid against CONFIG_SCHEMA; check here
    # what a schema cannot, and raise IntegrationError to refuse the install.
    if install.config["api_token"].strip() != install.config["api_token"]:
        raise IntegrationError("The API token must not start or end with a space.")
    log.info("installed", extra={"install_id": install.install_id})


@hookimpl
def fkod_integration_event(install, event):
    # Events arrive at least once: make the reaction idempotent on event["id"].
    log.info("event received", extra={"install_id": install.install_id,
                                      "event_id": event["id"], "event_type": event["type"]})
'''

TEST = '''\
"""The plugin loads into a real F-KOD application and its install hook checks the configuration."""

from __future__ import annotations

import $module
import pytest
from fkod import shutdown
from fkod.core.integrations import InstallContext, IntegrationError
from fkod.core.migrations import upgrade_to_head
from fkod.core.testing import TestClient, make_app, make_settings


@pytest.fixture
def app(tmp_path):
    settings = make_settings(tmp_path)
    upgrade_to_head(settings["fkod.db.url"])
    application = make_app(settings)
    yield application
    shutdown(application.registry)


def test_plugin_loaded(app):
    info = app.registry["plugins"].plugins["$entry_point"]
    assert info.status == "loaded", info.error


def test_event_type_listed(app):
    client = TestClient(app)
    names = [item["name"] for item in
             client.web.get("/api/webhooks/available-events").json["data"]]
    assert $module.EVENT_TYPE in names


def test_install_refuses_padded_token():
    plugin = $module
    install = InstallContext(install_id="inst_1", integration_slug=plugin.INTEGRATION_SLUG,
                             user_id="user_1", config={"api_token": " padded-token "},
                             granted_scopes=())
    with pytest.raises(IntegrationError):
        plugin.fkod_integration_installed(install)
'''
