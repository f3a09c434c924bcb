"""Headless Firefox ESR (Debian's firefox-esr) driven over Marionette, its own remote protocol.

No geckodriver is packaged for Debian, so the tests speak Marionette directly
(PyPI's marionette_driver).  Firefox runs with a fresh profile whose prefs
let media play without a click and give real host candidates instead of
mDNS names.  The page object answers `execute_script` and `get_log` like a
Selenium driver, so `harness.browser.wait_for` works with it too; a script
may `await`.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from marionette_driver.marionette import Marionette

START_TIMEOUT = 60.0
PREFS = {
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "media.navigator.permission.disabled": True,
    "media.navigator.streams.fake": True,
    "browser.shell.checkDefaultBrowser": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.disabledForTesting": True,
    "browser.startup.homepage_override.mstone": "ignore",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FirefoxPage:
    """The Marionette session of one Firefox, with Selenium's names for what the tests use."""

    def __init__(self, marionette: Marionette) -> None:
        self.marionette = marionette

    def get(self, url: str) -> None:
        self.marionette.navigate(url)

    def execute_script(self, script: str) -> Any:
        """Run `script` as the body of an async function in the page; what it returns."""
        return self.marionette.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            f"(async () => {{ {script} }})().then(done, (e) => done({{scriptError: String(e)}}));",
            sandbox=None,
        )

    def find_element(self, by: str, value: str) -> Any:
        """An element of the page, with `send_keys` and `click`; `by` as Selenium's ("id")."""
        return self.marionette.find_element(by, value)

    def get_log(self, _kind: str) -> list[dict]:
        """Marionette keeps no console log: failure messages go without it."""
        return []


@contextmanager
def open_firefox(firefox: str) -> Iterator[FirefoxPage]:
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="firefox-profile-") as profile:
        prefs = {**PREFS, "marionette.port": port}
        (Path(profile) / "user.js").write_text(
            "".join(f'user_pref("{name}", {_js(value)});\n' for name, value in prefs.items())
        )
        process = subprocess.Popen(
            [firefox, "--marionette", "--headless", "--no-remote", "-profile", profile],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            marionette = _connect(process, port)
            try:
                yield FirefoxPage(marionette)
            finally:
                marionette.delete_session()
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _connect(process: subprocess.Popen, port: int) -> Marionette:
    """A Marionette session once Firefox listens on `port` (it takes seconds to start)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise AssertionError(f"Firefox exited with status {process.returncode} at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                message = f"Firefox did not listen for Marionette in {START_TIMEOUT} s"
                raise AssertionError(message) from None
            time.sleep(0.2)
    marionette = Marionette(host="127.0.0.1", port=port, startup_timeout=int(START_TIMEOUT))
    marionette.start_session()
    return marionette


def _js(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return f'"{value}"'
