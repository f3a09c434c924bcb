"""SRT wire formats: round trips, the libsrt quirks, and parsing arbitrary bytes."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
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
@example(bytes(15))
@example(bytes(16))
@example(b"\x80\x00\x00\x00" + bytes(12) + b"\x80\x00\x00\x01")
def test_any_datagram_of_a_header_or_more_parses_and_writes_back_unchanged(data: bytes) -> None:
    if len(data) < 16:
        with pytest.raises(PacketError):
            parse_packet(data)
        return
    packet = parse_packet(data)
    assert packet.to_bytes() == data
    assert isinstance(packet, ControlPacket) == bool(data[0] & 0x80)


@given(st.binary(max_size=200))
@example(bytes(48) + b"\x00\x05\x00\x01abcd")
@example(bytes(48) + b"\x00\x05\x00\x02abcd")
def test_a_handshake_parses_to_what_it_writes_or_is_a_packet_error(cif: bytes) -> None:
    try:
        handshake = Handshake.parse(cif)
    except PacketError:
        assert len(cif) < 48 or len(cif) > 48 + 3
        return
    written = handshake.to_bytes()
    assert Handshake.parse(written) == handshake
    # Only the sequence number's top bit (not part of it) and a tail of under a word are lost.
    assert written[16:] == cif[16 : len(written)] and len(cif) - len(written) < 4


@given(st.binary(max_size=64))
@example(b"\x80\x00\x00\x05")
@example(b"\x80\x00\x00\x05\x00\x00\x00\x04")
def test_a_loss_list_decodes_to_ranges_that_encode_back(cif: bytes) -> None:
    try:
        ranges = decode_loss_list(cif)
    except PacketError:
        return
    assert all(seq_diff(last, first) >= 0 for first, last in ranges)
    assert decode_loss_list(encode_loss_list(ranges)) == ranges


@given(st.binary(min_size=4, max_size=40))
def test_an_ack_of_any_length_reads_its_words_in_order(cif: bytes) -> None:
    ack = AckInfo.parse(cif)
    words = [int.from_bytes(cif[i : i + 4], "big") for i in range(0, min(len(cif), 28) - 3, 4)]
    assert [getattr(ack, name) for name in AckInfo.__dataclass_fields__][: len(words)] == words


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
@example(junk=[(0x80000000 | (5 << 16), (0, 0, 0), b"")])
@example(junk=[(0x80000000 | (7 << 16), (0, 0, 0), bytes(8)), (0, (0, 0, 0), b"x")])
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
    # Only a SHUTDOWN ends the connection; anything else leaves the stream flowing.
    shut_down = any(kind == 0x80000000 | (5 << 16) for kind, _, _ in junk)
    assert (sim.closed(sim.server_events) is not None) == shut_down
    if not shut_down:
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
