"""The `ghostream` command line run as a user runs it, in its own process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def ghostream(*args: str, stdin: str = "", env: dict | None = None, home: Path | None = None):
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(home or Path.cwd())} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "ghostream", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        env=environment,
    )
