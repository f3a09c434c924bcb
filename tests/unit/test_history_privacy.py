"""The history forgets: sessions and events past the retention go, peers can be kept as networks."""

from __future__ import annotations

import time
from pathlib import Path

from ghostream.history import queries
from ghostream.history.events import PublishStarted, PublishStopped, Rejected, StreamClosed
from ghostream.history.log import DAY, EventLog
from ghostream.peers import truncated_peer


def test_peers_are_truncated_to_their_network() -> None:
    assert truncated_peer("203.0.113.77:5000") == "203.0.113.0/24"
    assert truncated_peer("[::ffff:203.0.113.77]:5000") == "203.0.113.0/24"
    assert truncated_peer("[2001:db8:1:2::5]:5000") == "2001:db8:1::/48"
    assert truncated_peer("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert truncated_peer("not an address") == "?"


def test_history_stores_truncated_peers(tmp_path: Path) -> None:
    log = EventLog.open(tmp_path / "h.sqlite3", truncate_peers=True)
    now = time.time()
    log._write(
        [
            PublishStarted("demo", "203.0.113.77:5000", "srt", now),
            Rejected("demo", "[2001:db8:1:2::5]:5000", "srt", now, "wrong password"),
        ]
    )
    assert [s["peer"] for s in queries.read_sessions(log._db)] == ["203.0.113.0/24"]
    assert [e["peer"] for e in queries.recent_refusals(log._db)] == ["2001:db8:1::/48"]
    log.close()


def test_sessions_and_events_older_than_the_retention_are_deleted(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    log = EventLog.open(path, retention_days=30)
    now = time.time()
    old, recent = now - 31 * DAY, now - 29 * DAY
    log._write(
        [
            PublishStarted("old", "192.0.2.1:1", "srt", old),
            PublishStopped("old", "192.0.2.1:1", "srt", old + 60, 10, "left"),
            StreamClosed("old", old + 70),
            Rejected("old", "192.0.2.2:1", "srt", old, "wrong password"),
            PublishStarted("recent", "192.0.2.3:1", "srt", recent),
            PublishStopped("recent", "192.0.2.3:1", "srt", recent + 60, 10, "left"),
            StreamClosed("recent", recent + 70),
            Rejected("recent", "192.0.2.4:1", "srt", recent, "wrong password"),
            # Still open: kept however old, it is live.
            PublishStarted("live", "192.0.2.5:1", "srt", old),
        ]
    )
    log.close()
    log = EventLog.open(path, retention_days=30)
    assert sorted(s["stream"] for s in queries.read_sessions(log._db)) == ["live", "recent"]
    assert [e["stream"] for e in queries.recent_refusals(log._db)] == ["recent"]
    assert [s["stream"] for s in queries.shows(log._db)] == ["recent", "live"]
    log.close()
