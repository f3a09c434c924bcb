"""The sans-IO SRT core driven over an in-memory link with a fake clock."""

from __future__ import annotations

import pytest
from simulation import Link, Simulation, messages

from ghostream.srt.connection import FIRST_PACKET_TIMEOUT, PEER_IDLE_TIMEOUT
from ghostream.srt.handshake import ConnectionRequest, ListenerHandshake
from ghostream.srt.packet import (
    LIVE_FLAGS,
    SEQ_MASK,
    SRT_VERSION,
    ControlPacket,
    ControlType,
    DataPacket,
    ExtensionType,
    Handshake,
    HandshakeType,
    HsReq,
    RejectReason,
    parse_packet,
)

INTERVAL = 0.002  # 500 packets/s, about 5 Mbit/s of 1316-byte messages


def test_handshake_carries_stream_id_and_negotiates_latency() -> None:
    sim = Simulation(
        caller_kwargs={"stream_id": "demo:secret", "latency": 0.200},
        listener_kwargs={"latency": 0.120},
    )
    sim.connect()
    assert [r.stream_id for r in sim.requests] == ["demo:secret"]
    assert sim.server is not None
    # Each direction takes the larger of the two wishes.
    assert sim.server.recv_latency == pytest.approx(0.200)
    assert sim.server.send_latency == pytest.approx(0.200)
    assert sim.caller.recv_latency == pytest.approx(0.200)
    assert sim.caller.peer_socket_id == sim.server.socket_id


def test_rejection_reaches_the_caller_with_its_code() -> None:
    sim = Simulation(decide=lambda request: RejectReason.FORBIDDEN)
    sim.run_for(1.0)
    assert sim.rejection == RejectReason.FORBIDDEN
    assert sim.server is None


def test_repeated_conclusion_gets_the_same_answer_and_no_second_connection() -> None:
    # Lose the first conclusion responses so the caller repeats its conclusion.
    lost = {"n": 0}

    def drop_first_two_conclusion_answers(datagram: bytes) -> bool:
        packet = parse_packet(datagram)
        if isinstance(packet, ControlPacket) and packet.type == ControlType.HANDSHAKE:
            if packet.cif[20:24] == b"\xff\xff\xff\xff" and lost["n"] < 2:
                lost["n"] += 1
                return True
        return False

    sim = Simulation(backward=Link(drop_if=drop_first_two_conclusion_answers))
    sim.connect()
    assert lost["n"] == 2
    assert len(sim.requests) == 1


def test_a_wrong_passphrase_is_refused_when_its_owner_says_so_and_only_once() -> None:
    """The caller hears nothing until the late refusal, however often it repeats itself."""
    refused = []
    sim = Simulation(
        caller_kwargs={"stream_id": "demo", "passphrase": "a guess of the passphrase"},
        listener_kwargs={
            "passphrase": "the real passphrase",
            "on_rejected": lambda *refusal: refused.append(refusal),
        },
    )
    sim.run_for(1.0)
    assert [r.guess_refused.code for r in sim.requests if r.guess_refused] == [
        RejectReason.BADSECRET
    ]
    assert sim.rejection is None and not sim.connected
    assert refused == []
    sim.refuse_guesses()
    sim.run_for(0.5)
    assert sim.rejection == RejectReason.BADSECRET
    assert sim.server is None
    assert [(code, reason) for _, _, code, reason in refused] == [
        (RejectReason.BADSECRET, "wrong passphrase")
    ]


def test_the_right_passphrase_connects_at_once() -> None:
    sim = Simulation(
        caller_kwargs={"passphrase": "the real passphrase"},
        listener_kwargs={"passphrase": "the real passphrase"},
    )
    sim.connect()
    assert [r.guess_refused for r in sim.requests] == [None]


def test_connect_times_out_without_a_listener() -> None:
    sim = Simulation(forward=Link(loss=1.0))
    sim.run_for(5.0)
    assert sim.closed(sim.caller_events) == "connection timed out"


