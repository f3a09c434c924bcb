"""The history's writer: one task appends every broker event to the log, in order.

Broker events arrive on the event loop and must not wait for the disk, so
`record` only queues them; the `run` task writes each batch in a worker
thread, one batch at a time, in one transaction (WAL mode, so readers never
block it).  Each event becomes one row of the append-only `events` table and
is applied at once to the projections (`ghostream.history.projections`), in
the same transaction: a batch that fails leaves the log and the projections
as they were and is written again whole.

Each server run has a row whose `alive` time is refreshed while it runs:
after a crash, the next start appends the end of every session, show and run
the crashed one left open, at its last known moment, so the history stays
truthful about durations.  Viewers are kept as anonymised ids (a keyed hash
of their address, the key kept in this database), enough to count unique
viewers without keeping who they are in the projections.

Peers' addresses are personal data: events and the projections' rows older
than the retention are deleted (at start, then hourly; the log of a session
still open stays), and with `truncate_peers` only the peer's network is
stored in the first place, and viewer ids are keyed by a secret that lives
only as long as the run (unique viewers are then counted within a run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils
import trio

from ghostream import threads
from ghostream.history import projections as p
from ghostream.history.events import (
    BytesCheckpoint,
    Event,
    Forwarding,
    PublishStarted,
    PublishStopped,
    Rejected,
    StreamClosed,
    StreamFault,
    ViewerJoined,
    ViewerLeft,
)
from ghostream.peers import peer_host, truncated_peer
from ghostream.resources import MIGRATIONS

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.25
HEARTBEAT_INTERVAL = 5.0
CRASH_REASON = "server stopped unexpectedly"
STOP_REASON = "server stopped"
PRUNE_INTERVAL = 3600.0
DAY = 86400.0
# The newest migration's number.
SCHEMA_VERSION = 3
T = TypeVar("T")
Row = dict[str, Any]


def apply_migrations(db: sqlite_utils.Database, directory: Traversable = MIGRATIONS) -> int:
    """Apply the numbered SQL files newer than the database; returns its version."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    scripts = sorted(
        (f for f in directory.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name
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


def open_database(path: Path, *, read_only: bool = False) -> sqlite_utils.Database:
    """The history database, migrated (and its projections made if a migration asks)."""
    if read_only:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no history yet (the server creates it at start)")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.execute("PRAGMA busy_timeout = 5000")
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            conn.close()
            raise OSError(
                "made by an older version: start the server once, or run "
                "`ghostream history rebuild`, to migrate it"
            )
        return sqlite_utils.Database(conn)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 5000")
        db = sqlite_utils.Database(conn)
        apply_migrations(db)
        if _meta(db, "projections") == "stale":
            with db.atomic():
                count = p.rebuild(db)
            log.info("history: projections made from %d logged events", count)
        return db
    except sqlite3.Error as exc:
        conn.close()
        raise OSError(f"{path}: {exc}") from exc


def rebuild_projections(path: Path) -> int:
    """`ghostream history rebuild`: every projection made again from the log; events read."""
    db = open_database(path)
    try:
        with db.atomic():
            return p.rebuild(db)
    finally:
        db.conn.close()


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
        self._pruned = 0.0
        self._db = db
        self._lock = threading.Lock()
        self._pending: list[Event] = []
        self._wakeup = trio.Event()
        # One flush at a time: batches reach the disk in the order they were taken.
        self._flushing = trio.Lock()
        self._publishes = 0
        # The newest event's id, and who waits for a newer one (webhooks, live pushes).
        self.last_id = 0
        self._grown = trio.Event()
        self.run_id: int | None = None
        now = time.time()
        with self._lock, db.atomic():
            self._salt = secrets.token_bytes(16) if truncate_peers else _viewer_salt(db)
            self._projector = p.Projector.load(db)
            self.recovered = self._close_crashed_run()
            self.run_id = db["runs"].insert({"started": now, "alive": now}).last_pk
            self._append({"at": now, "kind": p.RUN_STARTED})
            self._prune(now)

    @classmethod
    def open(cls, path: Path, *, retention_days: int = 0, truncate_peers: bool = False) -> EventLog:
        """Open (creating and migrating) the database; OSError if impossible."""
        db = open_database(path)
        try:
            return cls(db, path, retention_days=retention_days, truncate_peers=truncate_peers)
        except sqlite3.Error as exc:
            db.conn.close()
            raise OSError(f"{path}: {exc}") from exc

    def _close_crashed_run(self) -> int:
        """Append the ends a crashed run could not: its sessions, shows, and itself."""
        crashed = self._db.execute(
            "SELECT id, alive FROM runs WHERE stopped IS NULL ORDER BY id"
        ).fetchall()
        if not crashed:
            return 0
        alive = dict(crashed)
        last_alive = max(alive.values())
        closed = 0
        for session in list(self._projector.sessions.values()):
            at = max(session.started, alive.get(session.run_id, last_alive))
            self._append(self._session_end(session, at, CRASH_REASON) | {"run_id": session.run_id})
            closed += 1
        for stream in list(self._projector.shows):
            self._append({"at": last_alive, "kind": p.STREAM_ENDED, "stream": stream})
        for run_id, at in crashed:
            self._append({"at": at, "kind": p.RUN_ENDED_UNEXPECTEDLY, "run_id": run_id})
            self._db["runs"].update(run_id, {"stopped": at})
        if closed:
            log.warning(
                "history: closed %d session(s) left open by a server that did not stop cleanly",
                closed,
            )
        return closed

    def _session_end(self, session: p.OpenSession, at: float, reason: str) -> Row:
        if session.kind == "view":
            kind = p.VIEWER_LEFT
        else:
            kind = p.PUBLISH_ENDED if session.stream == session.base else p.VARIANT_STOPPED
        return {
            "at": at,
            "kind": kind,
            "stream": session.stream,
            "protocol": session.protocol,
            "session": session.key,
            "bytes": session.bytes,
            "reason": reason,
        }

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
        self._grown.set()
        self._grown = trio.Event()

    async def wait_beyond(self, event_id: int) -> None:
        """Return once the log holds an event newer than `event_id`."""
        while self.last_id <= event_id:
            await self._grown.wait()

    async def _write_or_requeue(self, batch: list[Event]) -> None:
        try:
            await trio.to_thread.run_sync(self._write, batch, limiter=threads.HISTORY)
        except sqlite3.Error as exc:
            # Keep the events: the next batch tries again (disk full, locked...).
            self._pending[:0] = batch
            log.error("history: cannot write to %s: %s; will retry", self.path, exc)

    def close(self) -> None:
        """Write what is queued, end what is still open, and mark this run as stopped cleanly."""
        now = time.time()
        with self._lock:
            try:
                self._write_locked(self._pending, now)
                with self._db.atomic():
                    for session in list(self._projector.sessions.values()):
                        self._append(self._session_end(session, now, STOP_REASON))
                    for stream in list(self._projector.shows):
                        self._append({"at": now, "kind": p.STREAM_ENDED, "stream": stream})
                    self._append({"at": now, "kind": p.RUN_ENDED})
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
        """Append a batch in one transaction, or leave the log and projections as they were.

        A batch that fails is written again whole, so the projector's open
        sessions are read back from the rolled-back tables.
        """
        early_leaves = dict(self._projector.early_leaves)
        try:
            with self._db.atomic():
                for event in batch:
                    row = self._row(event)
                    if row is not None:
                        self._append(row)
                self._db["runs"].update(self.run_id, {"alive": now})
                if now - self._pruned >= PRUNE_INTERVAL:
                    self._prune(now)
        except sqlite3.Error:
            self._projector = p.Projector.load(self._db)
            self._projector.early_leaves = early_leaves
            raise

    def _prune(self, now: float) -> None:
        """Delete what ended before the retention period (what is still open stays)."""
        self._pruned = now
        if not self.retention_days:
            return
        cutoff = now - self.retention_days * DAY
        execute = self._db.execute
        events = execute(
            "DELETE FROM events WHERE at < ? AND (session IS NULL OR session NOT IN "
            "(SELECT id FROM sessions WHERE ended IS NULL))",
            [cutoff],
        ).rowcount
        sessions = execute("DELETE FROM sessions WHERE ended < ?", [cutoff]).rowcount
        execute(
            "DELETE FROM show_viewers WHERE show_id IN (SELECT id FROM shows WHERE ended < ?)",
            [cutoff],
        )
        execute("DELETE FROM shows WHERE ended < ?", [cutoff])
        execute("DELETE FROM viewers_per_minute WHERE minute < ?", [int(cutoff // 60)])
        if sessions or events:
            log.info(
                "history: deleted %d session(s) and %d event(s) older than %d days",
                sessions,
                events,
                self.retention_days,
            )

    def _peer(self, peer: str) -> str:
        return truncated_peer(peer) if self.truncate_peers else peer

    def _append(self, row: Row) -> None:
        event = {
            "run_id": self.run_id,
            "stream": "",
            "protocol": "",
            "peer": "",
            "session": None,
            "viewer": None,
            "bytes": 0,
            "reason": "",
            "detail": "{}",
        } | row
        if event["peer"] and event["kind"] not in p.FORWARD_KINDS:
            event["peer"] = self._peer(event["peer"])
        event["id"] = self.last_id = self._db["events"].insert(event).last_pk
        self._projector.apply(event)

    def _row(self, event: Event) -> Row | None:
        """The log's row for a broker event."""
        common = {"at": event.at, "stream": event.stream_id}
        match event:
            case PublishStarted():
                self._publishes += 1
                variant = "@" in event.stream_id
                return common | {
                    "kind": p.VARIANT_STARTED if variant else p.PUBLISH_STARTED,
                    "protocol": event.protocol,
                    "peer": event.peer,
                    "session": f"{self.run_id}.p{self._publishes}",
                }
            case PublishStopped():
                session = self._projector.open_publish(event.stream_id)
                variant = "@" in event.stream_id
                return common | {
                    "kind": p.VARIANT_STOPPED if variant else p.PUBLISH_ENDED,
                    "protocol": event.protocol,
                    "peer": event.peer,
                    "session": session.key if session else None,
                    "bytes": event.bytes,
                    "reason": event.reason,
                }
            case ViewerJoined():
                return common | {
                    "kind": p.VIEWER_JOINED,
                    "protocol": event.protocol,
                    "peer": event.peer,
                    "session": f"{self.run_id}.{event.viewer_id}",
                    "viewer": self._anonymised(event.peer),
                }
            case ViewerLeft():
                return common | {
                    "kind": p.VIEWER_LEFT,
                    "protocol": event.protocol,
                    "peer": event.peer,
                    "session": f"{self.run_id}.{event.viewer_id}",
                    "bytes": event.bytes,
                    "reason": event.reason,
                }
            case BytesCheckpoint():
                if event.viewer_id is None:
                    session = self._projector.open_publish(event.stream_id)
                    if session is None:
                        return None
                    key = session.key
                else:
                    key = f"{self.run_id}.{event.viewer_id}"
                return common | {"kind": p.BYTES, "session": key, "bytes": event.bytes}
            case StreamClosed():
                return common | {"kind": p.STREAM_ENDED}
            case Forwarding():
                return common | {
                    "kind": p.FORWARD_PREFIX + event.kind,
                    "protocol": "forward",
                    "peer": event.target,
                    "reason": event.reason,
                    "bytes": event.bytes,
                    "detail": json.dumps({"bytes": event.bytes}),
                }
            case StreamFault():
                return common | {
                    "kind": p.FAULT,
                    "protocol": event.component,
                    "reason": event.reason,
                    "detail": json.dumps({"action": event.action}),
                }
            case Rejected():
                return common | {
                    "kind": p.REJECTED,
                    "protocol": event.protocol,
                    "peer": event.peer,
                    "reason": event.reason,
                    "detail": json.dumps(event.detail),
                }
        return _other_row(event)

    def _anonymised(self, peer: str) -> str:
        digest = hmac.new(self._salt, peer_host(peer).encode(), hashlib.sha256)
        return digest.hexdigest()[:16]

    # Reading.

    async def query(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a read of the database after writing what is queued, so answers are current.

        `function` gets the database first, like the functions of `ghostream.history.queries`.
        """
        await self.flush()
        return await trio.to_thread.run_sync(
            self._read, function, args, kwargs, limiter=threads.HISTORY
        )

    def _read(self, function: Callable[..., T], args: tuple, kwargs: dict) -> T:
        with self._lock:
            return function(self._db, *args, **kwargs)

    async def save_cursor(self, name: str, last_id: int, *, delivered: int, failed: int) -> None:
        """Remember how far a webhook got, in the same database as the log it follows."""
        row = {
            "name": name,
            "last_id": last_id,
            "delivered": delivered,
            "failed": failed,
            "updated": time.time(),
        }

        def save() -> None:
            with self._lock:
                self._db["webhook_cursors"].upsert(row, pk="name")

        await trio.to_thread.run_sync(save, limiter=threads.HISTORY)


def _other_row(event: Event) -> Row:
    """An event without columns of its own (a viewer skipped...): kind from its class, detail."""
    fields = dataclasses.asdict(event)  # type: ignore[call-overload]
    kind = re.sub(r"(?<!^)(?=[A-Z])", " ", type(event).__name__).lower()
    row = {"at": fields.pop("at"), "kind": kind, "stream": fields.pop("stream_id", "")}
    row["reason"] = str(fields.pop("reason", ""))
    row["detail"] = json.dumps(fields, default=str)
    return row


def _meta(db: sqlite_utils.Database, key: str) -> str | None:
    if "meta" not in db.table_names():
        return None
    found = db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    return found[0] if found else None


def _viewer_salt(db: sqlite_utils.Database) -> bytes:
    salt = _meta(db, "viewer_salt")
    if salt is None:
        salt = secrets.token_hex(16)
        db.execute("INSERT INTO meta VALUES ('viewer_salt', ?)", [salt])
    return bytes.fromhex(salt)


def open_for_reading(path: Path) -> sqlite_utils.Database:
    """The database as `ghostream history` reads it, next to a running server."""
    return open_database(path, read_only=True)
