"""The VP8 copy for browsers without H.264: CPU while live, at 720p and 1080p, 30 fps.

Run: .venv/bin/python bench/vp8_copy.py [--seconds 10] [--heights 720,1080]

For each height, a 30 fps source as OBS's default x264 settings make it
(preset veryfast, B-frames, 16:9) is made by ffmpeg and demuxed by the
server's demuxer; then the server's own `Vp8Encoder` (what `Vp8Feed` runs
once per stream: H.264 decode, libvpx realtime encode, RTP payloads) takes
every video packet as fast as it goes.  Printed: the share of one core it
costs while live (CPU seconds, every thread counted, per second of media),
its speed against real time, and the bit rate it makes.  The cost is per
stream, whatever the number of its VP8 viewers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transcode import make_source  # noqa: E402  (bench/transcode.py)

from ghostream.media.demux import TsDemuxer  # noqa: E402
from ghostream.webrtc.vp8_feed import Vp8Encoder  # noqa: E402

RATE = 30


def vp8_copy(height: int, seconds: float) -> None:
    width = height * 16 // 9
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "source.ts"
        make_source(source, f"{width}x{height}", seconds, rate=RATE)
        packets = [p for p in TsDemuxer().feed(source.read_bytes()) if p.track.kind == "video"]
    encoder = Vp8Encoder()
    sent = frames = 0
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for index, packet in enumerate(packets):
        for payloads, _, _ in encoder.encode(packet, index == 0, True, RATE):
            sent += sum(map(len, payloads))
            frames += 1
    cpu = time.process_time() - cpu_start
    wall = time.perf_counter() - wall_start
    media = frames / RATE
    print(
        f"  {height}p30 ({width}x{height}): {cpu / media * 100:5.1f} % of a core while live, "
        f"encodes at {media / wall:.1f}x real time, {sent * 8 / media / 1000:.0f} kbit/s "
        f"({frames} frames)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--heights", default="720,1080")
    args = parser.parse_args()
    print("VP8 copy (H.264 decode + libvpx realtime encode + RTP payloads), once per stream:")
    for height in (int(h) for h in args.heights.split(",")):
        vp8_copy(height, args.seconds)


if __name__ == "__main__":
    main()
