"""srt-live-transmit peers for the SRT benchmarks.

libsrt is the reference the benchmarks hold Ghostream against, so its senders and viewers
are started one way everywhere: figures from different benchmarks then compare.
"""

from __future__ import annotations

import csv
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def start_sender(url: str, chunk: int) -> subprocess.Popen:
    """An SRT caller sending its stdin in `chunk`-byte messages: the benchmark writes at its
    own pace, so the bitrate on the wire is the benchmark's choice, not the tool's."""
    return subprocess.Popen(
        ["srt-live-transmit", f"-chunk:{chunk}", "file://con", url],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_connected(sender: subprocess.Popen) -> None:
    """Blocks until the sender's handshake is done: what it reads before, it throws away."""
    assert sender.stderr is not None
    seen = b""
    while b"connected" not in seen.lower():
        line = sender.stderr.readline()
        if not line:
            raise RuntimeError(f"srt-live-transmit sender failed: {seen.decode()}")
        seen += line


@contextmanager
def counting_viewers(urls: list[str], stats: list[Path]) -> Iterator[None]:
    """One viewer per URL, discarding the stream; each writes libsrt's own count of what it
    received and lost to its file in `stats` (read them with `viewer_totals`)."""
    viewers = [
        subprocess.Popen(
            [
                "srt-live-transmit",
                "-q",
                "-f",
                "-s:100",
                "-pf:csv",
                f"-statsout:{path}",
                url,
                "file://con",
            ],
            stdout=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        for url, path in zip(urls, stats, strict=True)
    ]
    try:
        yield
    finally:
        for viewer in viewers:
            viewer.terminate()
        for viewer in viewers:
            viewer.wait(10)


def viewer_totals(stats_files: list[Path]) -> tuple[int, int]:
    """Packets lost or dropped (all viewers), and the fewest any viewer received."""
    lost = 0
    fewest = None
    for path in stats_files:
        rows = list(csv.DictReader(path.read_text().splitlines())) if path.exists() else []
        received = 0
        if rows:
            last = rows[-1]
            lost += int(last["pktRcvLoss"]) + int(last["pktRcvDrop"])
            received = int(last["pktRecv"])
        fewest = received if fewest is None else min(fewest, received)
    return lost, fewest or 0


@contextmanager
def piped_viewer(url: str) -> Iterator[int]:
    """A viewer whose stream the benchmark reads itself (for timestamps or keyframes):
    yields the descriptor of its output."""
    viewer = subprocess.Popen(
        ["srt-live-transmit", "-q", url, "file://con"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert viewer.stdout is not None
    try:
        yield viewer.stdout.fileno()
    finally:
        viewer.kill()
        viewer.wait()
