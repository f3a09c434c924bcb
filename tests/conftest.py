"""Fixtures shared by every test: real peers, and the server as a subprocess.

A test that needs a program no one here wrote (ffmpeg, srt-live-transmit,
slapd, chromium) asks `require_program` (or `harness.programs.require` from a
module fixture), which alone decides between skipping and failing.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

# Fresh inputs on every run (the seed is printed in the header, to replay a failure with
# `--hypothesis-seed=N`), besides the examples each test stores with @example.
settings.register_profile("fuzz", derandomize=False, database=None, print_blob=True)
settings.load_profile("fuzz")

sys.path.insert(0, str(Path(__file__).parent))

from harness.programs import require  # noqa: E402
from harness.server_process import ServerProcess, start_server  # noqa: E402


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Choose the run's Hypothesis seed before Hypothesis reads it; xdist workers, started
    later, inherit it through the environment."""
    seed = config.getoption("hypothesis_seed", None)
    seed = str(seed or os.environ.get("HYPOTHESIS_SEED") or random.randrange(2**32))
    config.option.hypothesis_seed = seed
    os.environ["HYPOTHESIS_SEED"] = seed


def replay_line(config: pytest.Config) -> str:
    seed = config.getoption("hypothesis_seed")
    return f"hypothesis seed: {seed} (replay a failure with --hypothesis-seed={seed})"


def pytest_report_header(config: pytest.Config) -> str:
    return replay_line(config)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """The seed again under the failures (`-q` hides the header)."""
    if exitstatus:
        terminalreporter.write_line(replay_line(config))


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
