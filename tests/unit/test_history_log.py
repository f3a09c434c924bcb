"""The history is a log: projections made incrementally equal a rebuild, and version 1 migrates."""

from __future__ import annotations

import importlib.util
import random
import sqlite3
import subprocess
import sys
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
from ghostream.history.log import SCHEMA_VERSION, EventLog, open_database
from ghostream.resources import MIGRATIONS

ROOT = Path(__file__).resolve().parents[2]
# The last commit whose writer made version-1 databases (sessions opened, then updated).
V1_COMMIT = "c8c7cf072d9185b00fa12a0384294b01acf45622"


def v1_module(tmp_path: Path):
    """The version-1 writer as it was shipped, read from the repository's history."""
    try:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{V1_COMMIT}:ghostream/broker/eventlog.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"the version-1 writer must be read from git history ({V1_COMMIT}): {exc}")
    # The event types have since moved to the history's own package.
    source = source.replace("ghostream.broker.events", "ghostream.history.events")
    path = tmp_path / "eventlog_v1.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("eventlog_v1", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["eventlog_v1"] = module
    spec.loader.exec_module(module)
    return module


def v1_log(module, path: Path, migrations: Path):
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db = sqlite_utils.Database(conn)
    module.apply_migrations(db, migrations)
    return module.EventLog(db, path)


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
    v1 = v1_module(tmp_path)
    only_v1 = tmp_path / "migrations"
    only_v1.mkdir()
    (only_v1 / "0001_initial.sql").write_text(MIGRATIONS.joinpath("0001_initial.sql").read_text())
    path = tmp_path / "history.sqlite3"
    now = time.time()
    for run, start in enumerate((now - 7200, now - 3600)):
        log = v1_log(v1, path, only_v1)
        for event in a_show(start) + a_show(start + 300, "other", viewers=2):
            log.record(event)
        trio.run(log.flush)
        if run == 0:
            log.close()
        else:
            # Crashed mid-show: version 1 itself closes what it left open at the next start.
            log.record(ViewerJoined("demo", 1, "192.0.2.200:9", "srt", now - 60))
            trio.run(log.flush)
            log._db.conn.close()
    v1_log(v1, path, only_v1).close()

    before = sqlite_utils.Database(sqlite3.connect(path))
    sessions = sorted(
        v1.read_sessions(before, limit=10_000), key=lambda s: tuple(map(str, s.values()))
    )
    stats = {s: v1.project_stats(before, s, 0).as_dict() for s in ("demo", "other")}
    refusals = before.execute("SELECT count(*) FROM events WHERE kind = 'rejected'").fetchone()
    before.conn.close()

    # `ghostream history` reads without writing: it asks for the migration instead.
    with pytest.raises(OSError, match="older version"):
        open_database(path, read_only=True)
    open_database(path).conn.close()
    after = sqlite_utils.Database(sqlite3.connect(path))
    assert after.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    migrated = queries.read_sessions(after, limit=10_000)
    assert sorted(migrated, key=by_values) == sessions
    for stream, old in stats.items():
        new = queries.stream_stats(after, stream).as_dict()
        for key in ("peak_viewers", "total_views", "publish_sessions", "bytes_in", "bytes_out"):
            assert new[key] == old[key], (stream, key)
        assert new["watch_seconds"] == pytest.approx(old["watch_seconds"])
        assert new["last_publish"] == pytest.approx(old["last_publish"])
    assert after.execute("SELECT count(*) FROM events WHERE kind = 'rejected'").fetchone() == (
        refusals
    )
    assert len(queries.shows(after, stream="demo")) == 2
    # The migrated log alone makes the same projections again.
    incremental = projections.dump(after)
    with after.conn:
        projections.rebuild(after)
    assert projections.dump(after) == incremental
