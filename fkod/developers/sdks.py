"""The SDKs shipped in the repository's sdk folder: their metadata and tar.gz archives.

Each language has a sub-folder of ``fkod.developers.sdk_dir``; a missing
sub-folder means that SDK is not listed. Versions come from each SDK's own
metadata: ``pyproject.toml`` (python), ``package.json`` (javascript),
``go.mod`` with ``const Version = "x.y.z"`` in ``version.go`` (go) and a
``VERSION`` file (java). An archive is built from the files on disk, leaving
out build outputs and dot-files, and each process keeps the last archive of
each language until a file in its folder changes.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import gzip
import hashlib
import io
import json
import logging
import os
import re
import tarfile
import threading
import tomllib
import xml.etree.ElementTree as ElementTree

log = logging.getLogger(__name__)

LANGUAGES = ("python", "javascript", "go", "java")
# Folders and files that are build outputs, never sources.
EXCLUDED_DIRECTORIES = frozenset({"node_modules", "__pycache__", "dist", "build", "target",
                                  "vendor"})
EXCLUDED_FILE_PATTERNS = ("*.class", "*.pyc", "*.pyo", "*.egg-info")
# An SDK folder larger than this is rejected, so one request cannot fill the memory.
MAX_ARCHIVE_INPUT_BYTES = 50 * 1024 * 1024

_GO_MODULE = re.compile(r"^module\s+(\S+)", re.MULTILINE)
_GO_VERSION = re.compile(r'^\s*const\s+Version\s*=\s*"([^"]+)"', re.MULTILINE)


class SdkTooLarge(Exception):
    """An SDK folder holds more than MAX_ARCHIVE_INPUT_BYTES of files."""


@dataclasses.dataclass(frozen=True)
class SdkInfo:
    """What the SDK list shows about one SDK."""

    language: str
    package_name: str | None
    version: str | None
    install_command: str | None
    docs_url: str | None


@dataclasses.dataclass(frozen=True)
class SdkArchive:
    """A built archive and the fingerprint of the files it was built from."""

    fingerprint: str
    data: bytes
    etag: str
    filename: str


def sdk_folder(sdk_dir: str, language: str) -> str | None:
    """Return the folder of ``language`` when it exists, otherwise None."""
    if language not in LANGUAGES:
        return None
    folder = os.path.join(sdk_dir, language)
    return folder if os.path.isdir(folder) else None


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None


def _python_info(folder: str) -> tuple[str | None, str | None, str | None]:
    text = _read_text(os.path.join(folder, "pyproject.toml"))
    if text is None:
        return None, None, None
    try:
        project = tomllib.loads(text).get("project", {})
    except tomllib.TOMLDecodeError as exc:
        log.warning("invalid pyproject.toml in the python SDK", extra={"error": str(exc)[:200]})
        return None, None, None
    urls = project.get("urls") or {}
    docs = urls.get("Documentation") or urls.get("Homepage")
    return _text_or_none(project.get("name")), _text_or_none(project.get("version")), \
        _text_or_none(docs)


def _javascript_info(folder: str) -> tuple[str | None, str | None, str | None]:
    text = _read_text(os.path.join(folder, "package.json"))
    if text is None:
        return None, None, None
    try:
        package = json.loads(text)
    except ValueError as exc:
        log.warning("invalid package.json in the javascript SDK", extra={"error": str(exc)[:200]})
        return None, None, None
    if not isinstance(package, dict):
        return None, None, None
    return _text_or_none(package.get("name")), _text_or_none(package.get("version")), \
        _text_or_none(package.get("homepage"))


def _go_info(folder: str) -> tuple[str | None, str | None, str | None]:
    module = version = None
    go_mod = _read_text(os.path.join(folder, "go.mod"))
    if go_mod is not None and (match := _GO_MODULE.search(go_mod)):
        module = match.group(1)
    version_go = _read_text(os.path.join(folder, "version.go"))
    if version_go is not None and (match := _GO_VERSION.search(version_go)):
        version = match.group(1)
    return module, version, None


def _java_info(folder: str) -> tuple[str | None, str | None, str | None]:
    version = _read_text(os.path.join(folder, "VERSION"))
    version = version.strip() or None if version is not None else None
    package = None
    pom = os.path.join(folder, "pom.xml")
    if os.path.isfile(pom):
        try:
            # The pom.xml is a file of this repository's sdk folder, not client input.
            root = ElementTree.parse(pom).getroot()  # noqa: S314
        except (ElementTree.ParseError, OSError) as exc:
            log.warning("invalid pom.xml in the java SDK", extra={"error": str(exc)[:200]})
            root = None
        if root is not None:
            namespace = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            group = root.findtext(f"{namespace}groupId")
            artifact = root.findtext(f"{namespace}artifactId")
            if group and artifact:
                package = f"{group.strip()}:{artifact.strip()}"
    return package, version, None


def _text_or_none(value) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


_READERS = {"python": _python_info, "javascript": _javascript_info, "go": _go_info,
            "java": _java_info}


def _install_command(language: str, package: str | None, version: str | None) -> str | None:
    if package is None:
        return None
    if language == "python":
        return f"pip install {package}=={version}" if version else f"pip install {package}"
    if language == "javascript":
        return f"npm install {package}@{version}" if version else f"npm install {package}"
    if language == "go":
        return f"go get {package}@v{version}" if version else f"go get {package}"
    coordinates = f"{package}:{version}" if version else package
    return f"mvn dependency:get -Dartifact={coordinates}"


def list_sdks(sdk_dir: str) -> list[SdkInfo]:
    """Return the SDKs whose folders exist, in the order of LANGUAGES."""
    found = []
    for language in LANGUAGES:
        folder = sdk_folder(sdk_dir, language)
        if folder is None:
            continue
        package, version, docs = _READERS[language](folder)
        if docs is None and os.path.isfile(os.path.join(folder, "README.md")):
            docs = f"sdk/{language}/README.md"
        found.append(SdkInfo(language=language, package_name=package, version=version,
                             install_command=_install_command(language, package, version),
                             docs_url=docs))
    return found


# Archives -----------------------------------------------------------------------


def _is_excluded(name: str) -> bool:
    return name.startswith(".") or any(fnmatch.fnmatch(name, pattern)
                                       for pattern in EXCLUDED_FILE_PATTERNS)


def archive_files(folder: str) -> list[tuple[str, os.stat_result]]:
    """Return the files an archive contains, as (path relative to ``folder``, stat), sorted.

    Symbolic links are left out, so an archive never reaches outside the folder.
    """
    files = []
    for root, directories, names in os.walk(folder, followlinks=False):
        directories[:] = sorted(name for name in directories
                                if name not in EXCLUDED_DIRECTORIES and not _is_excluded(name)
                                and not os.path.islink(os.path.join(root, name)))
        for name in sorted(names):
            path = os.path.join(root, name)
            if _is_excluded(name) or os.path.islink(path) or not os.path.isfile(path):
                continue
            files.append((os.path.relpath(path, folder), os.stat(path)))
    return sorted(files, key=lambda item: item[0])


def _fingerprint(files: list[tuple[str, os.stat_result]]) -> str:
    digest = hashlib.sha256()
    for relative, stat in files:
        digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def build_archive(folder: str, top: str, files: list[tuple[str, os.stat_result]]) -> bytes:
    """Return a gzip-compressed tar of ``files`` under the top folder ``top``.

    Owners are left out and the gzip header has no time, so the same files
    always give the same bytes. Raises SdkTooLarge past MAX_ARCHIVE_INPUT_BYTES.
    """
    if sum(stat.st_size for _relative, stat in files) > MAX_ARCHIVE_INPUT_BYTES:
        raise SdkTooLarge(folder)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for relative, stat in files:
            info = tarfile.TarInfo(f"{top}/{relative.replace(os.sep, '/')}")
            with open(os.path.join(folder, relative), "rb") as handle:
                data = handle.read()
            info.size = len(data)
            info.mtime = int(stat.st_mtime)
            info.mode = 0o755 if stat.st_mode & 0o111 else 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class ArchiveCache:
    """The last archive built per language in this process, rebuilt when a file changes."""

    def __init__(self):
        self._archives: dict[str, SdkArchive] = {}
        self._lock = threading.Lock()

    def get(self, sdk_dir: str, info: SdkInfo) -> SdkArchive:
        folder = os.path.join(sdk_dir, info.language)
        files = archive_files(folder)
        fingerprint = _fingerprint(files)
        with self._lock:
            cached = self._archives.get(info.language)
            if cached is not None and cached.fingerprint == fingerprint:
                return cached
        top = f"fkod-sdk-{info.language}" + (f"-{info.version}" if info.version else "")
        data = build_archive(folder, top, files)
        archive = SdkArchive(fingerprint=fingerprint, data=data,
                             etag=hashlib.sha256(data).hexdigest()[:32],
                             filename=_safe_filename(top) + ".tar.gz")
        with self._lock:
            self._archives[info.language] = archive
        log.info("sdk archive built", extra={"language": info.language, "files": len(files),
                                             "bytes": len(data)})
        return archive


def _safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)
