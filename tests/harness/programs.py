"""Whether a peer program the tests need is installed: the one place that decides skip or fail.

On a developer machine without the program a test is skipped with the
reason; in CI (`CI` set) a missing program is a failure, so that a broken
set-up never passes as green.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def require(name: str) -> str:
    """The program's path; skips the test (fails it in CI) when it is not installed."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        unavailable(f"{name} is not installed (scripts/test installs it)")
    return path


def unavailable(message: str) -> NoReturn:
    """Skip the test for want of something only the machine can give; in CI, fail it."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
