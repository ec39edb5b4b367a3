"""The browser tests' infrastructure on its own: Debian's chromium, headless, loads a page from a loopback HTTP
server, a request off loopback is aborted and recorded, and a screenshot lands in .state/screenshots/."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.shots import screenshot

CDN_IMAGE = "https://cdn.example.com/x.png"
PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Smoke</title></head>
<body><h1 id="greeting">Hello from loopback</h1><img id="cdn" src="{CDN_IMAGE}" alt="off loopback"></body></html>
"""


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server of one page, index.html; yields its base URL and is shut down after."""
    (tmp_path / "index.html").write_text(PAGE, encoding="utf-8")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_a_loopback_page_loads_its_cdn_image_is_blocked_and_a_screenshot_is_written(
    site: str, page: Page, blocked_requests: list[str]
) -> None:
    # given a page on a loopback server that also asks for an image from a CDN
    # when chromium loads it
    page.goto(f"{site}/index.html", wait_until="load")

    # then the page's text shows, and the CDN request was aborted and recorded, the only one refused
    expect(page.locator("#greeting")).to_have_text("Hello from loopback")
    expect(page).to_have_title("Smoke")
    assert page.evaluate("document.getElementById('cdn').naturalWidth") == 0
    assert blocked_requests == [CDN_IMAGE]

    # and a full-page screenshot is written under .state/screenshots/
    shot = screenshot(page, "browser-smoke")
    assert shot.parent.parts[-2:] == (".state", "screenshots")
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
