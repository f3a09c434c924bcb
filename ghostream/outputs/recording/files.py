"""One recording on disk: the init segments, the media segments, a VOD playlist and its facts.

Each file is written whole under a temporary name and then renamed, and the
playlist is rewritten after each segment: whatever instant the server is
killed at, the playlist names only complete segments, so the recording plays
up to its last one.  `recording.json` says what the recording is (stream,
start, end, duration, size, whether it ended cleanly); an interrupted one is
closed at the next start (`library.close_interrupted`).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

PLAYLIST = "index.m3u8"
FACTS = "recording.json"
THUMBNAIL = "thumbnail.jpg"


@dataclass
class Entry:
    name: str
    duration: float
    init: str
    discontinuity: bool


@dataclass
class Facts:
    stream: str
    started: float
    ended: float | None = None
    duration: float = 0.0
    bytes: int = 0
    complete: bool = False
    interrupted: bool = False
    error: str = ""
    entries: list[Entry] = field(default_factory=list)

    @classmethod
    def read(cls, directory: Path) -> Facts:
        raw = json.loads((directory / FACTS).read_text())
        entries = [Entry(**e) for e in raw.pop("entries", [])]
        return cls(**raw, entries=entries)


def write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


class RecordingFiles:
    """The writing side: segments appended in order, the playlist and facts kept in step."""

    def __init__(self, root: Path, stream_id: str, started: float) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
        directory = root / stream_id / stamp
        suffix = 1
        while directory.exists():
            suffix += 1
            directory = root / stream_id / f"{stamp}-{suffix}"
        directory.mkdir(parents=True)
        self.directory = directory
        self.facts = Facts(stream_id, started)
        self._inits: set[int] = set()
        self._save()

    def add(self, msn: int, init_number: int, init: bytes, data: bytes, duration: float,
            discontinuity: bool) -> int:  # fmt: skip
        """Write one complete segment (and its init, the first time); returns bytes written."""
        written = 0
        init_name = f"init-{init_number}.mp4"
        if init_number not in self._inits:
            write_atomically(self.directory / init_name, init)
            self._inits.add(init_number)
            written += len(init)
        name = f"segment-{msn}.m4s"
        write_atomically(self.directory / name, data)
        written += len(data)
        entries = self.facts.entries
        changed_init = bool(entries) and entries[-1].init != init_name
        entries.append(Entry(name, duration, init_name, discontinuity or changed_init))
        self.facts.duration += duration
        self.facts.bytes += written
        self._save()
        return written

    def close(self, *, error: str = "") -> None:
        self.facts.ended = time.time()
        self.facts.complete = not error
        self.facts.error = error
        self._save()

    def _save(self) -> None:
        save(self.directory, self.facts)


def save(directory: Path, facts: Facts) -> None:
    """The playlist, then the facts: each names only segments already on disk."""
    write_atomically(directory / PLAYLIST, playlist(facts).encode())
    write_atomically(directory / FACTS, json.dumps(asdict(facts)).encode())


def playlist(facts: Facts) -> str:
    """The VOD playlist (an EVENT playlist while the show is still being recorded)."""
    longest = max((e.duration for e in facts.entries), default=1.0)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{max(1, math.ceil(longest))}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        f"#EXT-X-PLAYLIST-TYPE:{'VOD' if facts.ended is not None else 'EVENT'}",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    current_init = ""
    for entry in facts.entries:
        if entry.discontinuity and current_init:
            lines.append("#EXT-X-DISCONTINUITY")
        if entry.init != current_init:
            lines.append(f'#EXT-X-MAP:URI="{entry.init}"')
            current_init = entry.init
        lines += [f"#EXTINF:{entry.duration:.5f},", entry.name]
    if facts.ended is not None:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
