"""A real headless Chromium (Debian's package) driven by Playwright, for the tests of what a
browser sees: the admin page, a page loaded through an HTTPS listener.

Nothing here knows what a test asserts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Debian's chromium: Playwright cannot download its own browser here."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing; .ci/run installs it (apt-get install -y chromium)")
        pytest.skip("install Debian's chromium: apt-get install -y chromium")
    return path


@asynccontextmanager
async def browser_page(*, ignore_https_errors: bool = False) -> AsyncIterator[Any]:
    """A new page in a new headless Chromium; `ignore_https_errors` for an edge whose test CA the
    browser does not know."""
    executable = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900}, ignore_https_errors=ignore_https_errors)
            yield await context.new_page()
        finally:
            await browser.close()
