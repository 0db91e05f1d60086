"""Per-install CSV files of course completions, kept in a directory on local disk.

Each install has a folder named after its public id (``inst_12``) that contains
``install.json`` (the owning user and the CSV dialect chosen at install time)
and ``completions.csv``. Rows are appended under an exclusive ``flock`` on
the CSV file, so several worker processes on one host can write to it.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import re
import shutil
from pathlib import Path

INSTALL_ID = re.compile(r"^inst_[0-9]{1,18}$")
COLUMNS = ("event_id", "completed_at", "user_id", "course_id", "course_title", "course_level")
DELIMITERS = {"comma": ",", "semicolon": ";", "tab": "\t"}
# A cell that starts with one of these runs as a formula in spreadsheet programs.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class ExportNotFound(LookupError):
    """No export exists for the install."""


def _safe_cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


class ExportStore:
    """The export folders under one root directory."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _folder(self, install_id: str) -> Path:
        # The id becomes a folder name, so only the platform's own id form passes.
        if not INSTALL_ID.match(install_id):
            raise ValueError(f"install id {install_id!r} is not of the form inst_<number>")
        return self.root / install_id

    def create(self, install_id: str, user_id: str, delimiter: str) -> None:
        """Create the install's folder and a CSV file with its header row; keep existing rows."""
        folder = self._folder(install_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "install.json").write_text(json.dumps({"user_id": user_id,
                                                         "delimiter": delimiter}))
        with self._locked(folder / "completions.csv") as handle:
            if handle.tell() == 0:
                self._write_row(handle, COLUMNS, delimiter)

    def owner(self, install_id: str) -> str:
        """Return the public id of the user who installed; raise ExportNotFound."""
        try:
            return json.loads((self._folder(install_id) / "install.json").read_text())["user_id"]
        except (FileNotFoundError, ValueError, KeyError):
            raise ExportNotFound(install_id) from None

    def append_completion(self, install_id: str, event: dict) -> bool:
        """Append the course.completed ``event`` once; return False when its row exists.

        Raises ExportNotFound when the install has no export folder.
        """
        folder = self._folder(install_id)
        try:
            settings = json.loads((folder / "install.json").read_text())
        except FileNotFoundError:
            raise ExportNotFound(install_id) from None
        delimiter = settings["delimiter"]
        data = event.get("data") or {}
        course = data.get("course") or {}
        row = (event["id"], data.get("completed_at"), data.get("user_id"), course.get("id"),
               course.get("title"), course.get("level"))

        with self._locked(folder / "completions.csv") as handle:
            # NOTE: finding a repeated event reads the whole file, which stays
            # cheap for the few thousand completions a customer has.
            handle.seek(0)
            for existing in csv.reader(handle, delimiter=delimiter):
                if existing and existing[0] == event["id"]:
                    return False
            handle.seek(0, io.SEEK_END)
            if handle.tell() == 0:
                self._write_row(handle, COLUMNS, delimiter)
            self._write_row(handle, row, delimiter)
        return True

    def read(self, install_id: str) -> bytes:
        """Return the CSV file's bytes; raise ExportNotFound."""
        try:
            return (self._folder(install_id) / "completions.csv").read_bytes()
        except FileNotFoundError:
            raise ExportNotFound(install_id) from None

    def delete(self, install_id: str) -> None:
        """Remove the install's folder; a missing folder is not an error."""
        shutil.rmtree(self._folder(install_id), ignore_errors=True)

    @staticmethod
    def _write_row(handle, values, delimiter: str) -> None:
        csv.writer(handle, delimiter=delimiter, lineterminator="\r\n").writerow(
            [_safe_cell(value) for value in values])
        handle.flush()

    @staticmethod
    @contextlib.contextmanager
    def _locked(path: Path):
        with open(path, "a+", newline="", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.seek(0, io.SEEK_END)
                yield handle
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
