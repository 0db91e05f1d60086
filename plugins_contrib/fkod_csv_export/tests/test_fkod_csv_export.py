"""The CSV export plugin's hooks and its file store."""

from __future__ import annotations

import csv
import threading

import fkod_csv_export
import pytest
from fkod_csv_export.store import ExportStore

from fkod.core.integrations import InstallContext, IntegrationError


@pytest.fixture
def exports(tmp_path):
    fkod_csv_export.configure({"fkod_csv_export.directory": str(tmp_path)})
    return tmp_path


def context(install_id="inst_3", config=None):
    return InstallContext(install_id=install_id, integration_slug=fkod_csv_export.SLUG,
                          user_id="user_3", config=config or {}, granted_scopes=())


def completed(event_id):
    return {"id": event_id, "type": "course.completed", "created": 1780000000, "livemode": True,
            "data": {"course": {"id": "course_1", "title": "Intro; Basics", "level": "beginner"},
                     "user_id": "user_3", "completed_at": "2026-06-05T10:00:00Z"}}


def rows(path, delimiter=","):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle, delimiter=delimiter))


def test_install_creates_header(exports):
    fkod_csv_export.fkod_integration_installed(context(config={"delimiter": "semicolon"}))
    assert rows(exports / "inst_3" / "completions.csv", ";") == [list(
        ("event_id", "completed_at", "user_id", "course_id", "course_title", "course_level"))]


def test_event_appended_once(exports):
    fkod_csv_export.fkod_integration_installed(context())
    for event_id in ("evt_1", "evt_2", "evt_1"):
        fkod_csv_export.fkod_integration_event(context(), completed(event_id))
    written = rows(exports / "inst_3" / "completions.csv")
    assert [row[0] for row in written[1:]] == ["evt_1", "evt_2"]
    assert written[1][4] == "Intro; Basics"


def test_other_event_types_ignored(exports):
    fkod_csv_export.fkod_integration_installed(context())
    other = {**completed("evt_9"), "type": "user.created"}
    fkod_csv_export.fkod_integration_event(context(), other)
    assert len(rows(exports / "inst_3" / "completions.csv")) == 1


def test_event_before_install_creates_export(exports):
    fkod_csv_export.fkod_integration_event(context("inst_4"), completed("evt_1"))
    assert len(rows(exports / "inst_4" / "completions.csv")) == 2


def test_uninstall_deletes_export(exports):
    fkod_csv_export.fkod_integration_installed(context())
    fkod_csv_export.fkod_integration_uninstalled(context())
    assert not (exports / "inst_3").exists()


def test_bad_delimiter_refused(exports):
    with pytest.raises(IntegrationError):
        fkod_csv_export.fkod_integration_installed(context(config={"delimiter": "|"}))


def test_install_id_must_be_platform_id(tmp_path):
    with pytest.raises(ValueError, match="inst_"):
        ExportStore(tmp_path).create("../outside", "user_1", ",")


def test_concurrent_appends_all_kept(tmp_path):
    store = ExportStore(tmp_path)
    store.create("inst_1", "user_1", ",")
    threads = [threading.Thread(target=store.append_completion,
                                args=("inst_1", completed(f"evt_{n}")))
               for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(rows(tmp_path / "inst_1" / "completions.csv")) == 21
