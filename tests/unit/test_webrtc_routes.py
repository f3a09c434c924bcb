"""Routing datagrams on a shared WebRTC port to their session (sans-IO)."""

from __future__ import annotations

import pytest
from aioice import stun
from hypothesis import given
from hypothesis import strategies as st

from ghostream.webrtc import routes
from ghostream.webrtc.routes import IceRoutes, integrity_holds, parse_stun

BROWSER = ("192.0.2.7", 50000)
OTHER = ("192.0.2.8", 50001)
RTP = b"\x80\x60" + bytes(30)


def request(username: str, password: str, *, sign: bool = True) -> bytes:
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    message.attributes["PRIORITY"] = 1
    if sign:
        message.add_message_integrity(password.encode())
    return bytes(message)


@pytest.fixture
def table() -> tuple[IceRoutes[str], list[str]]:
    dropped: list[str] = []
    table: IceRoutes[str] = IceRoutes(dropped.append)
    table.add("ufA", "passwordA-1234567890123", "A")
    table.add("ufB", "passwordB-1234567890123", "B")
    return table, dropped


def test_integrity_is_checked_as_aioice_signs_it() -> None:
    data = request("ufA:browser", "secret")
    header = parse_stun(data)
    assert header is not None and header.username == "ufA:browser"
    assert integrity_holds(data, header.integrity_at, "secret")
    assert not integrity_holds(data, header.integrity_at, "other")


def test_a_signed_binding_request_teaches_the_address(table) -> None:
    table, dropped = table
    assert table.route(RTP, BROWSER) is None and dropped == [routes.UNKNOWN_ADDRESS]
    assert table.route(request("ufA:b", "passwordA-1234567890123"), BROWSER) == "A"
    assert table.route(RTP, BROWSER) == "A"
    assert table.addresses("A") == [BROWSER]


def test_forged_and_foreign_requests_are_dropped(table) -> None:
    table, dropped = table
    assert table.route(request("ufA:b", "wrong"), BROWSER) is None
    assert table.route(request("ufA:b", "", sign=False), BROWSER) is None
    assert table.route(request("nobody:b", "passwordA-1234567890123"), BROWSER) is None
    assert table.route(b"\x00\x01\x00\x08\x21\x12\xa4\x42" + bytes(12), BROWSER) is None
    assert dropped == [
        routes.BAD_INTEGRITY,
        routes.BAD_INTEGRITY,
        routes.UNKNOWN_USERNAME,
        routes.MALFORMED_STUN,
    ]
    assert table.addresses("A") == []


def test_replies_find_the_session_that_asked(table) -> None:
    table, _ = table
    asked = request("b:ufA", "browser-password")
    table.sent("A", asked, OTHER, now=0.0)
    reply = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=asked[8:20])
    assert table.route(bytes(reply), OTHER) == "A"
    # Once: a second copy has nobody waiting for it.
    assert table.route(bytes(reply), OTHER) is None


def test_media_is_taken_only_from_where_the_session_sends_it(table) -> None:
    table, dropped = table
    for address in (BROWSER, OTHER):
        assert table.route(request("ufA:b", "passwordA-1234567890123"), address) == "A"
    assert table.route(RTP, OTHER) == "A"  # before the session sends media anywhere
    table.sent("A", RTP, BROWSER)
    assert table.route(RTP, BROWSER) == "A"
    assert table.route(RTP, OTHER) is None and dropped == [routes.UNSELECTED_ADDRESS]
    # STUN still follows every address (consent, a later nomination).
    assert table.route(request("ufA:b", "passwordA-1234567890123"), OTHER) == "A"


def test_an_ended_session_leaves_nothing_behind(table) -> None:
    table, _ = table
    table.route(request("ufA:b", "passwordA-1234567890123"), BROWSER)
    asked = request("b:ufA", "browser-password")
    table.sent("A", asked, BROWSER)
    table.remove("A")
    assert len(table) == 1
    assert table.route(RTP, BROWSER) is None
    assert table.route(request("ufA:b", "passwordA-1234567890123"), BROWSER) is None
    reply = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=asked[8:20])
    assert table.route(bytes(reply), BROWSER) is None
    table.add("ufA", "new-password-1234567890", "A2")  # the ufrag is free again


def test_an_address_moves_to_the_session_that_proves_it(table) -> None:
    table, _ = table
    table.route(request("ufA:b", "passwordA-1234567890123"), BROWSER)
    assert table.route(request("ufB:b", "passwordB-1234567890123"), BROWSER) == "B"
    assert table.addresses("A") == [] and table.addresses("B") == [BROWSER]
    table.forget(BROWSER)
    assert table.route(RTP, BROWSER) is None


def test_tables_stay_bounded(table) -> None:
    table, _ = table
    for port in range(routes.MAX_ADDRESSES + 10):
        table.route(request("ufA:b", "passwordA-1234567890123"), ("192.0.2.9", port))
    assert len(table.addresses("A")) == routes.MAX_ADDRESSES
    assert table.route(RTP, ("192.0.2.9", 0)) is None
    for _ in range(routes.MAX_TRANSACTIONS + 10):
        table.sent("A", request("b:ufA", "x"), BROWSER, now=0.0)
    assert len(table._transactions) == routes.MAX_TRANSACTIONS
    table.sent("A", request("b:ufA", "x"), BROWSER, now=routes.TRANSACTION_LIFETIME + 1)
    assert len(table._transactions) == 1


@given(st.binary(max_size=200), st.binary(min_size=12, max_size=12))
def test_any_datagram_is_routed_or_dropped_without_error(junk: bytes, transaction: bytes) -> None:
    table: IceRoutes[str] = IceRoutes()
    table.add("ufA", "passwordA-1234567890123", "A")
    stunlike = b"\x00\x01" + junk[:2] + b"\x21\x12\xa4\x42" + transaction + junk[2:]
    for data in (junk, stunlike):
        assert table.route(data, BROWSER) is None
