"""Recordings on disk: the playlist as segments arrive, closing after a crash, retention."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ghostream.outputs.recording.files import FACTS, PLAYLIST, RecordingFiles
from ghostream.outputs.recording.library import (
    apply_retention,
    close_interrupted,
    find_recording,
    recordings,
)

INIT = b"\x00\x00\x00\x08ftyp"


def recorded(root: Path, stream: str, started: float, sizes: list[int], *, close=True):
    files = RecordingFiles(root, stream, started)
    for msn, size in enumerate(sizes):
        files.add(msn, 0, INIT, b"x" * size, 4.0, False)
    if close:
        files.close()
    return files


def test_playlist_names_only_written_segments_and_ends_when_closed(tmp_path: Path) -> None:
    files = recorded(tmp_path, "demo", 1_700_000_000, [100, 200], close=False)
    playlist = (files.directory / PLAYLIST).read_text()
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in playlist
    assert playlist.count("#EXTINF:4.00000,") == 2
    assert "#EXT-X-ENDLIST" not in playlist
    assert all((files.directory / f"segment-{n}.m4s").stat().st_size for n in (0, 1))
    files.add(2, 1, INIT + b"2", b"y" * 10, 2.5, True)
    files.close()
    playlist = (files.directory / PLAYLIST).read_text()
    assert playlist.endswith("#EXT-X-ENDLIST\n")
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in playlist
    # A new init (a reconnect with new parameters) is a discontinuity with its own map.
    assert '#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI="init-1.mp4"' in playlist
    facts = json.loads((files.directory / FACTS).read_text())
    assert facts["complete"] and facts["duration"] == 10.5


def test_an_interrupted_recording_is_closed_at_its_last_segment(tmp_path: Path) -> None:
    files = recorded(tmp_path, "demo", 1_700_000_000, [100, 100, 100], close=False)
    (files.directory / ".segment-3.m4s.tmp").write_bytes(b"half")
    assert close_interrupted(tmp_path) == 1
    [recording] = recordings(tmp_path)
    assert recording.ended == 1_700_000_000 + 12.0 and not recording.complete
    assert (files.directory / PLAYLIST).read_text().endswith("#EXT-X-ENDLIST\n")
    assert not list(files.directory.glob(".*.tmp"))
    assert close_interrupted(tmp_path) == 0


def test_retention_by_size_deletes_the_oldest_shows_first(tmp_path: Path) -> None:
    now = time.time()
    oldest = recorded(tmp_path, "a", now - 300, [400_000])
    middle = recorded(tmp_path, "b", now - 200, [400_000])
    newest = recorded(tmp_path, "a", now - 100, [400_000])
    writing = recorded(tmp_path, "c", now - 400, [400_000], close=False)
    deleted = apply_retention(
        tmp_path, max_age_days=0, max_bytes=1_000_000, writing={writing.directory}, now=now
    )
    assert [r.directory for r in deleted] == [oldest.directory, middle.directory]
    left = {r.directory for r in recordings(tmp_path)}
    assert left == {newest.directory, writing.directory}


def test_retention_by_age(tmp_path: Path) -> None:
    now = time.time()
    old = recorded(tmp_path, "a", now - 3 * 86400, [10])
    recent = recorded(tmp_path, "a", now - 3600, [10])
    apply_retention(tmp_path, max_age_days=2, max_bytes=0, writing=set(), now=now)
    assert [r.directory for r in recordings(tmp_path)] == [recent.directory]
    assert not old.directory.exists()


def test_a_show_finds_its_recording_by_stream_and_start(tmp_path: Path) -> None:
    first = recorded(tmp_path, "demo", 1_700_000_000, [10])
    recorded(tmp_path, "other", 1_700_000_000, [10])
    second = recorded(tmp_path, "demo", 1_700_003_600, [10])
    assert find_recording(tmp_path, "demo", 1_700_000_000.2).directory == first.directory
    assert find_recording(tmp_path, "demo", 1_700_003_601).directory == second.directory
    assert find_recording(tmp_path, "demo", 1_700_001_000) is None
    # Two publishes in the same second get directories of their own.
    again = recorded(tmp_path, "demo", 1_700_000_000, [10])
    assert again.directory != first.directory
