"""Several worker processes on the same ports (`server.workers: 2`), with ffmpeg as the peers.

The kernel spreads SRT peers over the workers by a hash of their address;
which worker a peer reaches is read from the workers' log lines
(`[worker N]`).  A worker's restart changes that spread: the connections
that stay up prove that datagrams reaching the wrong worker are passed on.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from harness.publisher import SOURCE, publishing
from harness.server_process import ServerProcess, free_port, start_server
from test_webrtc import decoded, open_viewer

WORKERS = {"server": {"workers": 2}, "webrtc": {"enabled": False}, "auth": {"enabled": False}}
ATTEMPTS = 12
WORKER = re.compile(r"\[worker (\d+)\]")


@pytest.fixture
def server(tmp_path: Path, require_program) -> Iterator[ServerProcess]:
    require_program("ffmpeg")
    server = start_server(tmp_path, WORKERS, wait=False)
    try:
        server.wait_for_log("Ghostream workers ready", 60)
        yield server
    finally:
        assert server.stop() == 0, server.log


def worker_of(line: str) -> int:
    match = WORKER.search(line)
    assert match is not None, line
    return int(match.group(1))


def worker_pid(server: ServerProcess, index: int) -> int:
    """The pid of worker `index` now, from the parent's log."""
    pattern = re.compile(rf"worker {index} (?:ready again \(pid|pid) (\d+)")
    pids = [m.group(1) for line in server.log.splitlines() if (m := pattern.search(line))]
    return int(pids[-1])


def restart(server: ServerProcess, index: int) -> None:
    start = server.line_count()
    killed = worker_pid(server, index)
    subprocess.run(["kill", "-KILL", str(killed)], check=True)
    server.wait_for_log(rf"worker {index} \(pid {killed}\) ended unexpectedly", start=start)
    server.wait_for_log(rf"worker {index} ready again \(pid \d+\)", 30, start=start)


class Viewer:
    """ffmpeg copying a stream from the server to a pipe, counting the bytes it gets."""

    def __init__(self, server: ServerProcess, stream_id: str) -> None:
        self.received = 0
        self.process = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error",
             "-i", server.srt_url(stream_id), "-c", "copy", "-f", "mpegts", "-"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._count, daemon=True)
        self._reader.start()

    def _count(self) -> None:
        assert self.process.stdout is not None
        while chunk := self.process.stdout.read1(65536):
            self.received += len(chunk)

    def wait_for_bytes(self, total: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.received < total:
            assert self.process.poll() is None, "the viewer stopped"
            assert time.monotonic() < deadline, f"{self.received} of {total} bytes"
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@contextmanager
def publisher_on(server: ServerProcess, worker: int, stack: ExitStack) -> Iterator[str]:
    """A stream id published by ffmpeg on `worker` (new publishers until one lands there)."""
    for attempt in range(ATTEMPTS):
        stream_id = f"spread{attempt}"
        start = server.line_count()
        with ExitStack() as attempt_stack:
            attempt_stack.enter_context(publishing(server, f"{stream_id}:demo"))
            line = server.wait_for_log(f"publishing {stream_id} over SRT", start=start)
            if worker_of(line) == worker:
                stack.enter_context(attempt_stack.pop_all())
                yield stream_id
                return
    pytest.fail(f"no publisher reached worker {worker} in {ATTEMPTS} attempts")


def viewer_on(server: ServerProcess, stream_id: str, worker: int) -> Viewer:
    """An ffmpeg viewer of `stream_id` served by `worker`; the other worker refuses it."""
    for _ in range(ATTEMPTS):
        start = server.line_count()
        viewer = Viewer(server, stream_id)
        deadline = time.monotonic() + 20
        while viewer.process.poll() is None and time.monotonic() < deadline:
            lines = server.log.splitlines()[start:]
            watching = [line for line in lines if f"watching {stream_id} over SRT" in line]
            if watching and worker_of(watching[0]) == worker:
                return viewer
            time.sleep(0.1)
        viewer.stop()
    pytest.fail(f"no viewer reached worker {worker} in {ATTEMPTS} attempts")


def test_srt_connections_stay_with_their_worker_across_restarts(server: ServerProcess) -> None:
    # Worker 1 rejoins the port's group last; when worker 0 then restarts, every peer
    # the kernel sent to worker 1 is sent to worker 0 instead, which passes its datagrams on.
    restart(server, 1)
    with ExitStack() as stack:
        stream_id = stack.enter_context(publisher_on(server, 1, stack))
        viewer = viewer_on(server, stream_id, 1)
        stack.callback(viewer.stop)
        viewer.wait_for_bytes(20_000)
        start = server.line_count()
        restart(server, 0)
        server.wait_for_log(r"\[worker 0\].*passing datagrams of worker 1's", start=start)
        viewer.wait_for_bytes(viewer.received + 60_000)
        lines = server.log.splitlines()[start:]
        assert not [line for line in lines if f"stopped publishing {stream_id}" in line]
        assert not [line for line in lines if f"stopped watching {stream_id}" in line]


def test_a_live_stream_is_busy_on_the_other_worker_too(server: ServerProcess) -> None:
    # Worker 1 knows nothing of worker 0's stream but its claim on the id.
    with ExitStack() as stack:
        stream_id = stack.enter_context(publisher_on(server, 0, stack))
        # Second publishers of the same id until one reaches worker 1.
        refusals = []
        for _ in range(ATTEMPTS):
            start = server.line_count()
            process = subprocess.Popen(
                ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", *SOURCE, "-t", "5",
                 "-f", "mpegts", server.srt_url(f"{stream_id}:demo")],
                stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                line = server.wait_for_log(
                    rf"{stream_id}.*already (has a publisher|published)", start=start
                )
            finally:
                process.terminate()
                process.wait(10)
            refusals.append(worker_of(line))
            if worker_of(line) == 1:
                break
        assert refusals[-1] == 1, refusals
        worker_1 = [line for line in server.log.splitlines() if "[worker 1]" in line]
        assert not [line for line in worker_1 if f"publishing {stream_id} over SRT" in line]


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    # Only worker 0 serves the metrics endpoint: with its port taken it cannot start.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = start_server(
            tmp_path,
            WORKERS | {"monitoring": {"listenAddress": f"127.0.0.1:{port}"}},
            wait=False,
        )
        assert server.process.wait(60) == 1
    server.stop()
    assert "worker 0 stopped before it was ready (status 1)" in server.log
    assert "all workers stopped" in server.log


