"""Browser tests: Debian's Chromium driven by Playwright against the app served on 127.0.0.1.

Chromium comes from the Debian package (``apt-get install -y chromium``), never
from ``playwright install``. Without it or without the ``playwright`` package
the tests are skipped with a message, or fail when CI is set. Each action
times out after 10 seconds, and each test saves a screenshot per step under
``test-artifacts/browser/<test name>/``.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

from tests.live import serve
from tests.services import ci_requires_services

CHROMIUM = Path("/usr/bin/chromium")
ACTION_TIMEOUT_MS = 10_000
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


def _missing_requirement() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return ("the playwright package is missing: install it with "
                ".venv/bin/pip install -e '.[test]'")
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: install Debian's browser with apt-get install -y chromium"
    return None


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the session."""
    problem = _missing_requirement()
    if problem is not None:
        if ci_requires_services():
            pytest.fail(f"browser tests cannot run: {problem}. CI is set, so the test fails "
                        "instead of being skipped.")
        pytest.skip(f"browser tests skipped: {problem}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def live_url(app):
    """Serve ``app`` on 127.0.0.1; return its base URL."""
    with serve(app) as url:
        yield url


class Screenshots:
    """Numbered screenshots of one test, in ``test-artifacts/browser/<test name>/``."""

    def __init__(self, folder: Path):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.folder = folder
        self.count = 0

    def take(self, page, step: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def screenshots(request) -> Screenshots:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    return Screenshots(ARTIFACTS / name)


@pytest.fixture
def new_page(chromium, live_url):
    """Open pages in fresh browser contexts on the live server, closed after the test."""
    contexts = []

    def open_page(width: int = 1280, height: int = 900):
        context = chromium.new_context(base_url=live_url,
                                       viewport={"width": width, "height": height})
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        context.set_default_navigation_timeout(ACTION_TIMEOUT_MS)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_url)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()
