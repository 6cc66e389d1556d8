"""Headless Debian Chromium for the Playwright tests: where it is, how it is launched, and the skip marker."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_PATH = os.environ.get("CBTCOMPARE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM = CHROMIUM_PATH if Path(CHROMIUM_PATH).exists() else shutil.which("chromium")

# Skips, saying why, only when no Chromium is installed; `make test` installs Debian's chromium as root.
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason=f"no Chromium at {CHROMIUM_PATH}: run `make test` as root to install Debian's chromium"
)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium with the flags this closed network needs (no background connections)."""
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A browser test gets one rerun: on 2 shared cores a page can miss a step under load (a race in the test's
    timing, not in the app); a test that fails twice in a row still fails."""
    for item in items:
        if "page" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=5))
