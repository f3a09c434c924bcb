"""LL-HLS: latency behind the live edge, and server CPU per request with 200 players.

Run: .venv/bin/python bench/llhls.py [--quick] [--players 200] [--seconds 10]

Prints, for the Ghostream server (a subprocess, as shipped) fed by ffmpeg
over SRT with a 25 fps, 1 s GOP test signal:
- latency from the publisher's clock: when a part became available to a
  player doing blocking reloads, minus when ffmpeg sent its last frame
  (ffmpeg's launch time plus the frame's timestamp; ffmpeg's start-up time
  is counted as latency, so this is a slight overestimate);
- the packaging delay by the server's own clock: availability minus the
  part's end by EXT-X-PROGRAM-DATE-TIME;
- the latency hls.js reports (`hls.latency`) in headless Chromium in
  low-latency mode;
- server CPU (utime+stime from /proc/PID/stat) while N simulated players
  (keep-alive HTTP/1.1 clients doing blocking playlist reloads and part fetches)
  follow the stream, as a share of one core, per 100 players and per request.
  On a machine with two cores or more, the players run in their own process
  pinned with `taskset` to another core than the server's (which is pinned
  to core 0), so that they do not starve the server of CPU; the figure to
  read is then CPU per request, since the players' own CPU caps the rate.

--quick skips the latency and hls.js measurements and plays for 5 s.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from harness.browser import open_chromium  # noqa: E402
from harness.server_process import ServerProcess, start_server  # noqa: E402
from process_usage import cpu_seconds  # noqa: E402

HLS_JS = ROOT / "ghostream" / "web" / "node_modules" / "hls.js" / "dist" / "hls.js"
PART = re.compile(r'#EXT-X-PART:DURATION=([0-9.]+),URI="(part-[0-9a-f]+-(\d+)-(\d+)\.m4s)"')
HINT = re.compile(r'PRELOAD-HINT:TYPE=PART,URI="part-[0-9a-f]+-(\d+)-(\d+)\.m4s"')
PDT = re.compile(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)\n(?:#EXT-X-PART:[^\n]*\n)*")
PUBLISH = [
    "ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
    "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
    "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25",
    "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
    # Timestamps from zero, so that a frame's timestamp is its send time after launch.
    "-muxdelay", "0", "-muxpreload", "0", "-t", "600", "-f", "mpegts",
]  # fmt: skip


def part_end_ticks(data: bytes) -> int:
    """The video run's end in 90 kHz ticks: tfdt plus the sample durations of its trun."""
    tfdt = data.index(b"tfdt")
    base = struct.unpack(">Q", data[tfdt + 8 : tfdt + 16])[0]
    trun = data.index(b"trun", tfdt)
    count = struct.unpack(">I", data[trun + 8 : trun + 12])[0]
    entries = trun + 16
    return base + sum(
        struct.unpack(">I", data[entries + 16 * n : entries + 16 * n + 4])[0] for n in range(count)
    )


def part_pdt_end(playlist: str, msn: int, index: int) -> float | None:
    """The part's end by the playlist's PROGRAM-DATE-TIME of its segment."""
    for block in PDT.finditer(playlist):
        parts = [p for p in PART.finditer(block[0]) if int(p[3]) == msn]
        if parts:
            start = datetime.fromisoformat(block[1].replace("Z", "+00:00")).timestamp()
            return start + sum(float(p[1]) for p in parts if int(p[4]) <= index)
    return None


async def player(
    client: httpx.AsyncClient, stream: str, until: float, samples: list | None = None
) -> int:
    """Follow the stream like an LL-HLS player; returns the requests made."""
    playlist = (await client.get(f"/{stream}/media.m3u8")).text
    have: set[str] = {p[2] for p in PART.finditer(playlist)}
    requests = 1
    while trio.current_time() < until:
        msn, index = map(int, HINT.search(playlist).groups())
        playlist = (await client.get(f"/{stream}/media.m3u8?_HLS_msn={msn}&_HLS_part={index}")).text
        arrived = time.time()
        requests += 1
        for part in PART.finditer(playlist):
            if part[2] in have:
                continue
            have.add(part[2])
            data = (await client.get(f"/{stream}/{part[2]}")).content
            requests += 1
            if samples is not None:
                pdt_end = part_pdt_end(playlist, int(part[3]), int(part[4]))
                samples.append((arrived, part_end_ticks(data), pdt_end))
    return requests


async def measure_latency(server: ServerProcess, launched: float, seconds: float) -> None:
    samples: list[tuple[float, int, float | None]] = []
    async with httpx.AsyncClient(base_url=server.web_url, timeout=20) as client:
        await client.get("/demo/media.m3u8")
        await player(client, "demo", trio.current_time() + seconds, samples)
    publisher = [arrived - (launched + ticks / 90000) for arrived, ticks, _ in samples]
    packaging = [arrived - end for arrived, _, end in samples if end is not None]
    print(f"parts observed: {len(samples)}")
    print(
        "latency from the publisher's clock (part available - frame sent): "
        f"median {statistics.median(publisher):.3f} s, p90 {quantile(publisher, 0.9):.3f} s"
    )
    print(
        "packaging delay (part available - its end by PROGRAM-DATE-TIME): "
        f"median {statistics.median(packaging):.3f} s, p90 {quantile(packaging, 0.9):.3f} s"
    )


async def wait_ready(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.web_url, timeout=20) as client:
        await client.get("/demo/media.m3u8")


