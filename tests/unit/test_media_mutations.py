"""Real ffmpeg-made streams, mutated: media code returns values or its typed error, nothing else.

Every byte a publisher sends reaches the demuxer, and from there the
parameter-set parsers, the video description, the LL-HLS timeline, the
fMP4 writer and the WebRTC packetizer.  A stream's mistakes must stop at `UnplayableStream` (or be
skipped and counted), never as a `struct.error` or `IndexError` that would
end a task, and with it the server.  The mutations aim where streams go
wrong: parameter-set fields, PES headers, adaptation fields, truncation.
"""

from __future__ import annotations

import pytest
from harness.media import signal_source, write_ts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ghostream.media import fmp4
from ghostream.media.bitstream import parse_adts, parse_video_config
from ghostream.media.demux import TIMESTAMP_WRAP, MediaPacket, Track, TsDemuxer, Unwrapper
from ghostream.media.errors import MalformedStream, UnplayableStream
from ghostream.media.properties import PropertiesTracker
from ghostream.media.ts import PACKET_SIZE
from ghostream.outputs.llhls.playlist import media_playlist
from ghostream.outputs.llhls.timeline import Timeline
from ghostream.webrtc.packetize import SharedPayloads

CHUNK = 7 * PACKET_SIZE
MUTATIONS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module", params=["libx264", "libx265"])
def stream(request, tmp_path_factory) -> bytes:
    """One second of 160x90 video with B-frames and AAC, in MPEG-TS."""
    path = tmp_path_factory.mktemp("mutations") / f"{request.param}.ts"
    return write_ts(
        path, 1, signal_source("160x90", "-bf", "2", video=request.param, preset=None, gop=10)
    )


def demux(data: bytes) -> tuple[TsDemuxer, list[MediaPacket]]:
    demuxer = TsDemuxer()
    packets: list[MediaPacket] = []
    for offset in range(0, len(data), CHUNK):
        packets += demuxer.feed(data[offset : offset + CHUNK])
    return demuxer, packets


def package(demuxer: TsDemuxer, packets: list[MediaPacket]) -> Timeline | None:
    """Everything LL-HLS and WebRTC do with the packets; None when the stream is refused."""
    timeline = Timeline()
    properties = PropertiesTracker()
    payloads = SharedPayloads()
    try:
        timeline.begin(demuxer.tracks)
        for packet in packets:
            properties.observe(packet)
            timeline.add(packet, 1_700_000_000.0)
            if packet.track.codec == "h264":
                payloads.of(packet)
        timeline.flush()
        media_playlist(timeline, skip=False)
    except UnplayableStream:
        return None
    return timeline


def regions(data: bytes) -> dict[str, list[int]]:
    """Offsets worth mutating: parameter sets, PES headers, adaptation fields."""
    found: dict[str, list[int]] = {"sets": [], "pes": [], "adaptation": []}
    for marker in (b"\x00\x00\x01\x67", b"\x00\x00\x01\x40", b"\x00\x00\x01\x42"):
        found["sets"] += [i for i in range(len(data)) if data.startswith(marker, i)][:8]
    for start in range(0, len(data) - PACKET_SIZE + 1, PACKET_SIZE):
        if data[start + 3] & 0x20:
            found["adaptation"].append(start + 4)
        if data[start + 1] & 0x40:
            offset = start + 4 + (1 + data[start + 4] if data[start + 3] & 0x20 else 0)
            if data.startswith(b"\x00\x00\x01", offset):
                found["pes"].append(offset)
    return found


@st.composite
def mutation(draw, data: bytes) -> bytes:
    places = regions(data)
    mutated = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["sets", "pes", "adaptation", "anywhere"]))
        if kind == "anywhere" or not places[kind]:
            at = draw(st.integers(0, len(data) - 1))
        else:
            at = draw(st.sampled_from(places[kind])) + draw(st.integers(0, 24))
        at = min(at, len(data) - 1)
        mutated[at] = draw(st.integers(0, 255))
    end = draw(st.one_of(st.just(len(data)), st.integers(0, len(data))))
    return bytes(mutated[:end])


def test_the_unmutated_streams_package_cleanly(stream: bytes) -> None:
    demuxer, packets = demux(stream)
    assert demuxer.invalid == 0 and all(not t.problem for t in demuxer.tracks)
    timeline = package(demuxer, packets)
    assert timeline is not None and timeline.ready


@MUTATIONS
@given(data=st.data())
def test_mutated_streams_raise_only_the_typed_error(stream: bytes, data) -> None:
    demuxer, packets = demux(data.draw(mutation(stream)))
    timeline = package(demuxer, packets)
    if timeline is not None and timeline.init is not None:
        assert 0 < timeline.init.width <= 8192 and 0 < timeline.init.height <= 8192


