"""The history of every session, in SQLite: what `ghostream history` and the stats read.

Broker events arrive on the event loop and must not wait for the disk, so
`record` only queues them; the `run` task writes each batch in a worker
thread (one transaction per batch, WAL mode so readers never block the
writer).  Each server run has a row whose `alive` time is refreshed while it
runs: after a crash, the next start closes the sessions the crashed run left
open at that time, so the history stays truthful about durations.

Peers' addresses are personal data: sessions and events older than the
retention are deleted (at start, then hourly), and with `truncate_peers`
only the peer's network is stored in the first place.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils
import trio

from ghostream import threads
from ghostream.broker.events import (
    Event,
    Forwarding,
    PublishStarted,
    PublishStopped,
    Rejected,
    StreamFault,
    ViewerJoined,
    ViewerLeft,
)
from ghostream.peers import truncated_peer
from ghostream.resources import MIGRATIONS

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.25
HEARTBEAT_INTERVAL = 5.0
CRASH_REASON = "server stopped unexpectedly"
PRUNE_INTERVAL = 3600.0
DAY = 86400.0
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StreamStats:
    stream: str
    current_viewers: int
    peak_viewers: int
    total_views: int
    watch_seconds: float
    publish_sessions: int
    bytes_in: int
    bytes_out: int
    last_publish: float | None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def apply_migrations(db: sqlite_utils.Database, directory: Traversable = MIGRATIONS) -> int:
    """Apply the numbered SQL files newer than the database; returns its version."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    scripts = sorted(
        (p for p in directory.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name
    )
    for path in scripts:
        number = int(path.name.split("_", 1)[0])
        if number <= version:
            continue
        # One transaction per file: a failed migration leaves the previous version intact.
        db.conn.executescript(
            f"BEGIN;\n{path.read_text()}\nPRAGMA user_version = {number};\nCOMMIT;"
        )
        log.info("history database migrated to version %d (%s)", number, path.name)
        version = number
    return version


