"""The media every test makes or reads, each recipe once: ffmpeg's test signal, ffprobe, viewers.

The test signal is ffmpeg's `testsrc2` picture (it moves, so every frame
differs) and a 440 Hz tone, encoded as a streamer's encoder would; tests
change only what they are about (size, rate, codec, GOP, extra options).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from harness.programs import require


def signal_source(
    size: str = "160x90",
    *video_options: str,
    rate: int = 25,
    video: str | None = "libx264",
    preset: str | None = "ultrafast",
    gop: int | None = None,
    pix_fmt: str = "yuv420p",
    audio: str | None = "aac",
    sample_rate: int = 48000,
    channels: int | None = None,
) -> list[str]:
    """ffmpeg inputs and codec options for the test signal (one GOP a second unless `gop`).

    `video=None` makes a radio stream, `audio=None` a silent one; `video_options`
    go after the video codec's own (e.g. "-bf", "2", "-tune", "zerolatency").
    """
    inputs: list[str] = []
    codecs: list[str] = []
    if video:
        inputs += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
        codecs += ["-c:v", video, *(["-preset", preset] if preset else [])]
        if video == "libx265":
            codecs += ["-x265-params", "log-level=error"]
        codecs += ["-g", str(gop or rate), *video_options, "-pix_fmt", pix_fmt]
    if audio:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={sample_rate}"]
        codecs += ["-c:a", audio, *(["-ac", str(channels)] if channels else [])]
    return [*inputs, *codecs]


def write_ts(path: Path, seconds: float, source: list[str]) -> bytes:
    """`seconds` of `source` (see `signal_source`) as an MPEG-TS file at `path`; its bytes."""
    subprocess.run(
        [require("ffmpeg"), "-hide_banner", "-loglevel", "error", "-y", *source,
         "-t", str(seconds), "-f", "mpegts", str(path)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return path.read_bytes()


def probe_frames(url: str, count: int, entries: str = "key_frame", *, seconds: float = 30) -> list:
    """The first `count` video frames ffprobe decodes from a file or URL, with `entries`."""
    result = subprocess.run(
        [require("ffprobe"), "-v", "error", "-select_streams", "v", "-read_intervals",
         f"%+#{count}", "-show_entries", f"frame={entries}", "-of", "json", url],
        capture_output=True, timeout=seconds, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout).get("frames", [])


def srt_viewer(url: str) -> subprocess.Popen:
    """srt-live-transmit watching `url`, its output thrown away: a viewer that only counts."""
    return subprocess.Popen(
        [require("srt-live-transmit"), "-q", url, "file://con"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
