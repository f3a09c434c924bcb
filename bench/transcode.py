"""Quality variants and the WebRTC copy: CPU and encode speed as a multiple of real time.

Run: .venv/bin/python bench/transcode.py [--seconds 10] [--source 1280x720] [--copy 720,1080]
                                         [--latency]

A source like OBS sends (H.264 High, 25 fps, with AAC) is made by ffmpeg,
demuxed by the server's demuxer, decoded once, then fed to the server's own
variant encoder (`VariantEncoder`: libx264 veryfast/zerolatency, AAC, muxed
to MPEG-TS) for each default profile, as fast as it goes.  Prints, per
profile, the share of one core the variant costs while live (CPU seconds per
second of media) and how many times faster than real time it encodes; and
the cost of the shared decode.

Then the WebRTC copy (`WEBRTC_PROFILE`, what browsers get of a stream with
B-frames): for each `--copy` height, a 30 fps source as OBS's default x264
settings make it (preset veryfast, B-frames) is decoded and re-encoded at
its own size and rate, as fast as it goes; printed: the share of one core
it costs while live (decode and encode, every thread counted) and its speed
against real time.  The copy runs once per stream, whatever its viewers.

With `--latency`, the latency the copy adds: bench/webrtc.py's numbered
frames (320x180, 25 fps) are watched glass to glass in Chromium from a
server that passes them through (`webrtc.transcode: auto`) and, in the same
run, from one that re-encodes them (`always`).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from ghostream.config import TranscodingSettings  # noqa: E402
from ghostream.media.demux import TsDemuxer  # noqa: E402
from ghostream.outputs.transcode import WEBRTC_PROFILE, VariantEncoder  # noqa: E402

TIME_BASE = Fraction(1, 90000)


def make_source(path: Path, size: str, seconds: float, rate: int = 25) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-g", str(2 * rate),
         "-b:v", "4M", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
         "-f", "mpegts", str(path)],
        check=True,
    )  # fmt: skip


def decode(path: Path, rate: int = 25) -> tuple[list, float, float]:
    """Every decoded frame with its kind and keyframe flag; decode CPU seconds; media seconds."""
    packets = TsDemuxer().feed(path.read_bytes())
    decoders: dict[str, av.CodecContext] = {}
    frames = []
    started = time.process_time()
    for packet in packets:
        decoder = decoders.get(packet.track.kind)
        if decoder is None:
            decoder = decoders[packet.track.kind] = av.CodecContext.create(packet.track.codec, "r")
            decoder.extradata = packet.track.extradata
        source = av.Packet(packet.data)
        source.pts, source.dts, source.time_base = packet.pts, packet.dts, TIME_BASE
        for frame in decoder.decode(source):
            frame.pts = frame.pts if frame.pts is not None else packet.pts
            frame.time_base = TIME_BASE
            frames.append((packet.track.kind, frame, packet.keyframe, packet.track.sample_rate))
    cpu = time.process_time() - started
    video = [f for kind, f, _, _ in frames if kind == "video"]
    media = (video[-1].pts - video[0].pts) / 90000 + 1 / rate
    return frames, cpu, media


def webrtc_copy(height: int, seconds: float) -> None:
    """Decode a B-frame source and re-encode it as the WebRTC copy, timing both."""
    width = height * 16 // 9
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "source.ts"
        make_source(source, f"{width}x{height}", seconds, rate=30)
        frames, decode_cpu, media = decode(source, rate=30)
    encoder = VariantEncoder(WEBRTC_PROFILE, width, height, 30)
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for kind, frame, _, _ in frames:
        if kind == "video":
            encoder.encode_video(frame, frame.key_frame)
            encoder.sink.take()
    encoder.close()
    cpu = time.process_time() - cpu_start + decode_cpu
    wall = time.perf_counter() - wall_start
    print(
        f"  {height}p30 ({width}x{height}, {encoder.video.bit_rate // 1000} kbit/s): "
        f"{cpu / media * 100:5.1f} % of a core while live "
        f"(decode {decode_cpu / media * 100:.1f} %), "
        f"encodes at {media / wall:.1f}x real time"
    )


def copy_latency(seconds: float) -> None:
    """Glass-to-glass latency over WebRTC, passed through and re-encoded, one after the other."""
    from harness.browser import open_chromium
    from harness.server_process import free_port, start_server
    from webrtc import latency

    print("Glass-to-glass latency over WebRTC, 320x180 at 25 fps (drawn -> shown in Chromium):")
    medians = {}
    for mode in ("auto", "always"):
        port = free_port(socket.SOCK_DGRAM)
        overrides = {"webrtc": {"transcode": mode, "minPortUDP": port, "maxPortUDP": port}}
        with tempfile.TemporaryDirectory() as work:
            server = start_server(Path(work), overrides)
            try:
                with open_chromium(shutil.which("chromium"), shutil.which("chromedriver")) as page:
                    values = sorted(latency(server, page, seconds))
            finally:
                server.stop()
        label = "passed through" if mode == "auto" else "re-encoded"
        if not values:
            print(f"  {label}: no numbered frame was displayed")
            continue
        medians[mode] = statistics.median(values)
        print(
            f"  {label:>14}: {len(values)} frames, p50 {medians[mode]:.0f} ms, "
            f"p95 {values[int(len(values) * 0.95)]:.0f} ms"
        )
    if len(medians) == 2:
        print(f"  the copy adds {medians['always'] - medians['auto']:.0f} ms (p50)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--source", default="1280x720")
    parser.add_argument("--copy", default="720,1080", help="heights of WebRTC copies to time")
    parser.add_argument("--latency", action="store_true", help="also the latency the copy adds")
    args = parser.parse_args()
    width, height = (int(n) for n in args.source.split("x"))
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "source.ts"
        make_source(source, args.source, args.seconds)
        frames, decode_cpu, media = decode(source)
    print(f"Source {args.source} H.264 + AAC, {media:.1f} s of media")
    print(f"  shared decode: {decode_cpu / media * 100:5.1f} % of a core "
          f"({media / decode_cpu:.1f}x real time)")  # fmt: skip
    for profile in TranscodingSettings().parsed_profiles:
        if profile.height >= height:
            continue
        encoder = VariantEncoder(profile, width, height)
        encoder.add_audio(48000)
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        for kind, frame, keyframe, _ in frames:
            if kind == "video":
                encoder.encode_video(frame, keyframe)
            else:
                encoder.encode_audio(frame)
            encoder.sink.take()
        encoder.close()
        cpu = time.process_time() - cpu_start
        wall = time.perf_counter() - wall_start
        print(
            f"  {profile.name:>5} ({encoder.width}x{profile.height}, {profile.video_kbps} kbit/s): "
            f"{cpu / media * 100:5.1f} % of a core while live, "
            f"encodes at {media / wall:.1f}x real time"
        )
    print("WebRTC copy of a B-frame source (H.264 constrained baseline, source size, 30 fps):")
    for height in (int(h) for h in args.copy.split(",") if h):
        webrtc_copy(height, args.seconds)
    if args.latency:
        copy_latency(args.seconds)


if __name__ == "__main__":
    main()
