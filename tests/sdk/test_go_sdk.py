"""Run the Go SDK's own tests (``go test ./...`` in sdk/go) against a live server."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.sdk.compiled_sdks import oauth_environment, require_tool, run_suite

SDK_DIR = Path(__file__).resolve().parents[2] / "sdk" / "go"

# A build cache outside the checkout survives between runs, so later runs skip the compile.
GO_CACHE = "/tmp/fkod-sdk-go-cache"


@pytest.fixture
def go_toolchain() -> str:
    """The go command, checked before the live server starts."""
    return require_tool("go", "install Go 1.19 or newer, on Debian with "
                              "`apt-get install -y golang-go`")


def test_go_sdk_suite_passes_against_live_server(go_toolchain, live_api):
    environment = {
        **live_api.environment(),
        **oauth_environment(live_api),
        "GOCACHE": os.environ.get("GOCACHE", GO_CACHE),
        # Standard library only: no module download is ever needed.
        "GOFLAGS": "-mod=mod",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
    }

    output = run_suite([go_toolchain, "test", "-count=1", "-v", "./..."], cwd=str(SDK_DIR),
                       environment=environment, timeout_seconds=180)
    print(output)

    # Each live test skips without FKOD_BASE_URL, so a skip here means the suite did not run.
    assert "--- SKIP" not in output, output
    assert re.search(r"^ok\s+github.com/fkod/fkod-go", output, re.MULTILINE), output
