"""The history writer keeps sessions truthful when a write fails or many tasks write at once."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import sqlite_utils
import trio

from ghostream.history import queries
from ghostream.history.events import ViewerJoined, ViewerLeft
from ghostream.history.log import EventLog, apply_migrations


def open_log(path: Path) -> EventLog:
    """The writer on a connection that fails at once on a lock instead of waiting 5 s."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA busy_timeout = 0")
    db = sqlite_utils.Database(conn)
    apply_migrations(db)
    return EventLog(db, path)


def open_sessions(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT stream, protocol FROM sessions WHERE ended IS NULL").fetchall()


async def test_a_session_closed_in_a_failed_write_is_closed_by_the_retry(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    log = open_log(path)
    log.record(ViewerJoined("demo", 1, "127.0.0.1:5000", "srt", time.time()))
    await log.flush()
    assert open_sessions(path) == [("demo", "srt")]

    # Another process holds the write lock: this batch fails and must be kept.
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    log.record(ViewerLeft("demo", 1, "127.0.0.1:5000", "srt", time.time(), 1234, "viewer left"))
    await log.flush()
    assert open_sessions(path) == [("demo", "srt")]
    blocker.execute("ROLLBACK")
    blocker.close()

    await log.flush()
    assert open_sessions(path) == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT bytes, end_reason FROM sessions").fetchall() == [
            (1234, "viewer left")
        ]
    log.close()


async def test_joins_and_leaves_from_many_tasks_leave_no_session_open(tmp_path: Path) -> None:
    """Readers flush too (to answer with the latest events); batches must still land in order."""
    path = tmp_path / "history.sqlite3"
    log = open_log(path)
    viewers = 200

    async def viewer(number: int) -> None:
        log.record(ViewerJoined("demo", number, "127.0.0.1:5000", "webrtc", time.time()))
        await log.query(queries.stream_stats, "demo")
        log.record(ViewerLeft("demo", number, "127.0.0.1:5000", "webrtc", time.time(), 0, "left"))
        await log.flush()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.run)
        async with trio.open_nursery() as viewers_nursery:
            for number in range(viewers):
                viewers_nursery.start_soon(viewer, number)
        await log.flush()
        nursery.cancel_scope.cancel()

    assert open_sessions(path) == []
    stats = sqlite_utils.Database(sqlite3.connect(path))
    assert stats.execute("SELECT count(*) FROM sessions").fetchone() == (viewers,)
    log.close()
