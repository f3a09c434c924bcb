"""LL-HLS players are viewers while they fetch media, and leave 10 s after their last fetch."""

from __future__ import annotations

import trio

from ghostream.audience import PAGES_PER_HOST
from ghostream.broker.registry import Broker
from ghostream.history.events import ViewerJoined, ViewerLeft
from ghostream.outputs.llhls.players import ACTIVE_WINDOW, HlsAudience, client_key


async def test_distinct_clients_count_until_they_stop_fetching(autojump_clock) -> None:
    broker = Broker()
    events: list = []
    broker.on_event.append(events.append)
    audience = HlsAudience(broker)
    vlc = client_key("192.0.2.1", "VLC/3.0")
    safari = client_key("192.0.2.1", "Safari/17")
    page = client_key("192.0.2.2", "Chrome", "page-uid")
    with broker.publish("demo", "10.0.0.1:1", "srt"):
        for client in (vlc, safari, page, vlc):
            audience.saw("demo", client, "192.0.2.1:5000", 1000)
        # A cache in front fetches for all its players: one client, one viewer.
        assert broker.audience() == {"demo": {"llhls": 3}}
        assert broker.get("demo").viewers == 3
        assert audience.page_ids() == {"page-uid"}
        # A stream that is not live has no viewers.
        audience.saw("nothing", vlc, "192.0.2.1:5000", 10)
        assert broker.audience() == {"demo": {"llhls": 3}}

        await trio.sleep(ACTIVE_WINDOW / 2)
        audience.saw("demo", vlc, "192.0.2.1:5000", 500)
        await trio.sleep(ACTIVE_WINDOW / 2 + 0.1)
        audience.expire(trio.current_time())
        # Only the one that fetched again within the window is still watching.
        assert broker.audience() == {"demo": {"llhls": 1}}
        assert broker.get("demo").viewers == 1
        assert audience.page_ids() == set()

    joined = [e for e in events if isinstance(e, ViewerJoined)]
    left = [e for e in events if isinstance(e, ViewerLeft)]
    assert len(joined) == 3 and {e.protocol for e in joined} == {"llhls"}
    assert [e.reason for e in left] == ["stopped fetching"] * 2


async def test_one_address_counts_a_few_page_ids_and_its_other_pages_as_one(autojump_clock) -> None:
    broker = Broker()
    events: list = []
    broker.on_event.append(events.append)
    audience = HlsAudience(broker)
    with broker.publish("demo", "10.0.0.1:1", "srt"):
        for number in range(1000):
            client = client_key("198.51.100.7", "Chrome", f"made-up-{number}")
            audience.saw("demo", client, f"198.51.100.7:{number}", 100)
        assert broker.get("demo").viewers == PAGES_PER_HOST + 1
        audience.saw("demo", client_key("192.0.2.1", "Firefox", "real"), "192.0.2.1:5000", 100)
        assert broker.get("demo").viewers == PAGES_PER_HOST + 2
        await trio.sleep(ACTIVE_WINDOW + 1)
        audience.expire(trio.current_time())
        # Once they are gone, the host's slots are free again.
        audience.saw("demo", client_key("198.51.100.7", "Chrome", "later"), "198.51.100.7:1", 1)
        assert audience.page_ids() == {"later"}
    assert len([e for e in events if isinstance(e, ViewerJoined)]) == PAGES_PER_HOST + 3
