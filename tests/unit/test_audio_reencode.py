"""The audio re-encoder: AAC from ffmpeg made Opus (for WebRTC), Opus made AAC (for FLV).

Input is what the demuxer makes of TS written by ffmpeg; output is checked
with libavcodec's own decoders, which players use.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace

import av
import pytest
from harness.programs import require

from ghostream.media.demux import MediaPacket, TsDemuxer
from ghostream.media.reencode import AAC, OPUS, RATE, AudioCodec, AudioReencoder, UndecodableAudio

SECONDS = 1


def demuxed(tmp_path, *options: str) -> list[MediaPacket]:
    require("ffmpeg")
    path = tmp_path / "audio.ts"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", str(SECONDS),
         *options, "-f", "mpegts", str(path)],
        check=True,
    )  # fmt: skip
    return TsDemuxer().feed(path.read_bytes())


def decoded_samples(codec: AudioCodec, packets: list[MediaPacket]) -> int:
    decoder = av.CodecContext.create("libopus" if codec is OPUS else "aac", "r")
    decoder.extradata = codec.track.extradata
    frames = [f for p in packets for f in decoder.decode(av.Packet(p.data))]
    assert all(f.sample_rate == RATE and f.layout.nb_channels == 2 for f in frames)
    return sum(f.samples for f in frames)


@pytest.mark.parametrize(
    ("source", "codec"),
    [(["-c:a", "aac", "-ac", "1"], OPUS), (["-c:a", "libopus", "-ar", "48000"], AAC)],
    ids=["AAC to Opus", "Opus to AAC"],
)
def test_a_stream_is_reencoded_on_its_own_timeline(tmp_path, source, codec) -> None:
    packets = demuxed(tmp_path, *source)
    reencoder = AudioReencoder(codec)
    out = [made for packet in packets for made in reencoder.reencode(packet)]
    assert {p.track for p in out} == {codec.track}
    # All of it, give or take the frames codecs hold back or prime with, at the frame spacing.
    samples = decoded_samples(codec, out)
    assert abs(samples - SECONDS * RATE) <= 4 * codec.frame_samples
    step = codec.frame_samples * 90000 // RATE
    gaps = {b.pts - a.pts for a, b in zip(out, out[1:], strict=False)}
    assert gaps <= {step, step + 1}
    assert abs(out[0].pts - packets[0].pts) <= 2 * step


def test_after_a_gap_the_timeline_follows_the_input_again(tmp_path) -> None:
    packets = demuxed(tmp_path, "-c:a", "aac")
    reencoder = AudioReencoder(OPUS)
    before = [made for packet in packets[:20] for made in reencoder.reencode(packet)]
    # The same audio again, ten seconds later (packets lost, or a publisher's clock jumped).
    later = [replace(p, pts=p.pts + 900000, dts=p.dts + 900000) for p in packets[20:]]
    after = [made for packet in later for made in reencoder.reencode(packet)]
    assert before and after
    # What the encoder still held comes out first; then the audio is where the input says.
    assert abs(after[-1].pts - later[-1].pts) <= 4 * 1800
    assert [p for p in after if p.pts > before[-1].pts + 1800][0].pts >= later[0].pts - 2


def test_a_packet_the_decoder_refuses_is_an_error_and_the_next_one_decodes(tmp_path) -> None:
    packets = demuxed(tmp_path, "-c:a", "aac")
    reencoder = AudioReencoder(OPUS)
    reencoder.reencode(packets[0])
    with pytest.raises(UndecodableAudio):
        reencoder.reencode(replace(packets[1], data=b"\xff" * 40))
    out = [made for packet in packets[2:] for made in reencoder.reencode(packet)]
    assert decoded_samples(OPUS, out) > 0
