"""CPU cost and loss of receiving an SRT live stream: Ghostream's listener vs srt-live-transmit.

Run: .venv/bin/python bench/srt_throughput.py [--quick] [--seconds 10] [--repeat 1]
     [--bitrates 6,20] [--latencies 120,2000] [--losses 0,5] [--profile 20]

For every point of bitrate x SRT latency x loss, one paced stream of
numbered 1316-byte messages is fed at the same moment to two libsrt senders
(srt-live-transmit): one sends to Ghostream's `SrtListener`, the other to a
srt-live-transmit listener, each through its own seeded lossy relay
(tests/harness/udp_relay.py, loss in both directions) when loss is not zero.
Both receivers run in their own process and write what they deliver to a
file; their CPU time (user + system) is read from the kernel when they exit
(Ghostream's from its first handshake to the end of the stream, without the
interpreter's start-up and teardown).  Because both run at once on
the same loaded machine, their ratio is the figure to read.  Application
loss is what a receiver never delivered between the first and last message
it did deliver: both stop at a shutdown that libsrt may deliver early.

`--profile N` also runs the Ghostream receiver under cProfile (in a separate
pass, since profiling inflates its CPU) and prints its top N functions.
`--ghostream-src DIR` runs the receiver from another checkout, to compare
two versions on the same machine.
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
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness.server_process import free_port  # noqa: E402
from harness.udp_relay import UdpRelay  # noqa: E402
from srt_peers import start_sender, wait_connected  # noqa: E402

MESSAGE = 1316
MAGIC = b"GSTB"
# Writes to the senders' pipes happen this often, a few messages at a time.
PACE = 0.005


def message(index: int) -> bytes:
    head = MAGIC + index.to_bytes(8, "big")
    return head + bytes(MESSAGE - len(head))


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


class Sender:
    """srt-live-transmit reading messages on stdin and sending them as an SRT caller."""

    def __init__(self, port: int, latency_ms: int) -> None:
        self.process = start_sender(f"srt://127.0.0.1:{port}?latency={latency_ms}", MESSAGE)

    def close(self) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def pace(senders: list[Sender], bitrate: int, seconds: float) -> int:
    """Write the same numbered messages to every sender in real time; returns how many."""
    total = int(bitrate / 8 / MESSAGE * seconds)
    rate = bitrate / 8 / MESSAGE
    started = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - started) * rate) + 1)
        if due > sent:
            chunk = b"".join(message(i) for i in range(sent, due))
            for sender in senders:
                assert sender.process.stdin is not None
                sender.process.stdin.write(chunk)
                sender.process.stdin.flush()
            sent = due
        time.sleep(PACE)
    return total


@dataclass
class Delivery:
    messages: int
    missing: int
    duplicates: int
    out_of_order: int


def delivery(path: Path) -> Delivery:
    data = path.read_bytes()
    seen: set[int] = set()
    count = disorder = 0
    last = -1
    for offset in range(0, len(data) - MESSAGE + 1, MESSAGE):
        if data[offset : offset + 4] != MAGIC:
            continue
        index = int.from_bytes(data[offset + 4 : offset + 12], "big")
        count += 1
        disorder += index < last
        last = max(last, index)
        seen.add(index)
    span = (max(seen) - min(seen) + 1) if seen else 0
    return Delivery(count, span - len(seen), count - len(seen), disorder)


@dataclass
class Point:
    bitrate: int
    latency_ms: int
    loss: float


@dataclass
class Outcome:
    ours_cpu: float
    theirs_cpu: float
    ours: Delivery
    theirs: Delivery
    sent: int
    profile: str = ""


def receiver_command(port: int, point: Point, out: Path, src: str | None, profile: int) -> list:
    command = [sys.executable]
    if profile:
        command += ["-m", "cProfile", "-o", f"{out}.prof"]
    command += [__file__, "--receive", str(port), "--receive-latency", str(point.latency_ms)]
    command += ["--receive-out", str(out)]
    if src:
        command += ["--ghostream-src", src]
    return command


def run_point(point: Point, seconds: float, work: Path, src: str | None, profile: int) -> Outcome:
    ours_port, theirs_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    ours_out, theirs_out = work / "ours.bin", work / "theirs.bin"
    command = receiver_command(ours_port, point, ours_out, src, profile)
    ours = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    with theirs_out.open("wb") as sink:
        theirs = subprocess.Popen(
            ["srt-live-transmit", "-q",
             f"srt://127.0.0.1:{theirs_port}?mode=listener&latency={point.latency_ms}",
             "file://con"],
            stdout=sink, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    relays: list[UdpRelay] = []
    try:
        wait_for_udp_listener(ours_port, ours)
        wait_for_udp_listener(theirs_port, theirs)
        targets = []
        for seed, port in enumerate((ours_port, theirs_port)):
            if point.loss:
                relay = UdpRelay(("127.0.0.1", port), loss=point.loss, seed=seed + 1)
                relays.append(relay.__enter__())
                port = relay.address[1]
            targets.append(port)
        senders = [Sender(port, point.latency_ms) for port in targets]
        for sender in senders:
            wait_connected(sender.process)
        sent = pace(senders, point.bitrate, seconds)
        # Let retransmissions and the receivers' latency run out before hanging up.
        time.sleep(point.latency_ms / 1000 + 0.5)
        for sender in senders:
            sender.close()
        assert ours.stdout is not None
        ours_cpu = float(ours.stdout.read().split()[0])
        cpu_of(ours)
        theirs.terminate()
        theirs_cpu = cpu_of(theirs)
    finally:
        for relay in relays:
            relay.__exit__(None, None, None)
        for proc in (ours, theirs):
            if proc.returncode is None:
                proc.kill()
                proc.wait()
    profile_text = top_functions(Path(f"{ours_out}.prof"), profile) if profile else ""
    return Outcome(
        ours_cpu / seconds,
        theirs_cpu / seconds,
        delivery(ours_out),
        delivery(theirs_out),
        sent,
        profile_text,
    )


def top_functions(path: Path, count: int) -> str:
    import io
    import pstats

    text = io.StringIO()
    pstats.Stats(str(path), stream=text).sort_stats("tottime").print_stats(count)
    lines = text.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    return "\n".join(lines[start:])


def receive(port: int, latency_ms: int, out: str, src: str | None) -> None:
    """Child mode: accept one publisher, write what it delivers, report start-up CPU."""
    if src:
        sys.path.insert(0, src)
    import trio

    from ghostream.srt.endpoint import SrtClosed, SrtListener

    async def main() -> None:
        done = trio.Event()
        startup = 0.0

        async def handler(sock) -> None:
            with open(out, "wb") as sink:
                try:
                    while True:
                        sink.write(await sock.receive())
                except SrtClosed:
                    done.set()

        async def accept(request):
            nonlocal startup
            usage = resource.getrusage(resource.RUSAGE_SELF)
            startup = usage.ru_utime + usage.ru_stime
            return handler

        listener = SrtListener("127.0.0.1", port, accept, latency=latency_ms / 1000)
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve)
            await done.wait()
            nursery.cancel_scope.cancel()
        end = resource.getrusage(resource.RUSAGE_SELF)
        print(end.ru_utime + end.ru_stime - startup)

    trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="stream length per point")
    parser.add_argument("--quick", action="store_true", help="4 s per point")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--bitrates", default="6,20", help="Mbit/s")
    parser.add_argument("--latencies", default="120,2000", help="SRT latency, ms")
    parser.add_argument("--losses", default="0,5", help="percent, each direction")
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    parser.add_argument("--ghostream-src", default=None)
    parser.add_argument("--receive", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--receive-latency", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--receive-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        receive(args.receive, args.receive_latency, args.receive_out, args.ghostream_src)
        return
    if shutil.which("srt-live-transmit") is None:
        sys.exit("srt-live-transmit is needed for this benchmark")
    seconds = 4.0 if args.quick else args.seconds
    points = [
        Point(int(float(b) * 1e6), int(lat), float(loss) / 100)
        for b in args.bitrates.split(",")
        for lat in args.latencies.split(",")
        for loss in args.losses.split(",")
    ]
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs, {seconds:.0f} s")
    print(
        f"{'Mbit/s':>6} {'lat ms':>6} {'loss':>5} | {'ours CPU':>8} {'SLT CPU':>8} {'ratio':>5} | "
        f"{'ours missing':>12} {'SLT missing':>11} | {'ours dup':>8} {'sent':>6}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for point in points:
            for _ in range(args.repeat):
                r = run_point(point, seconds, work, args.ghostream_src, 0)
                print(
                    f"{point.bitrate / 1e6:6.0f} {point.latency_ms:6d} {point.loss * 100:4.0f}% | "
                    f"{r.ours_cpu * 100:7.2f}% {r.theirs_cpu * 100:7.2f}% "
                    f"{r.ours_cpu / r.theirs_cpu:5.2f} | "
                    f"{r.ours.missing:12d} {r.theirs.missing:11d} | "
                    f"{r.ours.duplicates:8d} {r.sent:6d}",
                    flush=True,
                )
            if args.profile:
                r = run_point(point, seconds, work, args.ghostream_src, args.profile)
                print(f"profile of the Ghostream receiver (tottime):\n{r.profile}", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
