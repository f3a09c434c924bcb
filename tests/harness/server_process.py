"""The real server as a subprocess on free loopback ports, for end-to-end tests.

Tests talk to it the way users do (ffmpeg, srt-live-transmit, HTTP), so what
they check is the program as shipped: the CLI, the configuration file, the
logs on stderr, the exit status.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

# Deadlines, not waits: generous, for a busy 2-core runner importing aiortc and PyAV.
READY_TIMEOUT = 60.0
READY_LINE = "Ghostream ready"
# The admin credential every test server has (a cheap bcrypt cost, for speed).
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin-test-password"
ADMIN_HASH = "$2b$04$wQYqFfwOUFsjQlkMJhlCJOl7qeYRp/VOJ7xxL40RCbZ0zK1yMJ7l2"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class ServerProcess:
    def __init__(self, process: subprocess.Popen, config: dict, config_path: Path) -> None:
        self.process = process
        self.config = config
        self.config_path = config_path
        self.srt_port = int(config["srt"]["listenAddress"].rsplit(":", 1)[1])
        self.rtmp_port = int(config["rtmp"]["listenAddress"].rsplit(":", 1)[1])
        self.rtmps_port = int(config["rtmp"]["tls"]["listenAddress"].rsplit(":", 1)[1])
        self.web_url = "http://" + config["web"]["listenAddress"]
        self.metrics_url = "http://" + config["monitoring"]["listenAddress"] + "/metrics"
        self.history_path = Path(config["history"]["path"])
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def srt_url(self, streamid: str | None = None, **options: str) -> str:
        query = dict(options)
        if streamid is not None:
            query = {"streamid": streamid, **query}
        suffix = "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
        return f"srt://127.0.0.1:{self.srt_port}{suffix}"

    def rtmp_url(self, key: str, *, secure: bool = False) -> str:
        if secure:
            return f"rtmps://127.0.0.1:{self.rtmps_port}/live/{key}"
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{key}"

    def admin_json(self, path: str) -> dict:
        """GET an admin API path with the test admin credential."""
        credential = base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()).decode()
        request = urllib.request.Request(
            self.web_url + path, headers={"Authorization": f"Basic {credential}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self._lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def log(self) -> str:
        with self._changed:
            return "\n".join(self._lines)

    def wait_for_log(
        self, pattern: str, timeout: float = 20.0, *, start: int = 0, count: int = 1
    ) -> str:
        """The `count`-th log line (from line `start`) matching `pattern`; fails after `timeout`.

        `count` waits for an event that happens again (a second viewer leaving)
        without guessing where the first one's line is.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matches = [line for line in self._lines[start:] if regex.search(line)]
                if len(matches) >= count:
                    return matches[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and self._reader_done()):
                    raise AssertionError(
                        f"no log line matching {pattern!r} within {timeout}s; log:\n{self.log}"
                    )
                self._changed.wait(min(remaining, 0.2))

    def line_count(self) -> int:
        with self._changed:
            return len(self._lines)

    def _reader_done(self) -> bool:
        return not self._reader.is_alive()

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"server did not stop within {timeout}s; log:\n{self.log}"
                ) from None
        self._reader.join(5)
        return self.process.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._reader.join(5)


def make_config(directory: Path, overrides: dict[str, Any]) -> dict:
    """A configuration on free loopback ports, with the history in `directory`."""
    base = {
        "srt": {"listenAddress": f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"},
        # RTMP on a port of its own, never 1935 (which nginx-rtmp or another server may hold).
        "rtmp": {
            "listenAddress": f"127.0.0.1:{free_port()}",
            "tls": {"listenAddress": f"127.0.0.1:{free_port()}"},
        },
        "web": {"listenAddress": f"127.0.0.1:{free_port()}"},
        "monitoring": {"listenAddress": f"127.0.0.1:{free_port()}"},
        "history": {"path": str(directory / "history.sqlite3")},
        # One process unless a test asks for workers.
        "server": {"workers": 1},
        "admin": {"credentials": {ADMIN_USER: ADMIN_HASH}},
        # No STUN server can be reached from the test machine; ports of its own for WebRTC.
        "webrtc": {
            "STUNServers": [],
            "minPortUDP": (webrtc_udp := free_port(socket.SOCK_DGRAM)),
            "maxPortUDP": webrtc_udp,
            "tcpListenAddress": f":{free_port()}",
        },
    }
    return merge(base, overrides)


def start_server(
    directory: Path,
    overrides: dict[str, Any],
    *,
    config: dict | None = None,
    env: dict[str, str] | None = None,
    wait: bool = True,
    command: list[str] | None = None,
    cwd: Path | None = None,
) -> ServerProcess:
    """Run `command` (default: `python -m ghostream` of this checkout) with a config file."""
    config = config or make_config(directory, overrides)
    config_path = directory / f"ghostream-{len(list(directory.glob('ghostream-*.yml')))}.yml"
    config_path.write_text(yaml.safe_dump(config))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GHOSTREAM_")}
    environment |= {"PYTHONUNBUFFERED": "1", "HOME": str(directory)} | (env or {})
    process = subprocess.Popen(
        [*(command or [sys.executable, "-m", "ghostream"]), "--config", str(config_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=cwd,
    )
    server = ServerProcess(process, config, config_path)
    if wait:
        try:
            server.wait_for_log(READY_LINE, READY_TIMEOUT)
        except AssertionError:
            server.kill()
            raise
    return server