def test_sigint_stops_every_worker(tmp_path: Path) -> None:
    server = start_server(tmp_path, WORKERS, wait=False)
    line = server.wait_for_log("Ghostream workers ready", 60)
    pids = [int(pid) for pid in re.findall(r"pid (\d+)", line)]
    assert server.stop(signal.SIGINT) == 0
    assert server.log.count("SIGTERM received, shutting down") == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_workers_stop_when_their_parent_is_killed(tmp_path: Path) -> None:
    server = start_server(tmp_path, WORKERS, wait=False)
    line = server.wait_for_log("Ghostream workers ready", 60)
    server.kill()
    server.wait_for_log(r"\[worker \d\].*the parent process is gone", count=2)
    for pid in (int(pid) for pid in re.findall(r"pid (\d+)", line)):
        deadline = time.monotonic() + 20
        while _alive(pid):
            assert time.monotonic() < deadline, f"worker pid {pid} outlived its parent"
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_chromium_plays_over_whep_from_the_worker_that_answered(
    tmp_path: Path, require_program
) -> None:
    from harness.browser import open_chromium, wait_for

    chromium, chromedriver = require_program("chromium"), require_program("chromedriver")
    require_program("ffmpeg")
    low, tcp = free_port(socket.SOCK_DGRAM), free_port()
    webrtc = {"minPortUDP": low, "maxPortUDP": low + 1, "tcpListenAddress": f":{tcp}"}
    server = start_server(tmp_path, WORKERS | {"webrtc": webrtc}, wait=False)
    try:
        server.wait_for_log("Ghostream workers ready", 60)
        with publishing(server, "demo:demo"):
            owner = worker_of(server.wait_for_log("publishing demo over SRT"))
            # Each browser's WHEP request reaches one worker or the other; the owner answers.
            for _ in range(ATTEMPTS):
                with open_chromium(chromium, chromedriver) as driver:
                    result = open_viewer(driver, server, "demo")
                    if result["status"] != 201:
                        assert result["status"] == 404, result
                        continue
                    candidates = re.findall(r"a=candidate:(.*)", result["answer"])
                    ports = {(c.split()[2].lower(), int(c.split()[5])) for c in candidates}
                    assert ports == {("udp", low + owner), ("tcp", tcp + owner)}, ports
                    wait_for(driver, "return await stats()", decoded(25), 20, "playback")
                    break
            else:
                pytest.fail(f"no WHEP request reached worker {owner}")
    finally:
        assert server.stop() == 0
