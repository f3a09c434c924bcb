"""A long show with a restless publisher: does the server stay flat, and is every viewer fed?

Run: .venv/bin/python bench/soak.py --minutes 30 [--period 60]

One publish (ffmpeg over SRT) that reconnects every `--period` seconds with
alternating settings (picture size, audio rate), a forward to nginx-rtmp,
three SRT viewers (ffmpeg), one WebRTC viewer (headless Chromium over WHEP)
and one LL-HLS player (a client that follows the playlist and fetches every
new part).  Each minute it prints the server's RSS, thread count and open
files, and what each viewer received in that minute; at the end, whether
all three resources were flat after warm-up and every viewer was fed in
every minute.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness.browser import open_chromium  # noqa: E402
from harness.publisher import signal_source  # noqa: E402
from harness.rtmp_server import RtmpServer  # noqa: E402
from harness.server_process import ServerProcess, free_port, start_server  # noqa: E402

PAGE = Path(__file__).resolve().parent.parent / "tests" / "interop" / "pages" / "whep.html"
SETTINGS = (
    ("320x180", "48000"),
    ("256x144", "44100"),
)
PART = re.compile(r'URI="([^"]*part-[^"]+\.m4s)"')


def resources(pid: int) -> tuple[float, int, int]:
    """RSS in MiB, threads and open file descriptors of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"^VmRSS:\s+(\d+)", status, re.MULTILINE)[1]) / 1024
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE)[1])
    return rss, threads, len(os.listdir(f"/proc/{pid}/fd"))


class Publisher(threading.Thread):
    """ffmpeg publishing, started again every `period` seconds with the other settings."""

    def __init__(self, server: ServerProcess, period: float) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.period = period
        self.sessions = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            size, rate = SETTINGS[self.sessions % len(SETTINGS)]
            source = [
                part.replace("sample_rate=48000", f"sample_rate={rate}")
                for part in signal_source(size, "-tune", "zerolatency")
            ]
            process = subprocess.Popen(
                ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", *source,
                 "-f", "mpegts", self.server.srt_url("demo:demo")],
                stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            self.sessions += 1
            self.stopping.wait(self.period)
            process.terminate()
            process.wait(10)
            time.sleep(1.0)  # a real encoder takes a moment to come back


class SrtViewer(threading.Thread):
    """ffmpeg decoding the stream over SRT; `frames` counts what it decoded."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.frames = 0
        self.process: subprocess.Popen | None = None

    def run(self) -> None:
        while self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                ["ffmpeg", "-hide_banner", "-loglevel", "quiet", "-i", self.server.srt_url("demo"),
                 "-map", "0:v", "-f", "null", "-", "-progress", "pipe:1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            base = self.frames
            assert self.process.stdout is not None
            for line in self.process.stdout:
                if line.startswith("frame="):
                    self.frames = base + int(line.split("=")[1])
            time.sleep(1.0)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


class HlsPlayer(threading.Thread):
    """Follows the media playlist with blocking reloads and fetches every new part."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.base = f"{server.web_url}/demo/"
        self.parts = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        seen: set[str] = set()
        with httpx.Client(timeout=15) as client:
            while not self.stopping.is_set():
                try:
                    playlist = client.get(self.base + "media.m3u8")
                    if playlist.status_code != 200:
                        time.sleep(0.5)
                        continue
                    for name in PART.findall(playlist.text):
                        if name not in seen:
                            seen.add(name)
                            if client.get(self.base + name).status_code == 200:
                                self.parts += 1
                    time.sleep(0.2)
                except httpx.HTTPError:
                    time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--period", type=float, default=60.0, help="seconds between reconnects")
    args = parser.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory() as directory:
        rtmp = RtmpServer(nginx, Path(directory) / "nginx", free_port())
        rtmp.start()
        server = start_server(
            Path(directory),
            {"forwarding": {"demo": [rtmp.url("soak")]}, "streams": {"reconnectGrace": 30}},
        )
        publisher = Publisher(server, args.period)
        srt = [SrtViewer(server) for _ in range(3)]
        hls = HlsPlayer(server)
        try:
            publisher.start()
            server.wait_for_log("publishing demo over SRT", 20)
            for viewer in [*srt, hls]:
                viewer.start()
            chromium = shutil.which("chromium") or "chromium"
            driver = shutil.which("chromedriver") or "chromedriver"
            with open_chromium(chromium, driver) as browser:
                browser.get(f"{PAGE.as_uri()}?whep={server.web_url}/demo/whep")
                rows = soak(server, publisher, srt, hls, browser, args.minutes)
        finally:
            publisher.stopping.set()
            hls.stopping.set()
            for viewer in srt:
                viewer.stop()
            status = server.stop()
            rtmp.stop()
        report(rows, status, server)


def soak(server, publisher, srt, hls, browser, minutes: int) -> list[tuple]:
    print("minute  RSS MiB  threads  fds  publishes  SRT frames (3 viewers)  WebRTC  HLS parts")
    rows = []
    last = [0, 0, 0, 0, 0]
    for minute in range(1, minutes + 1):
        time.sleep(60)
        stats = browser.execute_script("return await stats()")
        webrtc = stats.get("video", {}).get("framesDecoded", 0)
        now = [*(v.frames for v in srt), webrtc, hls.parts]
        fed = [b - a for a, b in zip(last, now, strict=True)]
        last = now
        rss, threads, fds = resources(server.process.pid)
        rows.append((minute, rss, threads, fds, fed))
        srt_fed = " ".join(f"{n:6d}" for n in fed[:3])
        print(
            f"{minute:6d}  {rss:7.1f}  {threads:7d}  {fds:3d}  {publisher.sessions:9d}  "
            f"{srt_fed:>22}  {fed[3]:6d}  {fed[4]:9d}",
            flush=True,
        )
    return rows


def report(rows: list[tuple], status: int, server: ServerProcess) -> None:
    warm = rows[2:] if len(rows) > 4 else rows
    for name, column in (("RSS MiB", 1), ("threads", 2), ("open files", 3)):
        values = [row[column] for row in warm]
        print(f"{name}: {min(values):.1f} .. {max(values):.1f} after warm-up")
    starved = [(row[0], i) for row in rows for i, n in enumerate(row[4]) if n == 0]
    print("every viewer fed every minute" if not starved else f"unfed (minute, viewer): {starved}")
    faults = server.log.count("Traceback")
    print(f"server exit status {status}, tracebacks in its log: {faults}")


if __name__ == "__main__":
    main()
