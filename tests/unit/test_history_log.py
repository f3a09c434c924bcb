"""The history is a log: projections made incrementally equal a rebuild, and version 1 migrates."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

import pytest
import sqlite_utils
import trio

from ghostream.broker.registry import Broker
from ghostream.history import projections, queries
from ghostream.history.events import (
    BytesCheckpoint,
    Forwarding,
    PublishStarted,
    PublishStopped,
    Rejected,
    StreamClosed,
    ViewerJoined,
    ViewerLeft,
)
from ghostream.history.log import SCHEMA_VERSION, EventLog, apply_migrations, open_database
from ghostream.resources import MIGRATIONS

SESSION_COLUMNS = ("id", "run_id", "kind", "stream", "protocol", "peer", "started", "ended",
                   "bytes", "end_reason")  # fmt: skip


def a_version_1_history(path: Path, now: float) -> None:
    """A history as version 1 left it, written with its own schema (0001_initial.sql).

    Version 1 kept a row per session, opened then updated, and refusals and
    forwards apart. Two runs: the first stopped cleanly; the second crashed,
    and the next start closed its open sessions at its last sign of life.
    """
    only_v1 = path.parent / "migrations-v1"
    only_v1.mkdir()
    (only_v1 / "0001_initial.sql").write_text(MIGRATIONS.joinpath("0001_initial.sql").read_text())
    db = sqlite_utils.Database(sqlite3.connect(path, isolation_level=None))
    assert apply_migrations(db, only_v1) == 1
    one, two = now - 7200, now - 3600
    db["runs"].insert_all(
        [
            {"id": 1, "started": one, "alive": one + 200, "stopped": one + 200},
            {"id": 2, "started": two, "alive": two + 100, "stopped": two + 100},
            {"id": 3, "started": now - 10, "alive": now - 5, "stopped": now - 5},
        ]
    )
    left, gone, crashed = "left", "publisher disconnected", "server stopped unexpectedly"
    rows = [
        ("p1", 1, "publish", "demo", "srt", "10.0.0.1:4000", one, one + 50, 60_000, gone),
        ("p2", 1, "publish", "demo", "srt", "10.0.0.1:4001", one + 55, one + 120, 80_000, gone),
        ("t1", 1, "publish", "demo@240p", "transcoder", "transcoder", one + 56, one + 111, 7,
         "idle"),
        ("v1", 1, "view", "demo", "srt", "192.0.2.0:5000", one + 1, one + 100, 1000, left),
        ("v2", 1, "view", "demo", "webrtc", "192.0.2.1:5001", one + 2, one + 101, 5000, left),
        ("v3", 1, "view", "demo@240p", "srt", "192.0.2.7:1", one + 57, one + 110, 99, left),
        ("o1", 1, "publish", "other", "srt", "10.0.0.2:4000", one + 5, one + 60, 900, gone),
        ("v4", 1, "view", "other", "llhls", "192.0.2.0:5002", one + 10, one + 40, 300, left),
        ("p3", 2, "publish", "demo", "srt", "10.0.0.1:4002", two, two + 100, 20_000, crashed),
        ("v5", 2, "view", "demo", "srt", "192.0.2.200:9", two + 60, two + 100, 0, crashed),
    ]  # fmt: skip
    db["sessions"].insert_all(dict(zip(SESSION_COLUMNS, row, strict=True)) for row in rows)
    db["events"].insert_all(
        [
            {
                "at": one + 51,
                "kind": "rejected",
                "stream": "demo",
                "protocol": "srt",
                "peer": "10.0.0.9:1",
                "reason": "unauthorized",
                "detail": '{"user": "demo"}',
            },
            {
                "at": one + 58,
                "kind": "forward started",
                "stream": "demo",
                "protocol": "forward",
                "peer": "rtmp://example.net/live",
                "reason": "",
                "detail": '{"bytes": 0}',
            },
            {
                "at": one + 90,
                "kind": "forward failed",
                "stream": "demo",
                "protocol": "forward",
                "peer": "rtmp://example.net/live",
                "reason": "refused",
                "detail": '{"bytes": 12}',
            },
        ]  # fmt: skip
    )
    db.conn.close()


def by_values(row: dict) -> tuple:
    return tuple(map(str, row.values()))


def a_show(at: float, stream: str = "demo", viewers: int = 3) -> list:
    """Broker events of a show: a publish, a reconnect, viewers over SRT, WebRTC and LL-HLS."""
    events: list = [PublishStarted(stream, "10.0.0.1:4000", "srt", at)]
    for number in range(viewers):
        protocol = ("srt", "webrtc", "llhls")[number % 3]
        viewer = int(at) * 100 + number
        peer = f"192.0.2.{number % 2}:{5000 + number}"
        events.append(ViewerJoined(stream, viewer, peer, protocol, at + 1 + number))
        events.append(BytesCheckpoint(stream, viewer, at + 40, 1000 * number))
    events += [
        BytesCheckpoint(stream, None, at + 40, 50_000),
        PublishStopped(stream, "10.0.0.1:4000", "srt", at + 50, 60_000, "publisher disconnected"),
        Rejected(stream, "10.0.0.9:1", "srt", at + 51, "unauthorized", {"user": stream}),
        PublishStarted(stream, "10.0.0.1:4001", "srt", at + 55),
        PublishStarted(f"{stream}@240p", "transcoder", "transcoder", at + 56),
        ViewerJoined(f"{stream}@240p", int(at) * 100 + 99, "192.0.2.7:1", "srt", at + 57),
        Forwarding(stream, "rtmp://example.net/live", at + 58, "started"),
        Forwarding(stream, "rtmp://example.net/live", at + 90, "failed", "refused", 12),
    ]
    for number in range(viewers):
        protocol = ("srt", "webrtc", "llhls")[number % 3]
        viewer = int(at) * 100 + number
        events.append(
            ViewerLeft(stream, viewer, "", protocol, at + 100 + number, 5000 * number, "left")
        )
    events += [
        ViewerLeft(f"{stream}@240p", int(at) * 100 + 99, "", "srt", at + 110, 99, "left"),
        PublishStopped(f"{stream}@240p", "transcoder", "transcoder", at + 111, 7, "idle"),
        PublishStopped(stream, "10.0.0.1:4001", "srt", at + 120, 80_000, "publisher disconnected"),
        StreamClosed(stream, at + 130),
    ]
    return events


def write(path: Path, events: list) -> EventLog:
    log = EventLog.open(path)
    for event in events:
        log.record(event)
    trio.run(log.flush)
    return log


def test_projections_made_as_events_come_equal_a_rebuild_from_the_log(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    start = 1_700_000_000.0
    log = write(path, a_show(start) + a_show(start + 1000, viewers=5))
    log.close()
    # A second run that crashes with a show, a publish and viewers open.
    crashed = write(path, a_show(start + 5000, "other")[:6])
    crashed._db.conn.close()
    restarted = EventLog.open(path)
    assert restarted.recovered == 4
    restarted.close()

    db = sqlite_utils.Database(sqlite3.connect(path))
    incremental = projections.dump(db)
    assert db.execute("SELECT count(*) FROM sessions WHERE ended IS NULL").fetchone() == (0,)
    with db.conn:
        projections.rebuild(db)
    assert projections.dump(db) == incremental

    found = queries.shows(db, stream="demo")
    assert [(s["publishes"], s["views"], s["unique_viewers"]) for s in found] == [
        (2, 6, 3),
        (2, 4, 3),
    ]
    assert found[1]["peak_viewers"] == 4 and found[1]["peak_at"] == start + 57
    stats = queries.stream_stats(db, "demo")
    assert (stats.total_views, stats.unique_viewers, stats.peak_viewers) == (10, 3, 6)
    assert stats.bytes_in == 2 * (60_000 + 80_000 + 7)
    [forward] = queries.forwards(db, "demo")
    assert (forward["target"], forward["state"], forward["reason"]) == (
        "rtmp://example.net/live",
        "failed",
        "refused",
    )
    series = queries.viewer_series(db, "demo", found[1]["started"], found[1]["ended"])
    assert set(series["viewers"]) == {"srt", "webrtc", "llhls"}
    assert max(series["viewers"]["srt"]) == 2


async def test_joins_and_leaves_under_load_leave_no_session_open(tmp_path: Path) -> None:
    """Viewers from many tasks, readers flushing, a failed batch, a leave logged before its join."""
    path = tmp_path / "history.sqlite3"
    log = EventLog.open(path)
    broker = Broker(reconnect_grace=0.1)
    broker.on_event.append(log.record)
    rng = random.Random(7)
    viewers = 300

    async def viewer(number: int) -> None:
        protocol = ("srt", "webrtc", "llhls")[number % 3]
        with broker.attend("load", f"198.51.100.{number % 50}:1", protocol):
            await trio.sleep(rng.random() / 10)
            if number % 10 == 0:
                await log.query(queries.stream_stats, "load")

    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        await nursery.start(broker.run)
        with broker.publish("load", "10.0.0.1:1", "srt"):
            async with trio.open_nursery() as viewers_nursery:
                for number in range(viewers):
                    viewers_nursery.start_soon(viewer, number)
                    if number == viewers // 2:
                        # Another process holds the write lock for a moment: batches fail, retry.
                        blocker = sqlite3.connect(path, isolation_level=None, timeout=0)
                        blocker.execute("BEGIN IMMEDIATE")
                        log._db.execute("PRAGMA busy_timeout = 0")
                        await trio.sleep(0.6)
                        blocker.execute("ROLLBACK")
                        blocker.close()
                        log._db.execute("PRAGMA busy_timeout = 5000")
        log.record(ViewerLeft("load", 10**9, "", "srt", time.time(), 0, "left"))
        log.record(ViewerJoined("load", 10**9, "198.51.100.1:1", "srt", time.time()))
        await log.flush()
        nursery.cancel_scope.cancel()
    log.close()

    db = sqlite_utils.Database(sqlite3.connect(path))
    assert db.execute("SELECT count(*) FROM sessions WHERE ended IS NULL").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM sessions WHERE kind = 'view'").fetchone() == (
        viewers + 1,
    )
    stats = queries.stream_stats(db, "load")
    assert (stats.total_views, stats.unique_viewers, stats.current_viewers) == (viewers + 1, 50, 0)
    kinds = [
        k for (k,) in db.execute("SELECT kind FROM events WHERE kind LIKE 'run %' ORDER BY id")
    ]
    assert kinds == ["run started", "run ended"]


def test_a_version_1_history_keeps_every_session_and_stat(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    now = time.time()
    a_version_1_history(path, now)
    before = sqlite_utils.Database(sqlite3.connect(path))
    sessions = sorted(
        before.query(f"SELECT {', '.join(SESSION_COLUMNS[2:])} FROM sessions"), key=by_values
    )
    before.conn.close()
    # Counted by hand from the rows: `demo` includes its 240p variant.
    stats = {
        "demo": {"peak_viewers": 3, "total_views": 4, "publish_sessions": 4,
                 "bytes_in": 160_007, "bytes_out": 6099, "watch_seconds": 99 + 99 + 53 + 40,
                 "last_publish": now - 3600},
        "other": {"peak_viewers": 1, "total_views": 1, "publish_sessions": 1, "bytes_in": 900,
                  "bytes_out": 300, "watch_seconds": 30, "last_publish": now - 7200 + 5},
    }  # fmt: skip

    # `ghostream history` reads without writing: it asks for the migration instead.
    with pytest.raises(OSError, match="older version"):
        open_database(path, read_only=True)
    open_database(path).conn.close()
    after = sqlite_utils.Database(sqlite3.connect(path))
    assert after.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    migrated = queries.read_sessions(after, limit=10_000)
    assert sorted(migrated, key=by_values) == sessions
    for stream, expected in stats.items():
        new = queries.stream_stats(after, stream).as_dict()
        assert {key: new[key] for key in expected} == pytest.approx(expected, abs=1e-3), stream
    assert after.execute("SELECT count(*) FROM events WHERE kind = 'rejected'").fetchone() == (1,)
    assert len(queries.shows(after, stream="demo")) == 2
    # The migrated log alone makes the same projections again.
    incremental = projections.dump(after)
    with after.conn:
        projections.rebuild(after)
    assert projections.dump(after) == incremental
