"""What recording a show costs: server CPU and disk writes, recording on against off.

Run: .venv/bin/python bench/recording.py [--seconds 20] [--size 1280x720] [--bitrate 4000k]

One encoded stream (H.264 + AAC, made once beforehand as for `bench/rtmp.py`) is published over
SRT at its own pace to two servers in turn, one recording and one not, and
each server's share of a core and the bytes it wrote to disk
(`/proc/PID/io`) are read over the same window of the publish.  The
difference is the recording's cost; the bytes written per second of video
against the stream's own bitrate show that nothing is re-encoded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness.server_process import start_server  # noqa: E402
from process_usage import cpu_seconds  # noqa: E402
from rtmp import encode  # noqa: E402

WARM_UP = 3.0


def written_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def measure(directory: Path, source: Path, seconds: float, recording: bool) -> tuple[float, int]:
    server = start_server(
        directory,
        {"recording": {"enabled": recording}, "webrtc": {"enabled": False},
         "telnet": {"enabled": False}},
    )  # fmt: skip
    pid = server.process.pid
    try:
        publisher = subprocess.Popen(
            ["ffmpeg", "-v", "error", "-re", "-i", str(source), "-c", "copy", "-f", "mpegts",
             server.srt_url("demo:demo")],
        )  # fmt: skip
        time.sleep(WARM_UP)
        cpu, disk = cpu_seconds(pid), written_bytes(pid)
        time.sleep(seconds)
        used = (cpu_seconds(pid) - cpu) / seconds
        wrote = written_bytes(pid) - disk
        publisher.terminate()
        publisher.wait(10)
    finally:
        server.stop()
    return used, wrote


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--bitrate", default="4000k")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        source = root / "source.flv"
        encode(source, args.size, args.bitrate, int(args.seconds + WARM_UP + 10))
        stream_rate = source.stat().st_size / (args.seconds + WARM_UP + 10)
        (root / "off").mkdir()
        (root / "on").mkdir()
        off_cpu, off_disk = measure(root / "off", source, args.seconds, recording=False)
        on_cpu, on_disk = measure(root / "on", source, args.seconds, recording=True)
    print(
        f"stream: {args.size} at {stream_rate * 8 / 1e6:.2f} Mbit/s, {args.seconds:.0f} s measured"
    )
    print(
        f"recording off: {off_cpu:6.1%} of a core, {off_disk / args.seconds / 1e6:.2f} MB/s written"
    )
    print(
        f"recording on:  {on_cpu:6.1%} of a core, {on_disk / args.seconds / 1e6:.2f} MB/s written"
    )
    print(f"recording costs {on_cpu - off_cpu:+.1%} of a core and writes "
          f"{on_disk / args.seconds / stream_rate:.2f}x the stream's own bytes")  # fmt: skip


if __name__ == "__main__":
    main()
