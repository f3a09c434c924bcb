"""Fixtures shared by every test: real peers, and the server as a subprocess.

A test that needs a program no one here wrote (ffmpeg, srt-live-transmit,
slapd, chromium) asks `require_program` (or `harness.programs.require` from a
module fixture), which alone decides between skipping and failing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

# The same examples on every run and every machine: a failure found once is found again.
settings.register_profile("deterministic", derandomize=True, database=None)
settings.load_profile("deterministic")

sys.path.insert(0, str(Path(__file__).parent))

from harness.programs import require  # noqa: E402
from harness.server_process import ServerProcess, start_server  # noqa: E402


@pytest.fixture
def require_program() -> Callable[[str], str]:
    return require


@pytest.fixture
def ghostream_server(tmp_path: Path) -> Callable[..., ServerProcess]:
    """Start `python -m ghostream` on free loopback ports; stopped after the test."""
    started: list[ServerProcess] = []

    def start(overrides: dict | None = None, **kwargs) -> ServerProcess:
        server = start_server(tmp_path, overrides or {}, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def chromium(require_program):
    """A headless Chromium page; skipped (failed in CI) without Debian's chromium."""
    from harness.browser import open_chromium

    with open_chromium(require_program("chromium"), require_program("chromedriver")) as driver:
        yield driver


@pytest.fixture
def firefox(require_program):
    """A headless Firefox ESR page over Marionette; skipped (failed in CI) without firefox-esr."""
    from harness.firefox import open_firefox

    with open_firefox(require_program("firefox-esr")) as page:
        yield page
