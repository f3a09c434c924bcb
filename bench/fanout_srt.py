"""Fan-out of one SRT publish to N SRT viewers: cost, capacity, start-up and latency.

Run: .venv/bin/python bench/fanout_srt.py [--quick] [--bitrates 4,20]
     [--viewers 1,5,10,20,30,40] [--viewers-high 1,5,10] [--seconds 6] [--ghostream-src DIR]

For each bitrate (4 Mbit/s with --viewers, the higher ones with
--viewers-high), prints for the Ghostream server (a subprocess, as shipped):
- server CPU and memory for N viewers, and per viewer (slope over the runs);
- the largest N measured with zero loss at every viewer and under one core;
- time for a new viewer to hold a decodable start (tables and a keyframe);
- the latency the broker adds: the same timestamped stream through
  Ghostream and through a srt-live-transmit relay, measured in the same run;
- what libsrt spends sending the same stream to one receiver: a
  srt-live-transmit sender (stdin to one SRT listener) measured over the
  same windows as the server, so the per-viewer cost has a reference.

Viewers are srt-live-transmit processes (libsrt); their own statistics say
what they lost.  Timestamps ride in the stream's null packets (a CBR
transport stream has plenty), so the stream stays valid for the broker.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness.server_process import ServerProcess, free_port, start_server  # noqa: E402
from process_usage import cpu_seconds, cpu_split, rss_mib  # noqa: E402
from srt_peers import (  # noqa: E402
    counting_viewers,
    piped_viewer,
    start_sender,
    viewer_totals,
    wait_connected,
)

from ghostream.media.ts import TsInspector  # noqa: E402

PACKET = 188
MESSAGE = 7 * PACKET
NULL_PID = 0x1FFF
MAGIC = b"GHOSTBENCH"


def make_source(path: Path, seconds: int, bitrate: int) -> None:
    video = f"{bitrate * 3 // 4 // 1000}k"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", "50",
         "-b:v", video, "-maxrate", video, "-bufsize", "1M",
         "-f", "mpegts", "-muxrate", str(bitrate), str(path)],
        check=True,
    )  # fmt: skip


class TimestampedSender:
    """Plays the source in real time into srt-live-transmit, stamping its null packets."""

    def __init__(self, source: bytes, url: str, bitrate: int) -> None:
        self.source = source
        self.bitrate = bitrate
        self.process = start_sender(url, MESSAGE)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        wait_connected(self.process)
        self._thread.start()

    def _run(self) -> None:
        assert self.process.stdin is not None
        rate = self.bitrate / 8 / MESSAGE
        started = time.monotonic()
        sent = 0
        sequence = 0
        while not self._stop.is_set():
            # A few messages every 2 ms: a sleep per message is too coarse at 20 Mbit/s.
            due = int((time.monotonic() - started) * rate) + 1
            messages = []
            for index in range(sent, due):
                offset = (index * MESSAGE) % (len(self.source) - MESSAGE)
                offset -= offset % PACKET
                message = bytearray(self.source[offset : offset + MESSAGE])
                for start in range(0, MESSAGE, PACKET):
                    pid = ((message[start + 1] & 0x1F) << 8) | message[start + 2]
                    if pid == NULL_PID:
                        now = time.monotonic_ns().to_bytes(8, "big")
                        stamp = MAGIC + sequence.to_bytes(8, "big") + now
                        message[start + 4 : start + 4 + len(stamp)] = stamp
                        sequence += 1
                messages.append(message)
            try:
                self.process.stdin.write(b"".join(messages))
                self.process.stdin.flush()
            except BrokenPipeError:
                return
            sent = max(sent, due)
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.process.kill()
        self.process.wait()


def latencies(url: str, seconds: float, skip: float = 1.0) -> list[float]:
    """One-way delays (ms) of the stamped packets a srt-live-transmit viewer receives."""
    delays: list[float] = []
    buffer = b""
    with piped_viewer(url) as stream:
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            buffer += os.read(stream, 65536)
            usable = len(buffer) - len(buffer) % PACKET
            now = time.monotonic_ns()
            for start in range(0, usable, PACKET):
                payload = buffer[start + 4 : start + 4 + len(MAGIC) + 16]
                if payload.startswith(MAGIC) and time.monotonic() - began > skip:
                    stamp = int.from_bytes(payload[len(MAGIC) + 8 :], "big")
                    delays.append((now - stamp) / 1e6)
            buffer = buffer[usable:]
    return delays


def time_to_first_frame(url: str) -> float:
    """Seconds from starting a viewer to holding the tables and a keyframe: a decodable frame."""
    started = time.monotonic()
    inspector = TsInspector()
    buffer = b""
    with piped_viewer(url) as stream:
        while time.monotonic() - started < 30:
            buffer += os.read(stream, 65536)
            usable = len(buffer) - len(buffer) % PACKET
            info = inspector.inspect(buffer[:usable])
            buffer = buffer[usable:]
            if info.keyframe and inspector.program.video_pid is not None:
                return time.monotonic() - started
    raise RuntimeError(f"no keyframe from {url} within 30 s")


def fanout(
    server: ServerProcess,
    counts: list[int],
    seconds: float,
    work: Path,
    bitrate: int,
    reference: subprocess.Popen,
) -> list[dict]:
    pid = server.process.pid
    results = []
    for count in counts:
        stats_files = [work / f"viewer-{count}-{i}.csv" for i in range(count)]
        with counting_viewers([server.srt_url("bench")] * count, stats_files):
            time.sleep(2)  # let every viewer connect and settle before measuring
            split_before, wall_before = cpu_split(pid), time.monotonic()
            reference_before = cpu_seconds(reference.pid)
            time.sleep(seconds)
            wall = time.monotonic() - wall_before
            user, system = (b - a for a, b in zip(split_before, cpu_split(pid), strict=True))
            cpu = (user + system) / wall
            reference_cpu = (cpu_seconds(reference.pid) - reference_before) / wall
            rss = rss_mib(pid)
        lost, fewest = viewer_totals(stats_files)
        # Every viewer must have had the stream flowing, not merely lost nothing.
        expected = bitrate / 8 / MESSAGE * seconds
        results.append(
            {"viewers": count, "cpu": cpu, "rss": rss, "lost": lost, "ok": fewest >= expected,
             "reference": reference_cpu}
        )  # fmt: skip
        print(
            f"  {count:4d} viewers: server CPU {cpu * 100:6.1f}% of a core "
            f"({system / wall * 100:.1f}% in the kernel), "
            f"RSS {rss:6.1f} MiB, fewest packets at a viewer {fewest}, lost or dropped {lost}; "
            f"srt-live-transmit sending to one: {reference_cpu * 100:.2f}%",
            flush=True,
        )
    return results


def slope(xs: list[float], ys: list[float]) -> float:
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )


def run_bitrate(
    bitrate: int, counts: list[int], seconds: float, work: Path, *, latency: bool, src: str | None
) -> list[dict]:
    source_path = work / f"source-{bitrate}.ts"
    make_source(source_path, 20, bitrate)
    source = source_path.read_bytes()
    server = start_server(
        work,
        {"auth": {"enabled": False}, "history": {"enabled": False},
         "monitoring": {"enabled": False}, "srt": {"maxClients": 1000, "maxClientsPerHost": 1000}},
        env={"PYTHONPATH": src} if src else None,
        cwd=Path(src) if src else None,
    )  # fmt: skip
    relay_in, relay_out = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    relay = subprocess.Popen(
        ["srt-live-transmit", "-q", f"srt://127.0.0.1:{relay_in}?mode=listener",
         f"srt://127.0.0.1:{relay_out}?mode=listener"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    sink_port = free_port(socket.SOCK_DGRAM)
    sink = subprocess.Popen(
        ["srt-live-transmit", "-q", f"srt://127.0.0.1:{sink_port}?mode=listener", "file://con"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    senders = []
    try:
        print(f"one {bitrate / 1e6:.0f} Mbit/s publish, SRT latency 120 ms, loopback")
        senders.append(TimestampedSender(source, server.srt_url("bench:x"), bitrate))
        reference = TimestampedSender(source, f"srt://127.0.0.1:{sink_port}", bitrate)
        senders.append(reference)
        if latency:
            senders.append(TimestampedSender(source, f"srt://127.0.0.1:{relay_in}", bitrate))
        for sender in senders:
            sender.start()
        time.sleep(1)
        idle_cpu = cpu_seconds(server.process.pid)
        time.sleep(2)
        idle = (cpu_seconds(server.process.pid) - idle_cpu) / 2
        idle_rss = rss_mib(server.process.pid)
        print(f"  publish only: server CPU {idle * 100:5.1f}% of a core, RSS {idle_rss:.1f} MiB")
        if latency:
            ours = latencies(server.srt_url("bench"), 6)
            theirs = latencies(f"srt://127.0.0.1:{relay_out}", 6)
            ttff_ours = statistics.median(
                time_to_first_frame(server.srt_url("bench")) for _ in range(3)
            )
        results = fanout(server, counts, seconds, work, bitrate, reference.process)
    finally:
        for sender in senders:
            sender.stop()
        relay.kill()
        sink.kill()
        server.stop()

    xs = [r["viewers"] for r in results]
    per_viewer_cpu = slope(xs, [r["cpu"] for r in results]) if len(xs) > 1 else results[0]["cpu"]
    per_viewer_rss = slope(xs, [r["rss"] for r in results]) if len(xs) > 1 else 0.0
    clean = [r["viewers"] for r in results if r["ok"] and r["lost"] == 0 and r["cpu"] < 1.0]
    reference_cpu = statistics.fmean(r["reference"] for r in results)
    print(f"  server CPU per viewer:       {per_viewer_cpu * 100:.2f}% of a core")
    print(f"  srt-live-transmit, sending it to one receiver: {reference_cpu * 100:.2f}% "
          f"(per viewer / that: {per_viewer_cpu / reference_cpu:.2f})")  # fmt: skip
    print(f"  memory per viewer:           {per_viewer_rss * 1024:.0f} KiB")
    print(f"  largest N, zero loss, <1 core: {max(clean) if clean else 0} (of {counts})")
    if latency:
        print(f"  time to a decodable start:   {ttff_ours * 1000:.0f} ms (median of 3; GOP is 2 s, "
              "so a viewer without a GOP cache waits 1 s on average)")  # fmt: skip
        p50_ours, p50_theirs = statistics.median(ours), statistics.median(theirs)
        print(f"  end-to-end latency (p50):    {p50_ours:.1f} ms via Ghostream, "
              f"{p50_theirs:.1f} ms via srt-live-transmit relay: "
              f"the broker adds {p50_ours - p50_theirs:+.1f} ms")  # fmt: skip
        p95 = statistics.quantiles
        print(f"  end-to-end latency (p95):    {p95(ours, n=20)[-1]:.1f} ms via Ghostream, "
              f"{p95(theirs, n=20)[-1]:.1f} ms via relay")  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bitrates", default="4,20", help="Mbit/s; the first gets --viewers")
    parser.add_argument("--viewers", default="1,5,10,20,30,40")
    parser.add_argument("--viewers-high", default="1,5,10", help="viewer counts above 4 Mbit/s")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--quick", action="store_true", help="fewer viewers, 3 s, no latency")
    parser.add_argument("--ghostream-src", default=None, help="run the server of this checkout")
    args = parser.parse_args()
    if args.quick:
        args.viewers, args.viewers_high, args.seconds = "1,10,20", "1,5", 3.0
    print(f"load: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as temp:
        for i, mbits in enumerate(args.bitrates.split(",")):
            counts = [int(n) for n in (args.viewers if i == 0 else args.viewers_high).split(",")]
            run_bitrate(
                int(float(mbits) * 1e6), counts, args.seconds, Path(temp),
                latency=i == 0 and not args.quick, src=args.ghostream_src,
            )  # fmt: skip
    print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
