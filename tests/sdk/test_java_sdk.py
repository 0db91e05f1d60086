"""Run the Java SDK's own test runner (sdk/java/build.sh) against a live server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.sdk.compiled_sdks import oauth_environment, require_tool, run_suite

SDK_DIR = Path(__file__).resolve().parents[2] / "sdk" / "java"

HOW_TO_INSTALL = ("install a JDK 17 or newer, on Debian with "
                  "`apt-get install -y openjdk-17-jdk-headless`")


@pytest.fixture
def java_toolchain() -> None:
    """Check for javac and java before the live server starts."""
    require_tool("javac", HOW_TO_INSTALL)
    require_tool("java", HOW_TO_INSTALL)


def test_java_sdk_suite_passes_against_live_server(java_toolchain, live_api, tmp_path):
    environment = {**live_api.environment(), **oauth_environment(live_api),
                   "BUILD_DIR": str(tmp_path / "build")}

    output = run_suite([str(SDK_DIR / "build.sh")], cwd=str(SDK_DIR), environment=environment,
                       timeout_seconds=120)
    print(output)

    # Each live test skips without its variables, so a skip here means one did not run.
    assert "SKIP " not in output, output
    summary = re.search(r"^(\d+) passed, 0 failed, 0 skipped$", output, re.MULTILINE)
    assert summary, output
    assert int(summary.group(1)) >= 25, output