@MUTATIONS
@given(data=st.data())
def test_mutated_parameter_sets_are_read_or_refused(stream: bytes, data) -> None:
    track = next(t for t in demux(stream)[0].tracks if t.kind == "video")
    extradata = bytearray(track.extradata)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(4, len(extradata) - 1))
        extradata[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(5, len(extradata)))
    try:
        config = parse_video_config(track.codec, bytes(extradata[:cut]))
    except MalformedStream:
        return
    assert 0 < config.width <= 8192 and 0 < config.height <= 8192
    fmp4.init_segment(Track("video", track.codec, bytes(extradata[:cut])), config, None)


@given(header=st.binary(min_size=0, max_size=9))
def test_adts_headers_are_read_or_refused(header: bytes) -> None:
    try:
        adts = parse_adts(header)
    except MalformedStream:
        return
    assert adts.length > adts.header_size and adts.sample_rate > 0 and len(adts.config) == 2


def test_a_cropping_window_wider_than_the_picture_is_refused() -> None:
    """What h264_metadata=crop_right=400 makes of a 160x90 SPS: a negative width."""
    sps = bytes.fromhex("6742c00bda0a3780c9930110000003001000000303 20f142aa".replace(" ", ""))
    pps = bytes.fromhex("68ce0fc8")
    track = Track("video", "h264", b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps)
    assert track.config is None
    assert "-240x90" in track.problem


def shifted(data: bytes, offset: int) -> bytes:
    """The stream with `offset` added to every PES timestamp, modulo 2**33, as a muxer would."""
    out = bytearray(data)
    for start in range(0, len(data) - PACKET_SIZE + 1, PACKET_SIZE):
        if not data[start + 1] & 0x40:
            continue
        at = start + 4 + (1 + data[start + 4] if data[start + 3] & 0x20 else 0)
        if not data.startswith(b"\x00\x00\x01", at) or data[at + 3] < 0xC0:
            continue
        flags = data[at + 7] >> 6
        fields = [(at + 9, flags << 4), (at + 14, 0x10)] if flags == 3 else [(at + 9, 0x20)]
        for field, prefix in fields:
            value = (_read(data[field : field + 5]) + offset) % TIMESTAMP_WRAP
            out[field : field + 5] = _write(value, prefix)
    return bytes(out)


def _read(field: bytes) -> int:
    return (
        ((field[0] >> 1) & 7) << 30 | field[1] << 22 | (field[2] >> 1) << 15 | field[3] << 7
        | field[4] >> 1
    )  # fmt: skip


def _write(value: int, prefix: int) -> bytes:
    return bytes([
        prefix | ((value >> 29) & 0x0E) | 1, (value >> 22) & 0xFF, ((value >> 14) & 0xFE) | 1,
        (value >> 7) & 0xFF, ((value << 1) & 0xFE) | 1,
    ])  # fmt: skip


def test_the_33_bit_timestamp_wrap_keeps_one_timeline(stream: bytes) -> None:
    """26.5 hours into a show, the PES clock wraps; packets and parts keep counting on."""
    _, plain = demux(stream)
    first = min(min(p.dts, p.pts) for p in plain)
    offset = TIMESTAMP_WRAP - first - 45000  # the wrap comes half a second in
    demuxer, packets = demux(shifted(stream, offset))
    assert [(p.dts, p.pts) for p in packets] == [(p.dts + offset, p.pts + offset) for p in plain]
    timeline = package(demuxer, packets)
    assert timeline is not None
    assert not any(segment.discontinuity for segment in timeline.segments)


def test_the_unwrapper_follows_the_clock_across_the_wrap_and_back() -> None:
    unwrap = Unwrapper()
    near = TIMESTAMP_WRAP - 3000
    raw = [near, near + 1500, 500, 3500, 2000, 6500]
    assert [unwrap(t % TIMESTAMP_WRAP) for t in raw] == [
        near, near + 1500, TIMESTAMP_WRAP + 500, TIMESTAMP_WRAP + 3500, TIMESTAMP_WRAP + 2000,
        TIMESTAMP_WRAP + 6500,
    ]  # fmt: skip


def test_timestamps_going_back_make_a_discontinuity_and_playback_goes_on(stream: bytes) -> None:
    """A publisher's encoder restarting its clock (or reconnecting) mid-show."""
    demuxer, packets = demux(stream)
    again = TsDemuxer()
    later = again.feed(stream)
    timeline = Timeline(segment_target=0.4)
    timeline.begin(demuxer.tracks)
    for packet in packets + later:
        timeline.add(packet, 1_700_000_000.0)
    timeline.flush()
    marked = [segment.discontinuity for segment in timeline.segments]
    assert True in marked[1:] and not marked[0]
    assert all(s.complete for s in timeline.segments) and len(marked) >= 4
    restarted = [s for s in timeline.segments if s.discontinuity][-1]
    assert restarted.start < timeline.segments[0].start + 0.5  # its clock started over
    assert "#EXT-X-DISCONTINUITY" in media_playlist(timeline, skip=False)