def test_conclusion_with_a_forged_cookie_gets_no_answer() -> None:
    listener = ListenerHandshake()
    conclusion = Handshake(
        version=5,
        hs_type=HandshakeType.CONCLUSION,
        socket_id=5,
        cookie=listener.cookie(("127.0.0.1", 40000), 0.0) ^ 1,
        extension_field=1,
        extensions=[(ExtensionType.HSREQ, HsReq(SRT_VERSION, LIVE_FLAGS, 120, 120).to_bytes())],
    )
    packet = ControlPacket(
        type=ControlType.HANDSHAKE, timestamp=0, dst_socket_id=0, cif=conclusion.to_bytes()
    )
    assert listener.receive(packet, ("127.0.0.1", 40000), 0.0) is None
    conclusion.cookie ^= 1
    packet.cif = conclusion.to_bytes()
    request = listener.receive(packet, ("127.0.0.1", 40000), 0.0)
    assert isinstance(request, ConnectionRequest)


def test_data_is_delivered_in_order_at_its_play_time() -> None:
    sim = Simulation()
    sim.connect()
    sent = sim.stream(sim.caller, messages(100), INTERVAL)
    sim.run_for(1.0)
    got = sim.server_received
    assert [r.payload for r in got] == messages(100)
    assert sim.server is not None
    latency = sim.server.recv_latency
    for at, received in zip(sent, got, strict=True):
        # Delivered one latency after it was sent, not earlier, within a tick.
        assert received.at - at == pytest.approx(latency + 0.010, abs=0.004)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_arq_recovers_every_packet_under_loss_reordering_and_duplication(seed: int) -> None:
    sim = Simulation(
        forward=Link(loss=0.05, reorder=0.1, duplicate=0.05, seed=seed),
        backward=Link(loss=0.05, reorder=0.1, seed=seed + 100),
    )
    sim.connect()
    sim.stream(sim.caller, messages(1500), INTERVAL)
    sim.run_for(1.0)
    assert sim.server is not None
    assert [r.payload for r in sim.server_received] == messages(1500)
    assert sim.server.stats.packets_dropped == 0
    assert sim.caller.stats.packets_retransmitted > 0
    assert sim.server.stats.packets_duplicate > 0


def test_server_to_caller_direction_recovers_loss_too() -> None:
    sim = Simulation(backward=Link(loss=0.05, reorder=0.05, seed=9))
    sim.connect()
    assert sim.server is not None
    sim.stream(sim.server, messages(800), INTERVAL)
    sim.run_for(1.0)
    assert [r.payload for r in sim.caller_received] == messages(800)


def test_packet_that_never_arrives_is_skipped_at_its_play_time() -> None:
    doomed = {"seq": None}

    def lose_one_packet_forever(datagram: bytes) -> bool:
        packet = parse_packet(datagram)
        if isinstance(packet, DataPacket):
            if doomed["seq"] is None and packet.msgno == 50:
                doomed["seq"] = packet.seq
            return packet.seq == doomed["seq"]
        return False

    sim = Simulation(forward=Link(drop_if=lose_one_packet_forever))
    sim.connect()
    sent = sim.stream(sim.caller, messages(200), INTERVAL)
    sim.run_for(1.0)
    assert sim.server is not None
    payloads = [r.payload for r in sim.server_received]
    assert payloads == messages(200)[:49] + messages(200)[50:]
    assert sim.server.stats.packets_dropped == 1
    # The packet after the hole still plays on time: the hole does not stall it.
    after_hole = sim.server_received[49]
    assert after_hole.at - sent[50] == pytest.approx(sim.server.recv_latency + 0.010, abs=0.004)


def test_peer_that_goes_silent_is_timed_out() -> None:
    sim = Simulation()
    sim.connect()
    # Its first keep-alive comes a second after the handshake.
    sim.run_for(1.5)
    sim.forward.loss = 1.0
    sim.run_for(PEER_IDLE_TIMEOUT - 1.5)
    assert sim.closed(sim.server_events) is None
    sim.run_for(1.5)
    assert sim.closed(sim.server_events) == "peer idle timeout"


def test_a_peer_silent_from_the_handshake_on_is_let_go_sooner() -> None:
    """A caller that completes the handshake and never says a word holds its slot briefly."""
    sim = Simulation()
    sim.connect()
    sim.forward.loss = 1.0
    sim.run_for(FIRST_PACKET_TIMEOUT - 0.1)
    assert sim.closed(sim.server_events) is None
    sim.run_for(0.2)
    assert sim.closed(sim.server_events) == "nothing from the peer after the handshake"


