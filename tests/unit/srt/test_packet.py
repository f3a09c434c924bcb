"""SRT wire formats: round trips, the libsrt quirks, and parsing arbitrary bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simulation import Simulation, messages

from ghostream.srt.packet import (
    SEQ_MASK,
    AckInfo,
    ControlPacket,
    DataPacket,
    Handshake,
    HsReq,
    PacketError,
    decode_loss_list,
    decode_string,
    encode_loss_list,
    encode_peer_ip,
    encode_string,
    parse_packet,
    seq_add,
    seq_diff,
)

seqs = st.integers(min_value=0, max_value=SEQ_MASK)


def test_stream_id_uses_libsrt_word_reversed_encoding() -> None:
    assert encode_string("abcde") == b"dcba\0\0\0e"
    assert decode_string(b"dcba\0\0\0e") == "abcde"


def test_peer_address_is_written_in_host_order_words() -> None:
    assert encode_peer_ip("127.0.0.1") == b"\x01\x00\x00\x7f" + bytes(12)


def test_handshake_round_trip_keeps_unknown_extensions() -> None:
    hs = Handshake(
        version=5,
        hs_type=0xFFFFFFFF,
        socket_id=42,
        isn=7,
        extensions=[(1, HsReq(0x010503, 0x3F, 120, 80).to_bytes()), (48385, b"abcd")],
    )
    parsed = Handshake.parse(hs.to_bytes())
    assert parsed == hs
    assert HsReq.parse(parsed.extension(1)) == HsReq(0x010503, 0x3F, 120, 80)


def test_extension_running_past_the_end_is_an_error() -> None:
    data = Handshake(version=5, hs_type=1, socket_id=1).to_bytes() + b"\x00\x05\x00\x09abcd"
    with pytest.raises(PacketError):
        Handshake.parse(data)


@given(
    seq=seqs,
    msgno=st.integers(1, 0x03FFFFFF),
    timestamp=st.integers(0, 2**32 - 1),
    key_flag=st.integers(0, 3),
    retransmitted=st.booleans(),
    payload=st.binary(max_size=64),
)
def test_data_packet_round_trip(seq, msgno, timestamp, key_flag, retransmitted, payload) -> None:
    packet = DataPacket(
        seq=seq,
        msgno=msgno,
        timestamp=timestamp,
        dst_socket_id=9,
        payload=payload,
        key_flag=key_flag,
        retransmitted=retransmitted,
    )
    assert parse_packet(packet.to_bytes()) == packet


@given(st.lists(st.tuples(seqs, st.integers(0, 1000)), max_size=20))
def test_loss_list_round_trip(spans) -> None:
    ranges = [(first, seq_add(first, length)) for first, length in spans]
    assert decode_loss_list(encode_loss_list(ranges)) == ranges


@given(a=seqs, n=st.integers(-(2**29), 2**29))
def test_sequence_distance_survives_the_wrap(a: int, n: int) -> None:
    assert seq_diff(seq_add(a, n), a) == n


def test_ack_of_every_libsrt_size_parses() -> None:
    full = AckInfo(5, 1000, 500, 8192, 10, 20, 30)
    assert AckInfo.parse(full.to_bytes()) == full
    assert AckInfo.parse(full.to_bytes()[:16]).last_ack_seq == 5
    assert AckInfo.parse(full.to_bytes()[:4]) == AckInfo(5)


@given(st.binary(max_size=300))
def test_parsing_arbitrary_bytes_raises_only_packet_error(data: bytes) -> None:
    try:
        packet = parse_packet(data)
        if isinstance(packet, ControlPacket):
            for parse in (Handshake.parse, AckInfo.parse, decode_loss_list):
                try:
                    parse(packet.cif)
                except PacketError:
                    pass
    except PacketError:
        pass


header_words = st.tuples(
    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)
)


@settings(max_examples=150, deadline=None)
@given(
    junk=st.lists(
        st.tuples(
            st.sampled_from([0x80000000 | (t << 16) for t in (0, 1, 2, 3, 5, 6, 7, 0x7FFF)] + [0]),
            header_words,
            st.binary(max_size=80),
        ),
        max_size=12,
    )
)
def test_connection_survives_arbitrary_datagrams_addressed_to_it(junk) -> None:
    """Hostile packets with a valid destination never raise or break the stream."""
    sim = Simulation()
    sim.connect()
    assert sim.server is not None
    for kind, (word1, timestamp, word0_low), body in junk:
        word0 = kind | (word0_low & (0xFFFF if kind else SEQ_MASK))
        datagram = (
            word0.to_bytes(4, "big")
            + word1.to_bytes(4, "big")
            + timestamp.to_bytes(4, "big")
            + sim.server.socket_id.to_bytes(4, "big")
            + body
        )
        sim.server.receive_datagram(datagram, sim.now)
    sim.stream(sim.caller, messages(20), 0.002)
    sim.run_for(0.5)
    if sim.closed(sim.server_events) is None:
        assert [r.payload for r in sim.server_received][-5:] == messages(20)[-5:]


def test_a_nak_claiming_any_range_is_answered_from_the_send_buffer_only() -> None:
    """Ranges far behind, far ahead or across the wrap never make the sender walk them."""
    sim = Simulation()
    sim.connect()
    assert sim.server is not None
    sim.stream(sim.server, messages(5), 0.002)
    sent = sim.server.stats.packets_sent
    for start in range(0, 2**31, 2**26):
        for length in (2**20, 2**29, 2**30 - 1, 2**31 - 2):
            nak = (
                (0x80000000 | (3 << 16)).to_bytes(4, "big")
                + bytes(8)
                + sim.server.socket_id.to_bytes(4, "big")
                + encode_loss_list([(start, (start + length) % 2**31)])
            )
            sim.server.receive_datagram(nak, sim.now)
    assert sim.server.stats.packets_retransmitted <= sent * 128
