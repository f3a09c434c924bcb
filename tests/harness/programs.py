"""Whether a peer program the tests need is installed: the one place that decides skip or fail.

On a developer machine without the program a test is skipped with the
reason; in CI (`CI` set) a missing program is a failure, so that a broken
set-up never passes as green.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import NoReturn

import pytest

# Debian's own Python, whose gi bindings reach GStreamer (the test venv's Python has none).
SYSTEM_PYTHON = "/usr/bin/python3"
GSTREAMER_CHECK = (
    "import gi; gi.require_version('GstWebRTC', '1.0'); from gi.repository import Gst; "
    "Gst.init(None); assert all(map(Gst.ElementFactory.find, "
    "('webrtcbin', 'nicesrc', 'vp8dec', 'avdec_h264', 'rtph264depay')))"
)


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


def require_gstreamer() -> str:
    """The Python that runs GStreamer's webrtcbin (tests/harness/gst_whep.py); skip or fail."""
    check = (
        subprocess.run([SYSTEM_PYTHON, "-c", GSTREAMER_CHECK], capture_output=True, timeout=30)
        if os.access(SYSTEM_PYTHON, os.X_OK)
        else None
    )
    if check is None or check.returncode:
        unavailable("GStreamer's webrtcbin is not installed for python3 (scripts/test installs it)")
    return SYSTEM_PYTHON
