"""Forward target names: placeholders, formats, and recordings that never overwrite."""

from __future__ import annotations

import time
from pathlib import Path

from ghostream.outputs.forward import expand, output_format, unused_path


def test_placeholders_use_the_stream_and_the_publish_start() -> None:
    started = time.mktime((2026, 11, 25, 8, 30, 5, 0, 0, -1))
    assert expand("/rec/%name-%Y%m%d-%H%M%S.ts", "club", started) == "/rec/club-20261125-083005.ts"
    assert expand("rtmp://live.example/app/key", "club", started) == "rtmp://live.example/app/key"


def test_a_recording_never_overwrites_an_earlier_one(tmp_path: Path) -> None:
    first = tmp_path / "club.ts"
    assert unused_path(str(first)) == str(first)
    first.write_bytes(b"earlier")
    (tmp_path / "club-2.ts").write_bytes(b"earlier too")
    assert unused_path(str(first)) == str(tmp_path / "club-3.ts")


def test_container_formats_follow_the_scheme() -> None:
    assert output_format("rtmp://a/b") == output_format("rtmps://a/b") == "flv"
    assert output_format("srt://a:1?streamid=x") == "mpegts"
    assert output_format("/var/rec/a.mkv") is None
