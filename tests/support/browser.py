"""A real browser for the dashboard's tests: Debian's chromium driven by Playwright.

Playwright is launched with ``executable_path`` on the system's chromium; its own browser download
is never used. Outside CI a machine without chromium (or without the ``playwright`` package)
skips the browser tests; under ``CI=true`` it fails them, as a missing service does.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
EXPECT_TIMEOUT_MS = 30_000


def chromium_path() -> str | None:
    for candidate in (*CHROMIUM_CANDIDATES, shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _missing(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: .ci/run installs chromium with apt-get)", pytrace=False)
    pytest.skip(why)


@contextmanager
def launched_chromium() -> Iterator[Any]:
    """A headless chromium (Playwright ``Browser``), closed on exit."""
    executable = chromium_path()
    if executable is None:
        _missing("no chromium at /usr/bin/chromium: install Debian's package (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            # Root in a container has no user namespace for chromium's sandbox.
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield browser
        finally:
            browser.close()


class PageErrors:
    """Uncaught script errors and CSP violations a page reported (both fail a test)."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self.errors.append(f"console: {msg.text}")
                if msg.type == "error" and "Content Security Policy" in msg.text
                else None
            ),
        )

    def check(self) -> None:
        assert not self.errors, "\n".join(self.errors)


def expect(target: Any) -> Any:
    """Playwright's ``expect`` (imported late: without playwright the tests skip, not error)."""
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=EXPECT_TIMEOUT_MS)  # (its 5 s default is short on a loaded CI)
    return playwright_expect(target)
