"""The browser reader (web/) in Debian's Chromium, driven by Playwright.

Playwright never downloads a browser here: it launches /usr/bin/chromium.
The reader is built by scripts/build-web (npm ci + esbuild) once per session
and served by csfs.web.make_server, as `csfs web` serves it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from csfs.web import BUILD_SCRIPT, WEB, make_server

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VECTORS = Path(__file__).resolve().parents[1] / "vectors"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture(scope="session")
def reader_dist() -> Path:
    if shutil.which("npm") is None:
        pytest.fail("npm is missing: scripts/test installs it (the reader is built with esbuild)")
    subprocess.run([str(BUILD_SCRIPT)], check=True)
    return WEB / "dist"


@pytest.fixture(scope="session")
def reader_url(reader_dist: Path) -> Iterator[str]:
    """The built reader, with the test vectors under /vectors/."""
    server = make_server(reader_dist, 0, mounts={"/vectors/": VECTORS})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("Debian's chromium is missing: scripts/test installs it (apt chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
