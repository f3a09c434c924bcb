"""What WHIP ingest relies on in aiortc, and the frame assembly that replaces its buffering."""

from __future__ import annotations

import inspect

from aiortc import RTCPeerConnection, RTCRtpCodecParameters, RTCRtpReceiver
from aiortc import rtcrtpreceiver as aiortc_receiver
from aiortc.rtp import RtpPacket
from harness.aio import run_asyncio

from ghostream.webrtc import internals


def rtp(sequence: int, timestamp: int, data: bytes, *, marker: bool = False) -> RtpPacket:
    packet = RtpPacket(payload_type=96, sequence_number=sequence, timestamp=timestamp)
    packet.marker = int(marker)
    packet._data = data
    return packet


def test_a_video_frame_is_handed_over_when_its_last_packet_comes() -> None:
    frames = internals.VideoFrames()
    assert frames.add(rtp(65534, 3000, b"a")) == (False, None)
    pli, frame = frames.add(rtp(65535, 3000, b"b", marker=True))
    assert frame is not None and (frame.data, frame.timestamp) == (b"ab", 3000)
    # The next frame arrives out of order: complete only once its first packet is in.
    assert frames.add(rtp(1, 6000, b"d", marker=True))[1] is None
    frame = frames.add(rtp(0, 6000, b"c"))[1]
    assert frame is not None and frame.data == b"cd"


def test_a_frame_with_a_missing_packet_waits() -> None:
    frames = internals.VideoFrames()
    frames.add(rtp(10, 3000, b"a", marker=True))
    assert frames.add(rtp(12, 6000, b"c", marker=True))[1] is None


def test_audio_packets_are_frames_and_late_ones_are_dropped() -> None:
    frames = internals.AudioFrames()
    assert frames.add(rtp(65535, 960, b"x"))[1].data == b"x"
    assert frames.add(rtp(1, 2880, b"z"))[1].timestamp == 2880
    assert frames.add(rtp(0, 1920, b"y"))[1] is None


def test_only_marked_receivers_pass_their_frames_through() -> None:
    source = inspect.getsource(aiortc_receiver.decoder_worker)
    assert "get_decoder(codec)" in source and "decoder.decode(encoded_frame)" in source
    receiver_source = inspect.getsource(RTCRtpReceiver)
    assert "self.__jitter_buffer.add(packet)" in receiver_source
    assert "self.__codecs[codec.payloadType] = codec" in receiver_source
    assert callable(RTCRtpReceiver._send_rtcp_pli)

    async def main() -> None:
        # aiortc needs a running loop; the server gives it trio-asyncio's.
        publisher = RTCPeerConnection().addTransceiver("video", direction="recvonly")
        publisher._codecs = [RTCRtpCodecParameters("video/H264", 90000, 96)]
        internals.receive_encoded(publisher)
        assert aiortc_receiver.get_decoder(publisher._codecs[0]).decode("frame") == ["frame"]
        assert isinstance(publisher.receiver._RTCRtpReceiver__jitter_buffer, internals.VideoFrames)
        # Any other receiver (a test's own browser stand-in) still decodes.
        other = RTCRtpCodecParameters("video/H264", 90000, 96)
        assert type(aiortc_receiver.get_decoder(other)).__name__ == "H264Decoder"

    run_asyncio(main)
