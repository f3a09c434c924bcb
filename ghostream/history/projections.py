"""What the history's log means: sessions, totals, shows and viewers over time, made from events.

The log (`events`) is the only thing written; every table here is a
projection that `Projector.apply` keeps up to date one event at a time, in
the log's order.  The writer applies each event as it appends it; `rebuild`
empties the projections and applies the whole log again, which must give the
same tables (a test compares them).  So a projection may depend only on the
events before it, never on the clock or on anything outside the log.

A stream's variants (`id@480p`) count toward the stream: their viewers are
its viewers, over the protocol and in the show they watched.  A show is one
publish of a stream with the reconnects that came within the grace: it
starts at the first publish and ends when the broker gives up waiting
("stream ended").
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from ghostream.peers import peer_host

# The log's vocabulary: an event's `kind`.
RUN_STARTED = "run started"
RUN_ENDED = "run ended"
RUN_ENDED_UNEXPECTEDLY = "run ended unexpectedly"
PUBLISH_STARTED = "publish started"
PUBLISH_ENDED = "publish ended"
VARIANT_STARTED = "variant started"
VARIANT_STOPPED = "variant stopped"
VIEWER_JOINED = "viewer joined"
VIEWER_LEFT = "viewer left"
STREAM_ENDED = "stream ended"
BYTES = "bytes"
REJECTED = "rejected"
# A per-stream component failed on the stream's data (protocol: the component).
FAULT = "fault"
FORWARD_PREFIX = "forward "
FORWARD_KINDS = {FORWARD_PREFIX + state for state in ("started", "failed", "stopped")}

STARTS = {PUBLISH_STARTED: "publish", VARIANT_STARTED: "publish", VIEWER_JOINED: "view"}
ENDS = {PUBLISH_ENDED, VARIANT_STOPPED, VIEWER_LEFT}
TABLES = (
    "sessions",
    "stream_totals",
    "stream_viewers",
    "viewers_per_minute",
    "shows",
    "show_viewers",
    "forwards",
)
# Leaves seen before their join (they cannot be, with one ordered writer; bounded all the same).
MAX_EARLY_LEAVES = 10_000


def base_stream(stream: str) -> str:
    """The stream a variant (`id@480p`) belongs to."""
    return stream.partition("@")[0]


@dataclass(slots=True)
class OpenSession:
    key: str
    run_id: int | None
    kind: str
    stream: str
    protocol: str
    started: float
    viewer: str
    show_id: int | None
    bytes: int = 0

    @property
    def base(self) -> str:
        return base_stream(self.stream)


class Projector:
    """Applies events to the projection tables; holds what is open (sessions, shows, counts)."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self.sessions: dict[str, OpenSession] = {}
        # Base stream → its open show.
        self.shows: dict[str, int] = {}
        # Open view sessions per base stream, (base, protocol) and show.
        self.levels: Counter[object] = Counter()
        # Stream → its open publish session (one publisher at a time).
        self.publishes: dict[str, OpenSession] = {}
        self.early_leaves: dict[str, Mapping[str, Any]] = {}

    @classmethod
    def load(cls, db: sqlite_utils.Database) -> Projector:
        """A projector that goes on from the tables as they are (what the log made so far)."""
        projector = cls(db)
        rows = db.execute(
            "SELECT id, run_id, kind, stream, protocol, started, coalesce(viewer, ''), show_id, "
            "bytes FROM sessions WHERE ended IS NULL ORDER BY started"
        )
        for row in rows.fetchall():
            projector._opened(OpenSession(*row))
        for show_id, stream in db.execute("SELECT id, stream FROM shows WHERE ended IS NULL"):
            projector.shows[stream] = show_id
        return projector

    def open_publish(self, stream: str) -> OpenSession | None:
        return self.publishes.get(stream)

    def _opened(self, session: OpenSession) -> None:
        self.sessions[session.key] = session
        if session.kind == "publish":
            self.publishes[session.stream] = session
        else:
            for key in _level_keys(session):
                self.levels[key] += 1

    def _closed(self, key: str) -> OpenSession | None:
        session = self.sessions.pop(key, None)
        if session is None:
            return None
        if session.kind == "publish":
            if self.publishes.get(session.stream) is session:
                del self.publishes[session.stream]
        else:
            for level in _level_keys(session):
                self.levels[level] -= 1
        return session

    def apply(self, event: Mapping[str, Any]) -> None:
        kind = event["kind"]
        if kind in STARTS:
            self._start(event, STARTS[kind])
        elif kind in ENDS:
            self._end(event)
        elif kind == BYTES:
            self._checkpoint(event)
        elif kind == STREAM_ENDED:
            show_id = self.shows.pop(event["stream"], None)
            if show_id is not None:
                self._execute("UPDATE shows SET ended = ? WHERE id = ?", event["at"], show_id)
        elif kind.startswith(FORWARD_PREFIX):
            self._execute(
                "INSERT OR REPLACE INTO forwards VALUES (?, ?, ?, ?, ?)",
                event["stream"],
                event["peer"],
                kind.removeprefix(FORWARD_PREFIX),
                event["at"],
                event["reason"],
            )

    # Sessions.

    def _start(self, event: Mapping[str, Any], kind: str) -> None:
        key, at, stream = event["session"], event["at"], event["stream"]
        base = base_stream(stream)
        viewer = event["viewer"] or _viewer_of_peer(event["peer"])
        show_id = self.shows.get(base)
        if event["kind"] == PUBLISH_STARTED and show_id is None:
            show_id = self.shows[base] = event["id"]
            self._execute(
                "INSERT INTO shows (id, stream, started) VALUES (?, ?, ?)", show_id, base, at
            )
        session = OpenSession(
            key, event["run_id"], kind, stream, event["protocol"], at, viewer, show_id
        )
        self._opened(session)
        self._execute(
            "INSERT OR REPLACE INTO sessions (id, run_id, kind, stream, protocol, peer, viewer, "
            "show_id, started) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            key,
            event["run_id"],
            kind,
            stream,
            event["protocol"],
            event["peer"],
            viewer if kind == "view" else None,
            show_id,
            at,
        )
        self._execute("INSERT OR IGNORE INTO stream_totals (stream) VALUES (?)", base)
        if kind == "publish":
            self._execute(
                "UPDATE stream_totals SET publishes = publishes + 1, "
                "last_publish = max(coalesce(last_publish, ?), ?) WHERE stream = ?",
                at,
                at,
                base,
            )
            if event["kind"] == PUBLISH_STARTED:
                self._execute("UPDATE shows SET publishes = publishes + 1 WHERE id = ?", show_id)
        else:
            self._joined(session)
        early = self.early_leaves.pop(key, None)
        if early is not None:
            self._end(early)

    def _joined(self, session: OpenSession) -> None:
        base, at = session.base, session.started
        unique = self._execute(
            "INSERT OR IGNORE INTO stream_viewers VALUES (?, ?)", base, session.viewer
        ).rowcount
        self._execute(
            "UPDATE stream_totals SET views = views + 1, unique_viewers = unique_viewers + ? "
            "WHERE stream = ?",
            unique,
            base,
        )
        level = self.levels[base]
        self._execute(
            "UPDATE stream_totals SET peak_viewers = ?, peak_at = ? "
            "WHERE stream = ? AND peak_viewers < ?",
            level,
            at,
            base,
            level,
        )
        if session.show_id is not None:
            unique = self._execute(
                "INSERT OR IGNORE INTO show_viewers VALUES (?, ?)", session.show_id, session.viewer
            ).rowcount
            self._execute(
                "UPDATE shows SET views = views + 1, unique_viewers = unique_viewers + ? "
                "WHERE id = ?",
                unique,
                session.show_id,
            )
            show_level = self.levels[("show", session.show_id)]
            self._execute(
                "UPDATE shows SET peak_viewers = ?, peak_at = ? WHERE id = ? AND peak_viewers < ?",
                show_level,
                at,
                session.show_id,
                show_level,
            )
        self._count_minute(session, at)

    def _end(self, event: Mapping[str, Any]) -> None:
        key, at = event["session"], event["at"]
        if key is None:
            return
        session = self._closed(key)
        if session is None:
            if len(self.early_leaves) < MAX_EARLY_LEAVES:
                self.early_leaves[key] = event
            return
        at = max(at, session.started)
        # A session's total never goes below what a checkpoint already counted.
        total = max(event["bytes"], session.bytes)
        self._execute(
            "UPDATE sessions SET ended = ?, bytes = ?, end_reason = ? WHERE id = ?",
            at,
            total,
            event["reason"],
            key,
        )
        self._add_bytes(session, total)
        if session.kind == "view":
            watched = at - session.started
            self._execute(
                "UPDATE stream_totals SET watch_seconds = watch_seconds + ? WHERE stream = ?",
                watched,
                session.base,
            )
            if session.show_id is not None:
                self._execute(
                    "UPDATE shows SET watch_seconds = watch_seconds + ? WHERE id = ?",
                    watched,
                    session.show_id,
                )
            self._count_minute(session, at)

    def _checkpoint(self, event: Mapping[str, Any]) -> None:
        session = self.sessions.get(event["session"])
        if session is None or event["bytes"] < session.bytes:
            return
        self._execute("UPDATE sessions SET bytes = ? WHERE id = ?", event["bytes"], session.key)
        self._add_bytes(session, event["bytes"])

    def _add_bytes(self, session: OpenSession, total: int) -> None:
        """Count what a session moved since its last checkpoint."""
        delta, session.bytes = total - session.bytes, total
        column = "bytes_in" if session.kind == "publish" else "bytes_out"
        self._execute(
            f"UPDATE stream_totals SET {column} = {column} + ? WHERE stream = ?",
            delta,
            session.base,
        )
        counts_in_show = session.kind == "view" or session.stream == session.base
        if session.show_id is not None and counts_in_show:
            self._execute(
                f"UPDATE shows SET {column} = {column} + ? WHERE id = ?", delta, session.show_id
            )

    def _count_minute(self, session: OpenSession, at: float) -> None:
        level = self.levels[(session.base, session.protocol)]
        self._execute(
            "INSERT INTO viewers_per_minute VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET peak = max(peak, excluded.peak), last = excluded.last",
            session.base,
            int(at // 60),
            session.protocol,
            level,
            level,
        )

    def _execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        return self.db.execute(sql, args)


def _viewer_of_peer(peer: str) -> str:
    """An id for a viewer logged without one (by version 1): a hash, never the address."""
    return "peer-" + hashlib.sha256(peer_host(peer).encode()).hexdigest()[:16]


def _level_keys(session: OpenSession) -> list[object]:
    keys: list[object] = [session.base, (session.base, session.protocol)]
    if session.show_id is not None:
        keys.append(("show", session.show_id))
    return keys


def rebuild(db: sqlite_utils.Database) -> int:
    """Make every projection again from the log alone (in the caller's transaction)."""
    for table in TABLES:
        db.execute(f"DELETE FROM {table}")
    projector = Projector(db)
    count = 0
    for event in _events(db):
        projector.apply(event)
        count += 1
    db.execute("INSERT OR REPLACE INTO meta VALUES ('projections', 'current')")
    return count


def _events(db: sqlite_utils.Database) -> Iterable[dict[str, Any]]:
    cursor = db.conn.execute("SELECT * FROM events ORDER BY id")
    names = [column[0] for column in cursor.description]
    for row in cursor:
        yield dict(zip(names, row, strict=True))


def dump(db: sqlite_utils.Database) -> dict[str, list[tuple]]:
    """Every projection's rows in a fixed order (to compare two histories)."""
    dumped = {}
    for table in TABLES:
        rows = db.execute(f"SELECT * FROM {table}").fetchall()
        dumped[table] = sorted(rows, key=lambda row: tuple(map(str, row)))
    return dumped
