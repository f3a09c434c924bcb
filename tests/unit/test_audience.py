"""The one number a streamer sees: viewers here, minus edges' pulls, plus what edges report."""

from __future__ import annotations

import json

import pytest

from ghostream import audience as audience_module
from ghostream.audience import Audience
from ghostream.broker.registry import Broker
from ghostream.edge.access import is_edge_key, pull_stream_id
from ghostream.http.app import parse_report
from ghostream.streamid import Mode, parse_stream_id


async def test_edges_count_through_their_reports_not_as_viewers() -> None:
    broker = Broker()
    audience = Audience(broker)
    with broker.publish("demo", "ffmpeg", "srt"), broker.publish("demo@480p", "t", "transcode"):
        with broker.attend("demo", "a", "srt"), broker.attend("demo@480p", "b", "webrtc"):
            with broker.attend("demo", "edge-1", "srt"), audience.edge_pull("demo"):
                assert audience.count("demo") == 2
                audience.receive("edge-1", {"demo": 4, "demo@480p": 1, "other": 9})
                assert audience.count("demo") == 6
                assert audience.count("demo@480p") == 2
                # A stream not live here cannot have been pulled from here.
                assert audience.count("other") == 0
                assert audience.edge_viewers() == {"demo": 4, "demo@480p": 1}
                # The next report of the same edge replaces its last one.
                audience.receive("edge-1", {"demo": 1})
                assert audience.count("demo") == 3
                # What this server would report to its own origin, in a chain.
                assert audience.report() == {"demo": 3, "demo@480p": 1}
                # A player page (LL-HLS) counts; a page of a stream not live here is not reported.
                audience.pages.saw("page-1", "demo", "192.0.2.1")
                audience.pages.saw("page-2", "offline", "192.0.2.1")
                assert audience.report() == {"demo": 4, "demo@480p": 1}
            assert audience.edges_pulling("demo") == 0


async def test_a_silent_edge_is_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = Broker()
    audience = Audience(broker)
    now = [1000.0]
    monkeypatch.setattr(audience_module.time, "monotonic", lambda: now[0])
    with broker.publish("demo", "ffmpeg", "srt"):
        audience.receive("edge-1", {"demo": 4})
        now[0] += audience_module.REPORT_TTL - 1
        audience.receive("edge-2", {"demo": 1})
        assert audience.count("demo") == 5
        now[0] += 2
        assert audience.count("demo") == 1


@pytest.mark.parametrize(
    "body",
    [
        None,
        b"not json",
        b"\xff",
        b"[]",
        b'{"viewers": {}}',
        b'{"edge": "", "viewers": {}}',
        b'{"edge": "e", "viewers": []}',
        json.dumps({"edge": "e" * 65, "viewers": {}}).encode(),
    ],
)
def test_malformed_reports_are_refused(body: bytes | None) -> None:
    assert parse_report(body) is None


def test_report_entries_that_are_not_counts_of_stream_ids_are_dropped() -> None:
    body = {"edge": "e", "viewers": {"demo": 3, "Bad id": 1, "x": -1, "y": True, "z": 1.5}}
    assert parse_report(json.dumps(body).encode()) == ("e", {"demo": 3})


def test_an_edge_key_travels_in_the_access_control_stream_id() -> None:
    request = parse_stream_id(pull_stream_id("demo@480p", "k3y-for.edges"))
    assert (request.mode, request.stream_id, request.password) == (
        Mode.WATCH,
        "demo@480p",
        "k3y-for.edges",
    )
    assert pull_stream_id("demo", "") == "demo"
    assert is_edge_key(["other-key", "k3y-for.edges"], "k3y-for.edges")
    assert not is_edge_key(["k3y-for.edges"], "k3y-for.edge")
    assert not is_edge_key([], "")


async def test_an_edge_shows_the_origin_total_while_it_hears_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = Broker()
    audience = Audience(broker)
    now = [1000.0]
    monkeypatch.setattr(audience_module.time, "monotonic", lambda: now[0])
    with broker.publish("demo", "origin", "pull"), broker.attend("demo", "a", "srt"):
        assert audience.total("demo") == 1
        audience.heard_from_origin({"demo": 7})
        assert audience.total("demo") == 7
        assert audience.report() == {"demo": 1}
        now[0] += audience_module.REPORT_TTL + 1
        assert audience.total("demo") == 1


HOST = "192.0.2.1:40000"


def test_a_page_counts_while_it_polls_and_expires_after_the_ttl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A closed tab stops counting PAGE_VIEWER_TTL after its last poll (the original's 40 s)."""
    pages = audience_module.PageViewers()
    now = [1000.0]
    monkeypatch.setattr(audience_module.time, "monotonic", lambda: now[0])
    pages.saw("tab-1", "demo", HOST)
    pages.saw("tab-2", "demo", HOST)
    pages.saw("tab-3", "other", HOST)
    assert pages.count("demo", set()) == 2
    # A page whose WebRTC session is already a viewer is not counted twice.
    assert pages.count("demo", {"tab-1"}) == 1
    now[0] += audience_module.PAGE_VIEWER_TTL - 1
    pages.saw("tab-2", "demo", HOST)
    now[0] += 2
    assert pages.count("demo", set()) == 1
    assert pages.count("other", set()) == 0


def test_the_page_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audience_module, "MAX_PAGE_VIEWERS", 50)
    pages = audience_module.PageViewers()
    for number in range(500):
        pages.saw(f"tab-{number}", "demo", f"10.0.{number // 256}.{number % 256}")
    assert pages.count("demo", set()) == 50


def test_one_address_counts_a_few_pages_however_many_ids_it_makes_up() -> None:
    pages = audience_module.PageViewers()
    for number in range(3000):
        pages.saw(f"made-up-{number}", "demo", f"198.51.100.7:{number}")
    # An IPv6 host is its /64.
    for number in range(3000):
        pages.saw(f"v6-{number}", "demo", f"[2001:db8::{number:x}]:443")
    pages.saw("a-real-page", "demo", "192.0.2.1")
    per_host = audience_module.PAGES_PER_HOST
    assert pages.count("demo", set()) == 2 * per_host + 1
    # The host's latest ids are the ones it keeps.
    assert pages.count("demo", {f"made-up-{2999 - n}" for n in range(per_host)}) == per_host + 1
