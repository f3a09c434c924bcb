"""RTMP ingest CPU: Ghostream against nginx-rtmp receiving the same stream in the same run.

Run: .venv/bin/python bench/rtmp.py [--seconds 15] [--size 1280x720] [--bitrate 4000k]

One ffmpeg sends one encoded stream (H.264 + AAC, encoded once beforehand,
read at its own pace with `-re`) to both servers at once through its tee
muxer, so both receive the same bytes at the same moments.  Prints the
share of a core each server process used over the same window, and
Ghostream's idle share over a window of the same length before the
publish (its LL-HLS packager and demux run for a live stream, so the
difference is what an RTMP publish costs, packaging included).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness.rtmp_server import MODULE, RtmpServer  # noqa: E402
from harness.server_process import free_port, start_server  # noqa: E402
from process_usage import cpu_seconds  # noqa: E402

WARM_UP = 3.0


def encode(path: Path, size: str, bitrate: str, seconds: int) -> None:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", bitrate, "-g", "60",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-f", "flv", str(path)],
        check=True,
    )  # fmt: skip


def share(pid: int, seconds: float) -> float:
    """The share of one core `pid` used over the next `seconds`."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--bitrate", default="4000k")
    args = parser.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not MODULE.exists():
        sys.exit("bench/rtmp.py needs nginx with libnginx-mod-rtmp")
    with tempfile.TemporaryDirectory() as work:
        directory = Path(work)
        source = directory / "source.flv"
        length = int(args.seconds + WARM_UP + 5)
        encode(source, args.size, args.bitrate, length)
        server = start_server(
            directory,
            {"auth": {"enabled": False}, "webrtc": {"enabled": False},
             "transcoding": {"enabled": False}},
        )  # fmt: skip
        relay = RtmpServer(nginx, directory / "nginx", free_port())
        relay.start()
        assert relay.process is not None
        publisher = None
        try:
            idle = share(server.process.pid, args.seconds)
            mark = server.line_count()
            tee = (
                f"[f=flv]rtmp://127.0.0.1:{server.rtmp_port}/live/bench:x"
                f"|[f=flv]{relay.url('bench')}"
            )
            publisher = subprocess.Popen(
                ["ffmpeg", "-v", "error", "-re", "-i", str(source), "-map", "0", "-c", "copy",
                 "-f", "tee", tee],
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            server.wait_for_log("publishing bench over RTMP", start=mark)
            time.sleep(WARM_UP)
            ours_before = cpu_seconds(server.process.pid)
            theirs_before = cpu_seconds(relay.process.pid)
            started = time.monotonic()
            time.sleep(args.seconds)
            elapsed = time.monotonic() - started
            ours = (cpu_seconds(server.process.pid) - ours_before) / elapsed
            theirs = (cpu_seconds(relay.process.pid) - theirs_before) / elapsed
            assert publisher.poll() is None, "the publisher stopped before the window ended"
        finally:
            if publisher is not None:
                publisher.terminate()
                publisher.wait(10)
            relay.stop()
            server.stop()
    print(f"stream: {args.size} 30 fps H.264 at {args.bitrate} + AAC 128k, {elapsed:.1f} s window")
    print(f"Ghostream idle:                 {idle * 100:5.1f} % of a core")
    print(f"Ghostream receiving over RTMP:  {ours * 100:5.1f} % of a core")
    print(f"nginx-rtmp receiving the same:  {theirs * 100:5.1f} % of a core")


if __name__ == "__main__":
    main()
