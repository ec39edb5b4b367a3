"""The browser tests' fixtures: Debian's chromium (installed by `make deps`), driven headless by Playwright, one
fresh context and page per test. A page may load nothing but loopback: every other request is aborted and recorded
in `blocked_requests` (the dashboard must load no CDN asset). Screenshots: `tests.browser.shots.screenshot`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Route, expect, sync_playwright

TIMEOUT_MS = 15_000
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def chromium_path() -> str:
    """Debian's chromium: the one on PATH, else where the package puts it; fails (never skips) when it is missing."""
    found = shutil.which("chromium")
    if found:
        return found
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    pytest.fail("chromium is not installed: run `make deps` (it installs Debian's chromium package)", pytrace=False)


def launch_args() -> list[str]:
    # /dev/shm is small in containers; chromium's sandbox cannot start as root.
    args = ["--disable-dev-shm-usage", "--disable-gpu"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    return args


# Package scope, not session: while Playwright's sync API is started, its event loop counts as running in this
# thread, and every asyncio.run() in it (tests elsewhere, a handler invoked in-process) fails; it ends with the last
# test of tests/browser. Here, run anything asyncio (the dev host) in its own thread or process.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=launch_args())
    expect.set_options(timeout=TIMEOUT_MS)
    yield launched
    launched.close()


@pytest.fixture
def blocked_requests() -> list[str]:
    """The URLs the test's page asked for that are not on loopback, each aborted."""
    return []


@pytest.fixture
def context(browser: Browser, blocked_requests: list[str]) -> Iterator[BrowserContext]:
    opened = browser.new_context(viewport={"width": 1280, "height": 900})
    opened.set_default_timeout(TIMEOUT_MS)
    opened.set_default_navigation_timeout(TIMEOUT_MS)

    def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK_HOSTS:
            route.continue_()
        else:
            blocked_requests.append(route.request.url)
            route.abort()

    opened.route("**/*", loopback_only)
    yield opened
    opened.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    opened = context.new_page()
    yield opened
    opened.close()
