"""Text art over telnet: CPU of one stream's conversion, and of 50 telnet viewers watching it.

Run: .venv/bin/python bench/telnet.py [--source 1280x720] [--viewers 50] [--seconds 10]

1. One conversion, in this process: a source like OBS sends (H.264, 25 fps)
   is demuxed, then decoded, scaled to text art and drawn as the server does
   (`TextStream._convert`, then `TextFrame.drawing` from one frame to the
   next), as fast as it goes.  Prints the share of one core each step costs
   per second of live media; the H.264 decode alone is the reference.
2. Viewers, on the real server (a subprocess, as shipped): ffmpeg publishes
   the same signal in real time; the server's CPU is read from /proc while
   nobody, one, then N raw telnet clients (reading as fast as they can)
   watch it.  Prints the share of one core and the bytes sent per viewer.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.publisher import publishing, signal_source  # noqa: E402
from harness.server_process import ServerProcess, free_port, start_server  # noqa: E402
from process_usage import cpu_seconds  # noqa: E402

from ghostream.config import TextTranscoderSettings  # noqa: E402
from ghostream.media.demux import TsDemuxer  # noqa: E402
from ghostream.outputs.telnet.frames import TextFrame, TextStream  # noqa: E402


def make_source(path: Path, size: str, seconds: float) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         *signal_source(size, "-tune", "zerolatency", "-b:v", "2M"),
         "-t", str(seconds), "-f", "mpegts", str(path)],
        check=True,
    )  # fmt: skip


def one_conversion(size: str, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "source.ts"
        make_source(path, size, seconds)
        packets = [p for p in TsDemuxer().feed(path.read_bytes()) if p.track.kind == "video"]
    media = (packets[-1].pts - packets[0].pts) / 90000 + 1 / 25

    decode_only = TextStream("bench", TextTranscoderSettings(), hub=None)  # type: ignore[arg-type]
    decode_only._is_due = lambda pts: False  # decode every frame, scale none
    started = time.process_time()
    for packet in packets:
        decode_only._convert(packet, [])
    decode_cpu = time.process_time() - started

    stream = TextStream("bench", TextTranscoderSettings(), hub=None)  # type: ignore[arg-type]
    started = time.process_time()
    made = [made for packet in packets for made in stream._convert(packet, [(80, 24)])]
    convert_cpu = time.process_time() - started

    frames = [TextFrame(number, base, pictures) for number, (base, pictures) in enumerate(made)]
    size_drawn = (frames[0].base.width, frames[0].base.height)
    started = time.process_time()
    drawn = sum(
        len(frame.drawing(size_drawn, before))
        for before, frame in zip([None, *frames], frames, strict=False)
    )
    draw_cpu = time.process_time() - started

    print(f"One conversion: source {size} H.264 25 fps, {media:.1f} s of media")
    print(f"  H.264 decode alone (reference)    {decode_cpu / media:6.1%} of a core")
    print(
        f"  decode + scale to {size_drawn[0]}x{size_drawn[1]} px        "
        f"{convert_cpu / media:6.1%} of a core ({len(made) / media:.0f} frames/s)"
    )
    print(
        f"  ANSI drawing (changed cells only) {draw_cpu / media:6.1%} of a core, "
        f"{drawn / media / 1000:.0f} kB/s to a terminal"
    )
    print(f"  conversion / decode               {(convert_cpu + draw_cpu) / decode_cpu:6.2f}x")


class Viewers:
    """Raw telnet clients: each types the stream name, then reads and discards."""

    def __init__(self, port: int, count: int, stream_id: str) -> None:
        self.selector = selectors.DefaultSelector()
        self.received = 0
        self.sockets = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(stream_id.encode() + b"\r\n")
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.sockets.append(sock)

    def read_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            for key, _ in self.selector.select(remaining):
                try:
                    self.received += len(key.fileobj.recv(262144))
                except BlockingIOError:
                    pass

    def close(self) -> None:
        for sock in self.sockets:
            self.selector.unregister(sock)
            sock.close()


def measure(server: ServerProcess, port: int, count: int, seconds: float) -> tuple[float, float]:
    """Server CPU share of one core, and bytes per second per viewer, with `count` viewers."""
    pid = server.process.pid
    viewers = Viewers(port, count, "demo")
    try:
        viewers.read_for(2.0)  # the conversion starts, every viewer gets its first picture
        before, received = cpu_seconds(pid), viewers.received
        viewers.read_for(seconds)
        cpu = (cpu_seconds(pid) - before) / seconds
        rate = (viewers.received - received) / seconds / max(1, count)
    finally:
        viewers.close()
    return cpu, rate


def many_viewers(size: str, count: int, seconds: float) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        server = start_server(
            Path(work),
            {
                "telnet": {
                    "enabled": True,
                    "listenAddress": f"127.0.0.1:{port}",
                    # Every viewer here is one machine.
                    "maxClientsPerHost": 1000,
                },
                "transcoder": {"text": {"enabled": True}},
                "webrtc": {"enabled": False},
            },
        )
        try:
            source = signal_source(size, "-tune", "zerolatency", "-b:v", "2M")
            with publishing(server, "demo:demo", source=source, seconds=int(seconds * 4 + 30)):
                time.sleep(2)
                print(f"Server with a live {size} publish, {seconds:.0f} s per run:")
                idle, _ = measure(server, port, 0, seconds)
                print(f"  no telnet viewer      {idle:6.1%} of a core")
                for viewers in (1, count):
                    time.sleep(6)  # the previous conversion stops (idle)
                    cpu, rate = measure(server, port, viewers, seconds)
                    print(
                        f"  {viewers:3d} telnet viewers    {cpu:6.1%} of a core "
                        f"(+{cpu - idle:.1%} over none), {rate / 1000:.0f} kB/s each"
                    )
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="1280x720")
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    one_conversion(args.source, args.seconds)
    many_viewers(args.source, args.viewers, args.seconds)


if __name__ == "__main__":
    main()
