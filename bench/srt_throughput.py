"""CPU cost of receiving a 6 Mbit/s SRT live stream: Ghostream's listener vs srt-live-transmit.

Run: .venv/bin/python bench/srt_throughput.py [--seconds 10] [--bitrate 6000000]

One constant-bitrate MPEG-TS file is made with ffmpeg, then sent in real time
(`ffmpeg -re -c copy`) to each receiver in turn over loopback.  Each receiver
runs in its own process, and its CPU time (user + system) is read from the
kernel when it exits; Ghostream's receiver subtracts its interpreter start-up
by reporting the CPU it used before the first packet.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_source(path: Path, seconds: float, bitrate: int) -> None:
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
            "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", "50",
            "-b:v", "1M", "-f", "mpegts", "-muxrate", str(bitrate), str(path),
        ],
        check=True,
    )  # fmt: skip


def send(path: Path, port: int, bitrate: int) -> None:
    # Remuxing drops the file's null packets: -muxrate puts the constant bitrate back.
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", str(path),
            "-c", "copy", "-f", "mpegts", "-muxrate", str(bitrate),
            f"srt://127.0.0.1:{port}?pkt_size=1316",
        ],
        check=True,
    )  # fmt: skip


def wait_for_udp_listener(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """A bound UDP port refuses a second bind: poll until the receiver holds it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"receiver exited early with {proc.returncode}")
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return
        finally:
            probe.close()
        time.sleep(0.05)
    raise RuntimeError("receiver did not start listening")


def cpu_of(proc: subprocess.Popen) -> float:
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def measure_ghostream(path: Path, bitrate: int) -> tuple[float, int]:
    port = free_udp_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--receive", str(port)], stdout=subprocess.PIPE, text=True
    )
    wait_for_udp_listener(port, proc)
    send(path, port, bitrate)
    assert proc.stdout is not None
    startup_cpu, received = proc.stdout.read().split()
    return cpu_of(proc) - float(startup_cpu), int(received)


def measure_srt_live_transmit(path: Path, bitrate: int) -> tuple[float, int]:
    port = free_udp_port()
    with tempfile.TemporaryFile() as sink:
        proc = subprocess.Popen(
            ["srt-live-transmit", "-q", f"srt://127.0.0.1:{port}?mode=listener", "file://con"],
            stdout=sink,
        )
        wait_for_udp_listener(port, proc)
        send(path, port, bitrate)
        time.sleep(0.5)
        proc.terminate()
        cpu = cpu_of(proc)
        sink.seek(0, os.SEEK_END)
        return cpu, sink.tell()


def receive(port: int) -> None:
    """Child mode: accept one publisher, count its bytes, report CPU at start and bytes."""
    import trio

    from ghostream.srt.endpoint import SrtClosed, SrtListener

    async def main() -> None:
        done = trio.Event()
        received = 0
        startup = 0.0

        async def handler(sock) -> None:
            nonlocal received
            try:
                while True:
                    received += len(await sock.receive())
            except SrtClosed:
                done.set()

        async def accept(request):
            nonlocal startup
            startup = resource.getrusage(resource.RUSAGE_SELF)
            startup = startup.ru_utime + startup.ru_stime
            return handler

        listener = SrtListener("127.0.0.1", port, accept)
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve)
            await done.wait()
            nursery.cancel_scope.cancel()
        print(startup, received)

    trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--bitrate", type=int, default=6_000_000)
    parser.add_argument("--receive", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        receive(args.receive)
        return
    for program in ("ffmpeg", "srt-live-transmit"):
        if shutil.which(program) is None:
            sys.exit(f"{program} is needed for this benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source.ts"
        make_source(source, args.seconds, args.bitrate)
        size = source.stat().st_size
        ours, ours_bytes = measure_ghostream(source, args.bitrate)
        theirs, theirs_bytes = measure_srt_live_transmit(source, args.bitrate)
    print(f"stream: {args.bitrate / 1e6:.1f} Mbit/s for {args.seconds:.0f} s ({size} bytes)")
    print(
        f"ghostream listener:  {ours / args.seconds:.4f} CPU s per s  (received {ours_bytes} bytes)"
    )
    print(
        f"srt-live-transmit:   {theirs / args.seconds:.4f} CPU s per s"
        f"  (received {theirs_bytes} bytes)"
    )
    print(f"ratio ghostream / srt-live-transmit: {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
