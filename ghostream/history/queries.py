"""Reading the history's projections: what the CLI, the admin API and the dashboard answer.

Functions take a database (the server's, or one opened read-only by
`ghostream history`) and return plain values ready for JSON.  Open
sessions and shows are counted up to `now`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from ghostream.history.projections import REJECTED, base_stream

MINUTE = 60
# A chart of a long show is drawn from at most this many minutes (the most recent).
MAX_CHART_MINUTES = 24 * 60


@dataclass(frozen=True, slots=True)
class StreamStats:
    stream: str
    current_viewers: int
    peak_viewers: int
    peak_at: float | None
    total_views: int
    unique_viewers: int
    watch_seconds: float
    publish_sessions: int
    bytes_in: int
    bytes_out: int
    last_publish: float | None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


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
    return _rows(
        db,
        "SELECT kind, stream, protocol, peer, started, ended, bytes, end_reason FROM sessions "
        f"{where} ORDER BY started DESC LIMIT ?",
        *args,
        limit,
    )


def stream_stats(db: sqlite_utils.Database, stream: str, now: float | None = None) -> StreamStats:
    """A stream's totals (its variants included), open sessions counted up to now."""
    now = time.time() if now is None else now
    base = base_stream(stream)
    totals = _rows(db, "SELECT * FROM stream_totals WHERE stream = ?", base)
    row = totals[0] if totals else {}
    current, open_watch = db.execute(
        "SELECT count(*), coalesce(sum(? - started), 0) FROM sessions "
        "WHERE kind = 'view' AND ended IS NULL AND (stream = ? OR stream LIKE ? ESCAPE '\\')",
        [now, base, _like_prefix(base) + "@%"],
    ).fetchone()
    return StreamStats(
        stream=stream,
        current_viewers=current,
        peak_viewers=row.get("peak_viewers", 0),
        peak_at=row.get("peak_at"),
        total_views=row.get("views", 0),
        unique_viewers=row.get("unique_viewers", 0),
        watch_seconds=round(row.get("watch_seconds", 0.0) + open_watch, 3),
        publish_sessions=row.get("publishes", 0),
        bytes_in=row.get("bytes_in", 0),
        bytes_out=row.get("bytes_out", 0),
        last_publish=row.get("last_publish"),
    )


