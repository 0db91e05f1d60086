"""Run the JavaScript SDK's own test suite (``sdk/javascript/test``) against a live server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.sdk.owner_login import owner_login_environment
from tests.services import ci_requires_services

SDK_DIR = Path(__file__).resolve().parents[2] / "sdk" / "javascript"
MINIMUM_NODE_MAJOR = 20
TIMEOUT_SECONDS = 120


def skip_without_toolchain(problem: str) -> None:
    """Skip the test because of ``problem``, or fail it when CI is set."""
    message = (f"{problem}. To run the JavaScript SDK tests, install Node.js 20 or newer "
               "(for example `apt-get install nodejs`) and put `node` on PATH.")
    if ci_requires_services():
        pytest.fail(f"{message} CI is set, so the test fails instead of being skipped.")
    pytest.skip(message)


def node_executable() -> str:
    """Return the path of a Node.js 20 or newer, or skip (fail under CI) without one."""
    node = shutil.which("node")
    if node is None:
        skip_without_toolchain("node was not found on PATH")
    version = subprocess.run([node, "--version"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
    match = re.fullmatch(r"v(\d+)\..*", version)
    if match is None or int(match.group(1)) < MINIMUM_NODE_MAJOR:
        skip_without_toolchain(f"{node} is Node.js {version or 'of unknown version'}, "
                               f"older than {MINIMUM_NODE_MAJOR}")
    return node


def test_javascript_sdk_suite(live_api):
    node = node_executable()

    result = subprocess.run([node, "--test", "test/"], cwd=SDK_DIR,
                            env={**os.environ, **live_api.environment(),
                                 **owner_login_environment(live_api)},
                            capture_output=True, text=True, timeout=TIMEOUT_SECONDS)

    # Shown by pytest for a failure, or with -s or -rP for a pass.
    print(result.stdout)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert re.search(r"^# pass [1-9]", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^# fail 0$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^# skipped 0$", result.stdout, re.MULTILINE), result.stdout
