"""Run the Python SDK's own test suite (``sdk/python/tests``) against a live server."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sdk.owner_login import owner_login_environment
from tests.services import ci_requires_services

SDK_DIR = Path(__file__).resolve().parents[2] / "sdk" / "python"
TIMEOUT_SECONDS = 120


def test_python_sdk_suite(live_api):
    if importlib.util.find_spec("fkod_sdk") is None:
        message = ("The Python SDK (fkod_sdk) is not installed. To run its tests, run "
                   "`make install` or `.venv/bin/python -m pip install -e sdk/python`.")
        if ci_requires_services():
            pytest.fail(f"{message} CI is set, so the test fails instead of being skipped.")
        pytest.skip(message)

    # The suite runs in its own directory with its own pytest configuration, so
    # that its tests are not collected again as part of the platform's suite.
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", "no:xdist",
               "--rootdir", str(SDK_DIR), "-c", str(SDK_DIR / "pyproject.toml"),
               str(SDK_DIR / "tests")]
    env = {**os.environ, **live_api.environment(), **owner_login_environment(live_api)}
    result = subprocess.run(command, cwd=SDK_DIR, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT_SECONDS)

    # Shown by pytest for a failure, or with -s or -rP for a pass.
    print(result.stdout)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert " passed" in result.stdout, result.stdout
    assert " skipped" not in result.stdout, result.stdout
