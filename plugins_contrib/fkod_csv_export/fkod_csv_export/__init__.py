"""F-KOD plugin: keep a customer's course completions in a CSV file they can download.

Installing creates the customer's export; every ``course.completed`` event
that reaches the install appends one row; uninstalling deletes the file. The
customer downloads it with their login token from
``GET /api/plugins/csv-export/installs/{install_id}/completions.csv``.

Setting ``fkod_csv_export.directory``: the folder that contains the exports,
by default ``csv-exports`` beside ``fkod.storage.local_directory``. Every
worker and web process must see the same folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fkod.core.hookspecs import hookimpl
from fkod.core.integrations import IntegrationError, IntegrationManifest
from fkod_csv_export.store import DELIMITERS, ExportNotFound, ExportStore

log = logging.getLogger(__name__)

SLUG = "csv-export"
PUBLISHER = "fkod-labs"
EVENT_TYPES = ("course.completed",)

CONFIG_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "delimiter": {
            "enum": list(DELIMITERS),
            "default": "comma",
            "title": "Column separator",
            "description": "Use semicolon for spreadsheet programs that read commas as "
                           "decimal marks. It cannot change after installing.",
        },
    },
}

# NOTE: the integration hooks receive no registry, so the folder of the last
# application built in the process applies to every call.
_store: ExportStore | None = None


def export_directory(settings: dict) -> Path:
    configured = settings.get("fkod_csv_export.directory")
    if configured:
        return Path(configured)
    documents = settings.get("fkod.storage.local_directory") or "var/documents"
    return Path(documents).parent / "csv-exports"


def store() -> ExportStore:
    """Return the export store of the application that was built last."""
    if _store is None:
        raise RuntimeError("the csv_export plugin is used before any application included it")
    return _store


def configure(settings: dict) -> None:
    """Apply the application's settings to the plugin; ``fkod_include`` calls it."""
    global _store
    _store = ExportStore(export_directory(settings))


@hookimpl
def fkod_include(config):
    configure(config.get_settings())

    from fkod_csv_export.views import download

    config.add_cornice_service(download)


@hookimpl
def fkod_register_integrations():
    return [IntegrationManifest(
        slug=SLUG,
        name="Course completions CSV export",
        publisher=PUBLISHER,
        category="analytics",
        description="Collects every course your users complete into one CSV file that you "
                    "can download at any time or open in a spreadsheet.",
        version="1.0.0",
        event_types=EVENT_TYPES,
        config_schema=CONFIG_SCHEMA,
    )]


@hookimpl
def fkod_integration_installed(install):
    name = install.config.get("delimiter", "comma")
    if name not in DELIMITERS:
        raise IntegrationError(f"The column separator {name!r} is not one of "
                               f"{', '.join(DELIMITERS)}.")
    store().create(install.install_id, install.user_id, DELIMITERS[name])
    log.info("csv export created", extra={"install_id": install.install_id})


@hookimpl
def fkod_integration_uninstalled(install):
    store().delete(install.install_id)
    log.info("csv export deleted", extra={"install_id": install.install_id})


@hookimpl
def fkod_integration_event(install, event):
    if install.integration_slug != SLUG or event["type"] not in EVENT_TYPES:
        return
    try:
        added = store().append_completion(install.install_id, event)
    except ExportNotFound:
        # An install that predates the plugin, or whose folder was lost, gets a new export.
        store().create(install.install_id, install.user_id,
                       DELIMITERS[install.config.get("delimiter", "comma")])
        added = store().append_completion(install.install_id, event)
    if added:
        log.info("csv row appended", extra={"install_id": install.install_id,
                                            "event_id": event["id"]})
