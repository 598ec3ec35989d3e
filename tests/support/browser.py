"""Headless Chromium for the tests, as a user's browser: Debian's chromium driven by Playwright
(Playwright cannot download its own browser here).

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
async def chromium_page(*args: str, **context_options: Any) -> AsyncIterator[Any]:
    """A page in a fresh headless Chromium; `args` are added to its command line, and
    `context_options` go to Playwright's `new_context`."""
    executable = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=[*CHROMIUM_ARGS, *args])
        try:
            context = await browser.new_context(**context_options)
            yield await context.new_page()
        finally:
            await browser.close()