def test_keepalives_hold_an_idle_connection_open() -> None:
    sim = Simulation()
    sim.connect()
    sim.run_for(PEER_IDLE_TIMEOUT * 3)
    assert sim.closed(sim.server_events) is None
    assert sim.closed(sim.caller_events) is None


def test_shutdown_closes_the_peer_and_hands_over_what_arrived() -> None:
    sim = Simulation()
    sim.connect()
    for message in messages(10):
        sim.caller.send(message, sim.now)
    sim.caller.close(sim.now)
    sim.run_for(0.05)
    assert sim.closed(sim.server_events) == "peer closed the connection"
    assert [r.payload for r in sim.server_received] == messages(10)


def test_sequence_and_timestamp_wrap_around() -> None:
    sim = Simulation(
        caller_kwargs={"isn": SEQ_MASK - 300},
        forward=Link(loss=0.05, seed=4),
    )
    # Start the caller's clock just before its 32-bit microsecond timestamps wrap.
    sim.caller._start -= (2**32 - 1_000_000) / 1e6
    sim.connect()
    sim.stream(sim.caller, messages(1000), INTERVAL)
    sim.run_for(1.0)
    assert [r.payload for r in sim.server_received] == messages(1000)


def test_garbage_datagrams_are_counted_and_ignored() -> None:
    sim = Simulation()
    sim.connect()
    assert sim.server is not None
    for junk in (b"", b"\x80", bytes(15), b"\x80\x02" + bytes(14) + b"\x01", b"\xff" * 100):
        sim.server.receive_datagram(junk, sim.now)
    sim.stream(sim.caller, messages(20), INTERVAL)
    sim.run_for(0.5)
    assert [r.payload for r in sim.server_received] == messages(20)
    assert sim.server.stats.packets_invalid >= 3


def test_far_future_sequence_number_is_not_taken_as_a_huge_loss() -> None:
    sim = Simulation()
    sim.connect()
    assert sim.server is not None
    bogus = DataPacket(
        seq=(sim.caller._snd.next + 10**6) & SEQ_MASK,
        msgno=1,
        timestamp=0,
        dst_socket_id=sim.server.socket_id,
        payload=b"x",
    )
    sim.server.receive_datagram(bogus.to_bytes(), sim.now)
    sim.stream(sim.caller, messages(20), INTERVAL)
    sim.run_for(0.5)
    assert [r.payload for r in sim.server_received] == messages(20)


def test_long_latency_high_rate_stream_recovers_a_burst_across_the_wrap() -> None:
    # 2000 packets/s (21 Mbit/s) with 2 s of latency: 4000 packets held at once.
    def lose_a_burst_once(datagram: bytes) -> bool:
        if datagram[0] & 0x80 or datagram[4] & 0x04:
            return False
        return 2000 <= int.from_bytes(datagram[4:8], "big") & 0x03FFFFFF < 3500

    sim = Simulation(
        caller_kwargs={"isn": SEQ_MASK - 2500, "latency": 2.0},
        forward=Link(loss=0.05, reorder=0.1, seed=5, drop_if=lose_a_burst_once),
        backward=Link(loss=0.05, seed=6),
    )
    sim.connect()
    sent = messages(6000, size=188)
    for message in sent[:3530]:
        sim.caller.send(message, sim.now)
        sim.run_for(0.0005)
    assert sim.server is not None
    # The burst is one range of the loss list, however many packets it holds.
    assert (1999, 3498) in [
        (first - sim.server._rcv.head, last - sim.server._rcv.head)
        for first, last in sim.server._loss.ranges()
    ]
    for i, message in enumerate(sent[3530:]):
        # A lost last packet is a gap nobody sees (no later one reveals it).
        sim.forward.loss = 0.05 if i < 2000 else 0.0
        sim.caller.send(message, sim.now)
        sim.run_for(0.0005)
    sim.run_for(2.5)
    assert [r.payload for r in sim.server_received] == sent
    assert sim.server.stats.packets_dropped == 0
    assert len(sim.server._loss) == 0
