"""The recordings on disk as a whole: listing, closing the interrupted, and retention.

Recordings live in `DIRECTORY/STREAM/START/`; what each one is comes from
its `recording.json`, so the list is read from the disk alone and survives a
lost history.  Retention deletes whole recordings, oldest first, never one
that is being written.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import av

from ghostream.outputs.recording.files import FACTS, PLAYLIST, THUMBNAIL, Facts, save

log = logging.getLogger(__name__)

DAY = 86400.0
# How far a recording's start may be from its show's: the recorder starts on the publish.
SHOW_MATCH = 15.0


@dataclass(frozen=True)
class Recording:
    directory: Path
    stream: str
    started: float
    ended: float | None
    duration: float
    bytes: int
    complete: bool
    error: str

    @property
    def has_thumbnail(self) -> bool:
        return (self.directory / THUMBNAIL).exists()

    def as_dict(self) -> dict:
        return {
            "started": self.started,
            "ended": self.ended,
            "duration": round(self.duration, 3),
            "bytes": self.bytes,
            "complete": self.complete,
            "recording": self.ended is None,
            "error": self.error,
        }


def _read(directory: Path) -> Recording | None:
    try:
        facts = Facts.read(directory)
    except (OSError, ValueError, TypeError):
        return None
    return Recording(
        directory, facts.stream, facts.started, facts.ended, facts.duration, facts.bytes,
        facts.complete, facts.error,
    )  # fmt: skip


def recordings(root: Path, stream: str | None = None) -> list[Recording]:
    """Every recording (of one stream), oldest first."""
    if not root.is_dir():
        return []
    streams = [root / stream] if stream else [p for p in root.iterdir() if p.is_dir()]
    found = []
    for directory in streams:
        if not directory.is_dir():
            continue
        for candidate in directory.iterdir():
            if (candidate / FACTS).is_file():
                recording = _read(candidate)
                if recording is not None:
                    found.append(recording)
    return sorted(found, key=lambda r: r.started)


def close_interrupted(root: Path) -> int:
    """Close what a killed server left open: it ends with its last complete segment."""
    closed = 0
    for recording in recordings(root):
        if recording.ended is not None:
            continue
        facts = Facts.read(recording.directory)
        facts.ended = facts.started + facts.duration
        facts.interrupted = True
        save(recording.directory, facts)
        for leftover in recording.directory.glob(".*.tmp"):
            leftover.unlink()
        closed += 1
    if closed:
        log.warning("recording: closed %d recording(s) a server left open when it stopped", closed)
    return closed


def apply_retention(
    root: Path, *, max_age_days: int, max_bytes: int, writing: Collection[Path], now: float
) -> list[Recording]:
    """Delete recordings older than the age limit, then the oldest past the size limit."""
    finished = [r for r in recordings(root) if r.directory not in writing]
    doomed = []
    if max_age_days:
        doomed = [r for r in finished if r.started < now - max_age_days * DAY]
    if max_bytes:
        total = sum(r.bytes for r in recordings(root))
        total -= sum(r.bytes for r in doomed)
        for recording in finished:
            if total <= max_bytes:
                break
            if recording not in doomed:
                doomed.append(recording)
                total -= recording.bytes
    for recording in doomed:
        shutil.rmtree(recording.directory, ignore_errors=True)
        log.info(
            "recording: deleted %s (%s, %.0f MB) by the retention limits",
            recording.stream,
            time.strftime("%Y-%m-%d %H:%M", time.localtime(recording.started)),
            recording.bytes / 1e6,
        )
    return doomed


def find_recording(root: Path, stream: str, show_started: float) -> Recording | None:
    """The recording of the show of `stream` that started at `show_started`."""
    near = [r for r in recordings(root, stream) if abs(r.started - show_started) <= SHOW_MATCH]
    return min(near, key=lambda r: abs(r.started - show_started), default=None)


def with_recordings(root: Path, shows: list[dict]) -> list[dict]:
    """Shows (history rows) with what their recording is, or None when they have none."""
    for show in shows:
        recording = find_recording(root, show["stream"], show["started"])
        show["recording"] = recording.as_dict() if recording else None
    return shows


def remux_to_mp4(recording: Recording, target: Path) -> None:
    """The whole show as one MP4 (moov first, starting at 0), remuxed: no re-encoding."""
    temporary = target.with_name(f".{target.name}.tmp")
    with (
        av.open(str(recording.directory / PLAYLIST)) as source,
        av.open(str(temporary), "w", format="mp4", options={"movflags": "+faststart"}) as out,
    ):
        wanted = [s for s in source.streams if s.type in ("video", "audio")]
        streams = {s.index: out.add_stream_from_template(s) for s in wanted}
        starts = [s.start_time * s.time_base for s in wanted if s.start_time is not None]
        origin = min(starts, default=0)
        for packet in source.demux(*wanted):
            if packet.dts is None or packet.pts is None:
                continue
            shift = int(origin / packet.time_base)
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    os.replace(temporary, target)