def shows(
    db: sqlite_utils.Database,
    *,
    stream: str | None = None,
    since: float | None = None,
    limit: int = 100,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Shows, newest first: start, duration, peak, unique viewers, watch time."""
    now = time.time() if now is None else now
    clauses, args = [], []
    if stream:
        clauses.append("stream = ?")
        args.append(base_stream(stream))
    if since is not None:
        clauses.append("(ended IS NULL OR ended >= ?)")
        args.append(since)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    found = _rows(db, f"SELECT * FROM shows {where} ORDER BY started DESC LIMIT ?", *args, limit)
    return [_summarised(db, row, now) for row in found]


def show(db: sqlite_utils.Database, show_id: int, now: float | None = None) -> dict | None:
    found = _rows(db, "SELECT * FROM shows WHERE id = ?", show_id)
    return _summarised(db, found[0], time.time() if now is None else now) if found else None


def _summarised(db: sqlite_utils.Database, show: dict[str, Any], now: float) -> dict[str, Any]:
    """A show's row with its duration and average watch time, a live one counted up to now."""
    live = show["ended"] is None
    if live:
        (open_watch,) = db.execute(
            "SELECT coalesce(sum(? - started), 0) FROM sessions "
            "WHERE show_id = ? AND kind = 'view' AND ended IS NULL",
            [now, show["id"]],
        ).fetchone()
        show["watch_seconds"] += open_watch
    show["live"] = live
    show["duration"] = round((now if live else show["ended"]) - show["started"], 3)
    show["watch_seconds"] = round(show["watch_seconds"], 3)
    views = show["views"]
    show["average_watch_seconds"] = round(show["watch_seconds"] / views, 3) if views else 0.0
    return show


def viewer_series(
    db: sqlite_utils.Database,
    stream: str,
    started: float,
    ended: float | None,
    now: float | None = None,
) -> dict[str, Any]:
    """Concurrent viewers by protocol: the most in each minute from `started` to `ended` (or now).

    A minute without a change keeps the count the last change left; the
    last point, at the end, is how many were left then (watching now, for a
    live show).
    """
    now = time.time() if now is None else now
    base = base_stream(stream)
    end = ended if ended is not None else now
    first = int(started // MINUTE)
    last = int(end // MINUTE)
    first = max(first, last - MAX_CHART_MINUTES + 1)
    minutes = list(range(first, last + 1))
    series: dict[str, list[int]] = {}
    carried: dict[str, int] = {}
    for protocol, level in db.execute(
        "SELECT protocol, last FROM viewers_per_minute AS v WHERE stream = ? AND minute = "
        "(SELECT max(minute) FROM viewers_per_minute AS w "
        " WHERE w.stream = v.stream AND w.protocol = v.protocol AND w.minute < ?)",
        [base, first],
    ):
        carried[protocol] = level
    rows: dict[str, dict[int, tuple[int, int]]] = {}
    for protocol, minute, peak, level in db.execute(
        "SELECT protocol, minute, peak, last FROM viewers_per_minute "
        "WHERE stream = ? AND minute BETWEEN ? AND ?",
        [base, first, last],
    ):
        rows.setdefault(protocol, {})[minute] = (peak, level)
    for protocol in sorted(set(carried) | set(rows)):
        level = carried.get(protocol, 0)
        values = []
        for minute in minutes:
            change = rows.get(protocol, {}).get(minute)
            if change is None:
                values.append(level)
            else:
                values.append(change[0])
                level = change[1]
        values.append(level)
        if any(values):
            series[protocol] = values
    times = [max(minute * MINUTE, started) for minute in minutes] + [round(end, 3)]
    return {"stream": base, "times": times, "viewers": series}


def recent_refusals(db: sqlite_utils.Database, limit: int = 20) -> list[dict[str, Any]]:
    found = _rows(
        db,
        "SELECT at, stream, protocol, peer, reason, detail FROM events WHERE kind = ? "
        "ORDER BY id DESC LIMIT ?",
        REJECTED,
        limit,
    )
    for refusal in found:
        refusal["detail"] = json.loads(refusal["detail"])
    return found


def forwards(db: sqlite_utils.Database, stream: str | None = None) -> list[dict[str, Any]]:
    where, args = ("WHERE stream = ?", [stream]) if stream else ("", [])
    return _rows(db, f"SELECT * FROM forwards {where} ORDER BY stream, target", *args)


def events(db: sqlite_utils.Database, *, stream: str | None = None, limit: int = 100) -> list[dict]:
    """The log's latest events (those of a stream and its variants), newest first."""
    where, args = "", []
    if stream:
        where = "WHERE stream = ? OR stream LIKE ? ESCAPE '\\'"
        args = [stream, _like_prefix(stream) + "@%"]
    return _rows(
        db,
        f"SELECT at, kind, stream, protocol, peer, reason, bytes, detail FROM events {where} "
        "ORDER BY id DESC LIMIT ?",
        *args,
        limit,
    )


def events_after(
    db: sqlite_utils.Database, after: int, kinds: Collection[str] = (), limit: int = 100
) -> tuple[list[dict], int]:
    """The log's events newer than `after`, oldest first (only `kinds`, when given).

    With them comes the newest id looked at, so that a follower whose kinds
    are rare moves past the events it skipped instead of reading them again.
    """
    newest = db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
    where, args = "id > ? AND id <= ?", [after, newest]
    if kinds:
        where += f" AND kind IN ({', '.join('?' * len(kinds))})"
        args += list(kinds)
    rows = _rows(
        db,
        "SELECT id, at, kind, stream, protocol, peer, session, viewer, bytes, reason, detail "
        f"FROM events WHERE {where} ORDER BY id LIMIT ?",
        *args,
        limit,
    )
    for row in rows:
        row["detail"] = json.loads(row["detail"] or "{}")
    if len(rows) == limit:
        newest = rows[-1]["id"]
    return rows, newest


def webhook_cursor(db: sqlite_utils.Database, name: str) -> dict | None:
    """Where a webhook stands (the last event it is done with, its counts), None if new."""
    rows = _rows(db, "SELECT last_id, delivered, failed FROM webhook_cursors WHERE name = ?", name)
    return rows[0] if rows else None


def webhook_cursors(db: sqlite_utils.Database) -> list[dict]:
    """Every webhook's progress, for the dashboard and `/api/admin/webhooks`."""
    newest = db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
    rows = _rows(db, "SELECT name, last_id, delivered, failed, updated FROM webhook_cursors")
    for row in rows:
        row["behind"] = max(0, newest - row["last_id"])
    return rows


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _rows(db: sqlite_utils.Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    cursor: sqlite3.Cursor = db.execute(sql, list(args))
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
