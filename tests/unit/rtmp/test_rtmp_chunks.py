"""The chunk stream reader and AMF0: headers of every form, size changes, and hostile input.

Hypothesis writes arbitrary and mutated chunk streams and AMF bodies: the
only exception that may escape is `RtmpError`, and what the reader holds
stays within its bound however the input declares its sizes.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ghostream.rtmp import RtmpError, amf
from ghostream.rtmp.chunks import MAX_PENDING, ChunkReader, Message, write_message
from ghostream.rtmp.session import RtmpSession

C1 = bytes(1536)


def chunk(fmt: int, csid: int, header: bytes, body: bytes) -> bytes:
    return bytes([fmt << 6 | csid]) + header + body


def test_shortened_headers_take_the_missing_fields_from_the_previous_chunk() -> None:
    reader = ChunkReader()
    # Type 0: timestamp 1000, length 4, type 9, stream 1.
    first = chunk(
        0,
        6,
        (1000).to_bytes(3, "big") + (4).to_bytes(3, "big") + b"\x09" + struct.pack("<I", 1),
        b"abcd",
    )
    # Type 1: delta 40, new length 2, type 8.
    second = chunk(1, 6, (40).to_bytes(3, "big") + (2).to_bytes(3, "big") + b"\x08", b"ef")
    # Type 2: delta 20 only; type 3: the same delta again.
    third = chunk(2, 6, (20).to_bytes(3, "big"), b"gh")
    fourth = chunk(3, 6, b"", b"ij")
    messages = reader.feed(first + second + third + fourth)
    assert messages == [
        Message(9, 1, 1000, b"abcd"),
        Message(8, 1, 1040, b"ef"),
        Message(8, 1, 1060, b"gh"),
        Message(8, 1, 1080, b"ij"),
    ]  # fmt: skip


def test_interleaved_chunk_streams_and_a_chunk_size_change() -> None:
    reader = ChunkReader()
    video = write_message(Message(9, 1, 0, bytes(300)), 6, 128)
    audio = write_message(Message(8, 1, 0, b"A" * 10), 4, 128)
    # The audio message slips between the video's first and second chunks.
    split = 12 + 128
    assert reader.feed(video[:split] + audio + video[split:]) == [
        Message(8, 1, 0, b"A" * 10),
        Message(9, 1, 0, bytes(300)),
    ]
    resize = write_message(Message(1, 0, 0, struct.pack(">I", 4096)), 2, 128)
    big = write_message(Message(9, 1, 0, bytes(5000)), 6, 4096)
    (control,) = reader.feed(resize + big)
    assert control.type == 1
    reader.set_chunk_size(4096)
    assert reader.feed(b"") == [Message(9, 1, 0, bytes(5000))]


def test_extended_timestamps_in_first_and_continuation_chunks() -> None:
    reader = ChunkReader()
    data = write_message(Message(9, 1, 0x01234567, bytes(200)), 6, 128)
    # One byte at a time: a chunk split anywhere waits for the rest.
    out = [m for byte in data for m in reader.feed(bytes([byte]))]
    assert out == [Message(9, 1, 0x01234567, bytes(200))]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (chunk(3, 6, b"", b""), "without a full header"),
        (chunk(1, 6, bytes(7), b""), "without a full header"),
    ],
)
def test_chunk_streams_must_begin_with_a_full_header(data: bytes, message: str) -> None:
    with pytest.raises(RtmpError, match=message):
        ChunkReader().feed(data)


def test_declared_sizes_are_bounded() -> None:
    reader = ChunkReader()
    with pytest.raises(RtmpError, match="chunk size"):
        reader.set_chunk_size(0x7FFFFFFF)
    # Three messages of 16 MiB begun at once: more than the reader holds.
    header = (0).to_bytes(3, "big") + (0xFFFFFF).to_bytes(3, "big") + b"\x09" + bytes(4)
    with pytest.raises(RtmpError, match="unfinished messages"):
        reader.feed(b"".join(chunk(0, 4 + n, header, bytes(128)) for n in range(3)))


def test_amf_round_trip_and_bounds() -> None:
    values = ["connect", 1.0, {"app": "live", "nested": {"list": [1.0, True, None]}}, None]
    assert amf.decode(amf.encode(values)) == values
    deep = b"\x03" + b"\x00\x01k\x03" * 40
    with pytest.raises(RtmpError, match="nested deeper"):
        amf.decode(deep)
    with pytest.raises(RtmpError, match="past the end"):
        amf.decode(b"\x03\x00\x01k\x02\x00\x10short")
    with pytest.raises(RtmpError, match="array of"):
        amf.decode(b"\x0a" + struct.pack(">I", 1_000_000_000))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_amf_decoding_arbitrary_bytes_raises_only_rtmp_error(data: bytes) -> None:
    try:
        amf.decode(data)
    except RtmpError:
        pass


def messages_strategy() -> st.SearchStrategy[bytes]:
    """Valid chunk streams of commands, controls and media, to be mutated."""
    message = st.builds(
        Message,
        st.sampled_from([1, 3, 4, 5, 6, 8, 9, 18, 20]),
        st.integers(0, 3),
        st.integers(0, 0xFFFFFFFF),
        st.binary(max_size=600),
    )
    return st.lists(
        st.tuples(message, st.integers(2, 63), st.sampled_from([128, 4096])), max_size=8
    ).map(lambda items: b"".join(write_message(m, cs, size) for m, cs, size in items))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(messages_strategy(), st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255))))
def test_mutated_chunk_streams_raise_only_rtmp_error_and_stay_bounded(
    stream: bytes, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(stream)
    for position, value in flips:
        if position < len(data):
            data[position] = value
    reader = ChunkReader()
    try:
        for offset in range(0, len(data), 97):
            for message in reader.feed(bytes(data[offset : offset + 97])):
                if message.type == 1 and len(message.payload) >= 4:
                    reader.set_chunk_size(int.from_bytes(message.payload[:4], "big"))
            assert len(reader._buffer) <= reader.chunk_size + 18 + 97
            assert reader._pending <= MAX_PENDING
    except RtmpError:
        pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_a_session_fed_garbage_after_the_handshake_raises_only_rtmp_error(data: bytes) -> None:
    session = RtmpSession(0.0, bytes(1528))
    try:
        session.receive(b"\x03" + C1 + C1 + data, 0.0)
    except RtmpError:
        pass
