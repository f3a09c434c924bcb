"""Headless Chromium (Debian's chromium and chromium-driver) driven through Selenium.

Selenium is pointed at the installed chromedriver so it never tries to
download a browser.  Autoplay is allowed so that players start without a
click, and logs of the page's console are kept for failure messages.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


@contextmanager
def open_chromium(
    chromium: str, chromedriver: str, *, width: int = 1280, height: int = 800, extra: tuple = ()
) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--allow-file-access-from-files",
        # Real host candidates instead of mDNS names, which need multicast.
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        f"--window-size={width},{height}",
        *extra,
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console(driver: webdriver.Chrome) -> str:
    """The page's console messages, for an assertion's explanation."""
    return "\n".join(entry["message"] for entry in driver.get_log("browser"))


def wait_for(
    driver: webdriver.Chrome,
    script: str,
    accept: Callable[[Any], bool],
    timeout: float,
    what: str,
) -> Any:
    """Evaluate `script` in the page until `accept` says yes; fail with what was last seen."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if accept(value):
            return value
        time.sleep(0.1)
    raise AssertionError(
        f"{what}: not reached in {timeout} s; last value {json.dumps(value, default=str)}\n"
        f"console:\n{console(driver)}"
    )
