"""A report opened in a real browser: headless Chromium (Debian's ``chromium``, or the one
``CHROMIUM`` names) driven over the DevTools protocol by playwright. It collects console
errors and page errors, what each chart drew, every ``data-key`` value, and saves a
screenshot.

Without a browser the caller skips, saying why; in CI (``CI=true``) it fails instead
(``.ci/run`` installs chromium when absent)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ARGS = ["--headless", "--no-sandbox", "--disable-background-networking", "--disable-gpu"]
# What every chart of a page drew: its size on the page and the SVG shapes (or the PNG's
# decoded size).
CHARTS_JS = """() => [...document.querySelectorAll('figure.chart')].map(f => {
  const el = f.querySelector('svg, img');
  if (!el) return {name: f.dataset.chart, width: 0, height: 0, shapes: 0};
  const box = el.getBoundingClientRect();
  const shapes = el.tagName.toLowerCase() === 'img'
    ? (el.complete ? el.naturalWidth : 0)
    : el.querySelectorAll('path, rect, polyline, use, image, text').length;
  return {name: f.dataset.chart, width: box.width, height: box.height, shapes: shapes};
})"""
KEYS_JS = """() => Object.fromEntries([...document.querySelectorAll('[data-key]')]
  .map(e => [e.dataset.key, e.textContent.trim()]))"""


def chromium_path() -> str | None:
    """The Chromium binary: ``CHROMIUM``, else ``chromium`` / ``chromium-browser`` on PATH."""
    given = os.environ.get("CHROMIUM")
    if given:
        return given if Path(given).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> str:
    """The browser's path; skip (fail under CI=true) with the reason when there is none."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "the playwright package is not installed (pip install -e '.[dev]')"
    path = chromium_path()
    if reason is None and path is None:
        reason = (
            "no Chromium found (apt-get install -y chromium, or set CHROMIUM=/path/to/chromium)"
        )
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true, but the browser test cannot run: {reason}")
        pytest.skip(f"browser test skipped: {reason}")
    return path


@dataclass
class Opened:
    errors: list[str] = field(default_factory=list)
    charts: list[dict] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)  # anything the page asked the network for
    screenshot: Path | None = None


def open_page(page_file: Path, screenshot: Path, width: int = 1280) -> Opened:
    """Open ``page_file`` in headless Chromium; what it logged, drew and showed."""
    from playwright.sync_api import sync_playwright

    opened = Opened()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=require_chromium(), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else 0)
            page.on("pageerror", lambda e: opened.errors.append(str(e)))
            page.on(
                "request",
                lambda r: (
                    opened.requests.append(r.url) if not r.url.startswith(("file:", "data:")) else 0
                ),
            )
            page.goto(Path(page_file).resolve().as_uri(), wait_until="load")
            opened.charts = page.evaluate(CHARTS_JS)
            opened.keys = page.evaluate(KEYS_JS)
            page.screenshot(path=str(screenshot), full_page=True)
            opened.screenshot = screenshot
        finally:
            browser.close()
    return opened
