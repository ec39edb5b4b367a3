"""Screenshots of the browser tests, kept under .state/screenshots/ at the repository's root (ignored by git)."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page

SCREENSHOTS = Path(__file__).resolve().parents[1].parent / ".state" / "screenshots"


def screenshot(page: Page, name: str) -> Path:
    """The whole page (not only the viewport) as `.state/screenshots/<name>.png`; returns its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
