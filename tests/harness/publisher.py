"""ffmpeg as OBS would publish (a live test signal over SRT) or as a viewer, for tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from harness.media import signal_source
from harness.server_process import ServerProcess

PUBLISH_SECONDS = 30


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