class EventLog:
    def __init__(
        self,
        db: sqlite_utils.Database,
        path: Path,
        *,
        retention_days: int = 0,
        truncate_peers: bool = False,
    ) -> None:
        self.path = path
        self.retention_days = retention_days
        self.truncate_peers = truncate_peers
        self._db = db
        self._pruned = 0.0
        self._lock = threading.Lock()
        self._pending: list[Event] = []
        self._wakeup = trio.Event()
        # One flush at a time: batches reach the disk in the order they were taken.
        self._flushing = trio.Lock()
        self._open_publish: dict[str, str] = {}
        self._open_views: dict[int, str] = {}
        now = time.time()
        with self._lock, db.atomic():
            self.recovered = self._close_crashed_sessions()
            self.run_id = db["runs"].insert({"started": now, "alive": now}).last_pk
            self._prune(now)

    @classmethod
    def open(cls, path: Path, *, retention_days: int = 0, truncate_peers: bool = False) -> EventLog:
        """Open (creating and migrating) the database; OSError/sqlite3.Error if impossible."""
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA busy_timeout = 5000")
            db = sqlite_utils.Database(conn)
            apply_migrations(db)
            return cls(db, path, retention_days=retention_days, truncate_peers=truncate_peers)
        except sqlite3.Error as exc:
            conn.close()
            raise OSError(f"{path}: {exc}") from exc

    def _close_crashed_sessions(self) -> int:
        cursor = self._db.execute(
            """
            UPDATE sessions SET
                ended = max(started, (SELECT alive FROM runs WHERE runs.id = sessions.run_id)),
                end_reason = ?
            WHERE ended IS NULL
            """,
            [CRASH_REASON],
        )
        self._db.execute("UPDATE runs SET stopped = alive WHERE stopped IS NULL")
        if cursor.rowcount:
            log.warning(
                "history: closed %d session(s) left open by a server that did not stop cleanly",
                cursor.rowcount,
            )
        return cursor.rowcount

    # Writing.

    def record(self, event: Event) -> None:
        """Queue an event (a broker listener: never blocks)."""
        self._pending.append(event)
        self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with trio.move_on_after(HEARTBEAT_INTERVAL):
                await self._wakeup.wait()
                # Let a burst (a stream ending with its viewers) gather into one batch.
                await trio.sleep(FLUSH_INTERVAL)
            await self.flush()

    async def flush(self) -> None:
        async with self._flushing:
            batch, self._pending = self._pending, []
            self._wakeup = trio.Event()
            await self._write_or_requeue(batch)

    async def _write_or_requeue(self, batch: list[Event]) -> None:
        try:
            await trio.to_thread.run_sync(self._write, batch, limiter=threads.HISTORY)
        except sqlite3.Error as exc:
            # Keep the events: the next batch tries again (disk full, locked...).
            self._pending[:0] = batch
            log.error("history: cannot write to %s: %s; will retry", self.path, exc)

    def close(self) -> None:
        """Write what is queued and mark this run as stopped cleanly."""
        now = time.time()
        with self._lock:
            try:
                self._write_locked(self._pending, now)
                with self._db.atomic():
                    self._db.execute(
                        "UPDATE sessions SET ended = ?, end_reason = 'server stopped' "
                        "WHERE ended IS NULL AND run_id = ?",
                        [now, self.run_id],
                    )
                    self._db["runs"].update(self.run_id, {"alive": now, "stopped": now})
            except sqlite3.Error as exc:
                log.error("history: cannot write to %s at shutdown: %s", self.path, exc)
            finally:
                self._pending = []
                self._db.conn.close()

    def _write(self, batch: list[Event]) -> None:
        with self._lock:
            self._write_locked(batch, time.time())

    def _write_locked(self, batch: Iterable[Event], now: float) -> None:
        """Write a batch in one transaction; open sessions are remembered only once it commits.

        A batch that fails is written again whole, so the sessions it opened
        and closed must still be found as they were before it.
        """
        open_publish, open_views = dict(self._open_publish), dict(self._open_views)
        with self._db.atomic():
            for event in batch:
                self._apply(event, open_publish, open_views)
            self._db["runs"].update(self.run_id, {"alive": now})
            if now - self._pruned >= PRUNE_INTERVAL:
                self._prune(now)
        self._open_publish, self._open_views = open_publish, open_views

    def _prune(self, now: float) -> None:
        """Delete what ended before the retention period (open sessions stay)."""
        self._pruned = now
        if not self.retention_days:
            return
        cutoff = now - self.retention_days * DAY
        sessions = self._db.execute("DELETE FROM sessions WHERE ended < ?", [cutoff]).rowcount
        events = self._db.execute("DELETE FROM events WHERE at < ?", [cutoff]).rowcount
        if sessions or events:
            log.info(
                "history: deleted %d session(s) and %d event(s) older than %d days",
                sessions,
                events,
                self.retention_days,
            )

    def _peer(self, peer: str) -> str:
        return truncated_peer(peer) if self.truncate_peers else peer

    def _apply(
        self, event: Event, open_publish: dict[str, str], open_views: dict[int, str]
    ) -> None:
        sessions = self._db["sessions"]
        match event:
            case PublishStarted():
                open_publish[event.stream_id] = self._open_session("publish", event)
            case ViewerJoined():
                open_views[event.viewer_id] = self._open_session("view", event)
            case PublishStopped():
                key = open_publish.pop(event.stream_id, None)
                if key is not None:
                    sessions.update(
                        key, {"ended": event.at, "bytes": event.bytes, "end_reason": event.reason}
                    )
            case ViewerLeft():
                key = open_views.pop(event.viewer_id, None)
                if key is not None:
                    sessions.update(
                        key, {"ended": event.at, "bytes": event.bytes, "end_reason": event.reason}
                    )
            case Forwarding():
                self._db["events"].insert(
                    {
                        "at": event.at,
                        "kind": f"forward {event.kind}",
                        "stream": event.stream_id,
                        "protocol": "forward",
                        "peer": event.target,
                        "reason": event.reason,
                        "detail": json.dumps({"bytes": event.bytes}),
                    }
                )
            case StreamFault():
                self._db["events"].insert(
                    {
                        "at": event.at,
                        "kind": "fault",
                        "stream": event.stream_id,
                        "protocol": event.component,
                        "peer": "",
                        "reason": event.reason,
                        "detail": json.dumps({"action": event.action}),
                    }
                )
            case Rejected():
                self._db["events"].insert(
                    {
                        "at": event.at,
                        "kind": "rejected",
                        "stream": event.stream_id,
                        "protocol": event.protocol,
                        "peer": self._peer(event.peer),
                        "reason": event.reason,
                        "detail": json.dumps(event.detail),
                    }
                )

    def _open_session(self, kind: str, event: PublishStarted | ViewerJoined) -> str:
        key = uuid.uuid4().hex
        self._db["sessions"].insert(
            {
                "id": key,
                "run_id": self.run_id,
                "kind": kind,
                "stream": event.stream_id,
                "protocol": event.protocol,
                "peer": self._peer(event.peer),
                "started": event.at,
            }
        )
        return key

    # Reading.

    async def query(self, function: Callable[..., T], *args: Any) -> T:
        """Run a read after writing what is queued, so answers include the latest events."""
        await self.flush()
        return await trio.to_thread.run_sync(self._read, function, *args, limiter=threads.HISTORY)

    def _read(self, function: Callable[..., T], *args: Any) -> T:
        with self._lock:
            return function(*args)

    def sessions(
        self, *, stream: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        return read_sessions(self._db, stream=stream, since=since, limit=limit)

    def events(self, *, stream: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        where, args = ("WHERE stream = ?", [stream]) if stream else ("", [])
        rows = self._db.execute(
            f"SELECT at, kind, stream, protocol, peer, reason, detail FROM events {where} "
            "ORDER BY at DESC LIMIT ?",
            [*args, limit],
        )
        return [_row(rows, row) for row in rows.fetchall()]

    def stream_stats(self, stream: str) -> StreamStats:
        return project_stats(self._db, stream, self.run_id)


def read_sessions(
    db: sqlite_utils.Database,
    *,
    stream: str | None = None,
    since: float | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Sessions, newest first; a stream filter includes its quality variants (`id@…`)."""
    clauses, args = [], []
    if stream:
        clauses.append("(stream = ? OR stream LIKE ? ESCAPE '\\')")
        args += [stream, _like_prefix(stream) + "@%"]
    if since is not None:
        clauses.append("(ended IS NULL OR ended >= ?)")
        args.append(since)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    cursor = db.execute(
        "SELECT kind, stream, protocol, peer, started, ended, bytes, end_reason FROM sessions "
        f"{where} ORDER BY started DESC LIMIT ?",
        [*args, limit],
    )
    return [_row(cursor, row) for row in cursor.fetchall()]


def project_stats(db: sqlite_utils.Database, stream: str, run_id: int) -> StreamStats:
    """Viewer counts and totals of a stream (and its variants), computed from its sessions."""
    pattern = _like_prefix(stream) + "@%"
    cursor = db.execute(
        "SELECT kind, run_id, started, ended, bytes FROM sessions "
        "WHERE stream = ? OR stream LIKE ? ESCAPE '\\'",
        [stream, pattern],
    )
    now = time.time()
    current = total_views = publishes = 0
    watch = 0.0
    bytes_in = bytes_out = 0
    last_publish: float | None = None
    changes: list[tuple[float, int]] = []
    for kind, run, started, ended, size in cursor.fetchall():
        if kind == "publish":
            publishes += 1
            bytes_in += size
            last_publish = max(last_publish or started, started)
            continue
        total_views += 1
        bytes_out += size
        watch += (ended if ended is not None else now) - started
        if ended is None and run == run_id:
            current += 1
        changes.append((started, 1))
        if ended is not None:
            changes.append((ended, -1))
    peak = level = 0
    # Leaves sort before joins at the same instant, so a hand-over is not a peak.
    for _, delta in sorted(changes):
        level += delta
        peak = max(peak, level)
    return StreamStats(
        stream=stream,
        current_viewers=current,
        peak_viewers=peak,
        total_views=total_views,
        watch_seconds=round(watch, 3),
        publish_sessions=publishes,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        last_publish=last_publish,
    )


def open_for_reading(path: Path) -> sqlite_utils.Database:
    """The database as `ghostream history` reads it, next to a running server."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no history yet (the server creates it at start)")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.execute("PRAGMA busy_timeout = 5000")
    return sqlite_utils.Database(conn)


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _row(cursor: sqlite3.Cursor, row: tuple) -> dict[str, Any]:
    return dict(zip((column[0] for column in cursor.description), row, strict=True))
