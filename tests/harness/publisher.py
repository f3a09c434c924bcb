"""ffmpeg as OBS would publish (a live test signal over SRT) or as a viewer, for tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from harness.server_process import ServerProcess

PUBLISH_SECONDS = 30


def signal_source(size: str = "160x90", *video_options: str) -> list[str]:
    """ffmpeg input and codec options for a live H.264 + AAC test signal of a given size."""
    return [
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", *video_options,
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
    ]  # fmt: skip


SOURCE = signal_source()


@contextmanager
def publishing(
    server: ServerProcess,
    key: str,
    *,
    seconds: int = PUBLISH_SECONDS,
    source: list[str] = SOURCE,
    extra: list[str] | None = None,
    url_options: dict[str, str] | None = None,
) -> Iterator:
    """ffmpeg publishing a live test signal with the stream key `key` (and SRT URL options)."""
    stream_id = key.split(":", 1)[0]
    with ffmpeg_admitted(
        server,
        f"publishing {stream_id} over SRT",
        ["-re", *source, *(extra or []), "-t", str(seconds), "-f", "mpegts",
         server.srt_url(key, **(url_options or {}))],
    ) as process:  # fmt: skip
        yield process


@contextmanager
def ffmpeg_admitted(server: ServerProcess, admitted: str, arguments: list[str]) -> Iterator:
    """ffmpeg, once the server logged `admitted` for it; stopped when the block ends."""
    start = server.line_count()
    process = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", *arguments],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        server.wait_for_log(admitted, start=start)
        yield process
    finally:
        process.terminate()
        process.wait(10)