def quantile(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def measure_hls_js(server: ServerProcess, directory: Path, seconds: float) -> None:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver or not HLS_JS.exists():
        print("hls.js latency: skipped (chromium, chromedriver or hls.js from npm missing)")
        return
    page = directory / "player.html"
    page.write_text(
        f'<!doctype html><video id="v" muted autoplay></video><script src="{HLS_JS.as_uri()}">'
        "</script><script>const h = new Hls({lowLatencyMode: true}); window.hls = h;"
        f'h.loadSource("{server.web_url}/demo/index.m3u8");'
        "h.attachMedia(document.getElementById('v')); document.getElementById('v').play();"
        "</script>"
    )
    with open_chromium(chromium, driver) as browser:
        browser.get(page.as_uri())
        deadline = time.monotonic() + 20
        while browser.execute_script("return document.getElementById('v').currentTime") < 2:
            if time.monotonic() > deadline:
                print("hls.js latency: playback did not start")
                return
            time.sleep(0.1)
        latencies = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            latencies.append(browser.execute_script("return window.hls.latency"))
            time.sleep(0.25)
    print(
        f"hls.js latency (lowLatencyMode, Chromium): median {statistics.median(latencies):.3f} s, "
        f"p90 {quantile(latencies, 0.9):.3f} s"
    )


class Reply:
    def __init__(self, content: bytes) -> None:
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode()


class KeepAliveClient:
    """One player's HTTP/1.1 connection, kept open: a real client at a fraction of
    httpx's CPU, so that one core of players can load the server's core."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._stream: trio.SocketStream | None = None
        self._buffer = b""

    async def get(self, path: str) -> Reply:
        if self._stream is None:
            self._stream = await trio.open_tcp_stream(self.host, self.port)
            self._buffer = b""
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n"
        await self._stream.send_all(request.encode())
        while b"\r\n\r\n" not in self._buffer:
            await self._read()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self._buffer) < length:
            await self._read()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        if not head.startswith(b"HTTP/1.1 200"):
            raise OSError(head.split(b"\r\n", 1)[0].decode())
        return Reply(body)

    async def _read(self) -> None:
        assert self._stream is not None
        data = await self._stream.receive_some(1 << 16)
        if not data:
            raise OSError("server closed the connection")
        self._buffer += data

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None


async def load(url: str, players: int, seconds: float) -> None:
    """Load-generator mode: `players` players for `seconds`; prints the requests made."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    counts: list[int] = []
    errors: list[str] = []
    until = trio.current_time() + seconds

    async def one() -> None:
        client = KeepAliveClient(host, int(port))
        with trio.move_on_at(until + 5):
            while trio.current_time() < until:
                try:
                    counts.append(await player(client, "demo", until))  # type: ignore[arg-type]
                except (OSError, trio.BrokenResourceError) as exc:
                    errors.append(str(exc) or type(exc).__name__)
                    await client.aclose()
        await client.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(players):
            nursery.start_soon(one)
    if errors:
        print(f"players' failed requests: {len(errors)} ({', '.join(sorted(set(errors)))})",
              file=sys.stderr)  # fmt: skip
    print(sum(counts))


def pin(pid: int, cpus: set[int]) -> None:
    """Pin every thread of a process (the server's thread pools included)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except OSError:
            pass


def run_players(server: ServerProcess, players: int, seconds: float) -> int:
    command = [sys.executable, __file__, "--load", server.web_url, "--players", str(players)]
    command += ["--seconds", str(seconds)]
    if (os.cpu_count() or 1) > 1 and shutil.which("taskset"):
        command = ["taskset", "-c", "1", *command]
    return int(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout)


def measure_cpu(server: ServerProcess, players: int, seconds: float) -> None:
    pid = server.process.pid
    if (os.cpu_count() or 1) > 1:
        pin(pid, {0})
        print("server pinned to core 0, players in a process pinned to core 1 (taskset)")
    # The packager alone (one player keeps it running): the baseline.
    before, started = cpu_seconds(pid), time.monotonic()
    run_players(server, 1, seconds / 2)
    idle = (cpu_seconds(pid) - before) / (time.monotonic() - started)
    before, started = cpu_seconds(pid), time.monotonic()
    requests = run_players(server, players, seconds)
    elapsed = time.monotonic() - started
    busy = (cpu_seconds(pid) - before) / elapsed
    per_100 = (busy - idle) * 100 / players
    rate = requests / elapsed
    print(
        f"server CPU: {idle * 100:.1f}% of a core with 1 player, {busy * 100:.1f}% with {players} "
        f"players; {per_100 * 100:.1f}% of a core per 100 players"
    )
    # A player that keeps up makes about 10 requests/s (5 blocking reloads, 5 parts); when the
    # clients' own CPU limits them, the cost per request is the figure that carries over.
    print(
        f"requests: {rate:.0f}/s in all, {rate / players:.1f}/s per player; "
        f"{(busy - idle) / rate * 1000:.2f} ms of server CPU per request"
        if rate
        else "requests: none answered"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--players", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        trio.run(load, args.load, args.players, args.seconds)
        return
    if args.quick:
        args.seconds = 5.0
    print(f"load: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        server = start_server(directory, {"auth": {"enabled": False}})
        launched = time.time()
        publisher = subprocess.Popen(
            [*PUBLISH, server.srt_url("demo:x")],
            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            server.wait_for_log("publishing demo over SRT")
            if not args.quick:
                trio.run(measure_latency, server, launched, args.seconds)
                measure_hls_js(server, directory, args.seconds / 2)
            else:
                trio.run(wait_ready, server)
            measure_cpu(server, args.players, args.seconds)
        finally:
            publisher.kill()
            publisher.wait()
            server.stop()


if __name__ == "__main__":
    main()
