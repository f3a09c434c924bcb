"""LL-HLS packaging without I/O: part and segment cuts, playlists, delta updates, MP4 boxes."""

from __future__ import annotations

import itertools
import re
import struct
import subprocess

from harness.media import signal_source, write_ts
from harness.programs import require

from ghostream.media.bitstream import sample_units, video_config
from ghostream.media.demux import MediaPacket, Track, TsDemuxer
from ghostream.outputs.llhls.playlist import (
    Variant,
    media_playlist,
    multivariant_playlist,
    parse_name,
)
from ghostream.outputs.llhls.timeline import Timeline

# x264's SPS and PPS for 320x180, constrained baseline, level 1.2.
SPS = bytes.fromhex("6742c00cda05067e7c0440000003004000000ca3c50aa8")
PPS = bytes.fromhex("68ce0fc8")
START = b"\x00\x00\x00\x01"
VIDEO = Track("video", "h264", START + SPS + START + PPS)
AUDIO = Track("audio", "aac", b"\x11\x90", sample_rate=48000, channels=2)
FRAME = 3600  # 25 fps at 90 kHz


def frames(count: int, *, gop: int = 25, video: Track = VIDEO, start: int = 0) -> list[MediaPacket]:
    """Video at 25 fps and an AAC frame after every video frame, as the demuxer yields them."""
    packets = []
    for n in range(count):
        dts = start + n * FRAME
        keyframe = n % gop == 0
        head = video.extradata if keyframe else b""
        body = head + START + (b"\x65" if keyframe else b"\x41") + bytes(20)
        packets.append(MediaPacket(video, body, dts, dts, keyframe))
        packets.append(MediaPacket(AUDIO, bytes(10), dts, dts, True))
    return packets


def fed(packets: list[MediaPacket], **options: float) -> Timeline:
    timeline = Timeline(**options)
    timeline.begin([VIDEO, AUDIO])
    for packet in packets:
        timeline.add(packet, 1_700_000_000.0 + packet.dts / 90000)
    return timeline


def boxes(data: bytes) -> list[bytes]:
    kinds = []
    while data:
        size, kind = struct.unpack(">I4s", data[:8])
        kinds.append(kind)
        data = data[size:]
    return kinds


def test_sps_gives_size_and_codec_string() -> None:
    config = video_config(VIDEO)
    assert (config.width, config.height) == (320, 180)
    assert config.codec_string == "avc1.42c00c"
    assert config.config[:4] == bytes([1, 0x42, 0xC0, 0x0C])


def test_samples_are_length_prefixed_without_parameter_sets() -> None:
    unit = START + SPS + START + PPS + START + b"\x65\x01\x02"
    assert sample_units("h264", unit) == b"\x00\x00\x00\x03\x65\x01\x02"


def test_parts_fill_the_part_target_and_segments_start_on_keyframes() -> None:
    timeline = fed(frames(25 * 5 + 1))
    complete = [s for s in timeline.segments if s.complete]
    # Keyframes every second, segments of two seconds, parts of five frames.
    assert [round(s.duration, 3) for s in complete] == [2.0, 2.0]
    for segment in complete:
        assert [round(p.duration, 3) for p in segment.parts] == [0.2] * 10
        assert [p.independent for p in segment.parts] == [True] + [False] * 4 + [True] + [False] * 4
        assert boxes(segment.parts[0].data) == [b"moof", b"mdat"]
    assert timeline.init is not None
    assert boxes(timeline.init.data) == [b"ftyp", b"moov"]


def test_a_gop_longer_than_the_segment_target_makes_one_segment() -> None:
    timeline = fed(frames(25 * 7 + 1, gop=75))
    assert [round(s.duration, 3) for s in timeline.segments if s.complete] == [3.0, 3.0]
    assert timeline.target_duration == 3


def test_media_playlist_lists_parts_hint_and_server_control() -> None:
    timeline = fed(frames(25 * 5 + 3))
    text = media_playlist(timeline)
    assert text.startswith("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n")
    assert "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12,PART-HOLD-BACK=0.6" in text
    assert "#EXT-X-PART-INF:PART-TARGET=0.2\n" in text
    assert text.count("#EXTINF:2,") == 2
    assert text.count("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:2") == 3
    run = timeline.run
    assert f'#EXT-X-PART:DURATION=0.2,URI="part-{run}-2-0.m4s",INDEPENDENT=YES\n' in text
    # Frames 100 to 124 made five parts of segment 2; 125 to 127 are the open part.
    assert text.endswith(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-{run}-2-5.m4s"\n')
    assert timeline.has(2, 4) and not timeline.has(2, 5) and timeline.has(1, None)


def test_delta_update_skips_segments_older_than_can_skip_until() -> None:
    timeline = fed(frames(25 * 20 + 1))
    full = media_playlist(timeline)
    delta = media_playlist(timeline, skip=True)
    assert "#EXT-X-MEDIA-SEQUENCE:0\n" in full and "#EXT-X-SKIP" not in full
    # Ten complete segments of 2 s: the newest six cover CAN-SKIP-UNTIL (12 s).
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n" in delta
    assert "#EXT-X-MEDIA-SEQUENCE:0\n" in delta
    assert re.findall(r"seg-\w+-(\d+)\.m4s", delta) == [str(n) for n in range(4, 10)]
    assert delta.count("#EXT-X-MAP") == 1


def test_window_is_bounded() -> None:
    timeline = fed(frames(25 * 40 + 1), window=5)
    assert sum(1 for s in timeline.segments if s.complete) == 5
    assert "#EXT-X-MEDIA-SEQUENCE:15\n" in media_playlist(timeline)


def test_new_track_starts_a_new_init_and_a_discontinuity() -> None:
    other = Track("video", "h264", VIDEO.extradata + START + PPS)
    packets = frames(25 * 2 + 1) + frames(25 * 2 + 1, video=other, start=0)
    timeline = fed(packets)
    text = media_playlist(timeline)
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    run = timeline.run
    assert f'#EXT-X-MAP:URI="init-{run}-0.mp4"' in text
    assert f'#EXT-X-MAP:URI="init-{run}-1.mp4"' in text
    assert sorted(timeline.inits()) == [0, 1]


def test_names_parse_strictly() -> None:
    assert parse_name("part-1a2b-3-4.m4s") is not None
    assert parse_name("seg-1a2b-3.m4s") is not None
    assert parse_name("init-1a2b-0.mp4") is not None
    for bad in ("part-1a2b-3.m4s", "seg-1a2b-3-4.m4s", "init-1a2b-0.m4s", "seg-XY-1.m4s"):
        assert parse_name(bad) is None


def test_a_jump_in_timestamps_becomes_a_discontinuity() -> None:
    # A reader that lagged skips ahead to a later keyframe: ten seconds are missing.
    packets = frames(25 * 2 + 1) + frames(25 * 2 + 1, start=25 * 12 * FRAME)
    text = media_playlist(fed(packets))
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    assert text.count("#EXT-X-MAP") == 1


def test_a_part_waits_for_the_audio_up_to_its_end() -> None:
    video = [p for p in frames(7) if p.track.kind == "video"]
    audio = [p for p in frames(7) if p.track.kind == "audio"]
    timeline = Timeline()
    timeline.begin([VIDEO, AUDIO])
    # The sixth frame closes the first part, but its audio has not come yet.
    assert not any(timeline.add(packet, 0.0) for packet in video[:6])
    assert timeline.last_part() is None
    assert not any(timeline.add(packet, 0.0) for packet in audio[:5])
    assert timeline.add(audio[5], 0.0)
    assert timeline.last_part() == (0, 0)


def test_multivariant_playlist_lists_variants_by_bandwidth() -> None:
    init = fed(frames(26)).init
    assert init is not None
    text = multivariant_playlist(
        [Variant("media.m3u8", 900_000, init), Variant("../cam@480p/media.m3u8", 1_500_000, init)]
    )
    assert text == (
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=1500000,CODECS="avc1.42c00c,mp4a.40.2",RESOLUTION=320x180\n'
        "../cam@480p/media.m3u8\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=900000,CODECS="avc1.42c00c,mp4a.40.2",RESOLUTION=320x180\n'
        "media.m3u8\n"
    )


def test_b_frames_keep_their_presentation_times(tmp_path) -> None:
    """x264's default B-frames through the packager: ffprobe reads back every frame's time."""
    require("ffprobe")
    source = signal_source(rate=30, preset="veryfast", audio=None)
    data = write_ts(tmp_path / "source.ts", 3, source)
    packets = [p for p in TsDemuxer().feed(data) if p.track.kind == "video"]
    assert any(b.pts < a.pts for a, b in itertools.pairwise(packets)), "no B-frames to test"
    timeline = Timeline(segment_target=1.0)
    for packet in packets:
        timeline.add(packet, 1_700_000_000.0 + packet.dts / 90000)
    timeline.flush()
    packaged = tmp_path / "packaged.mp4"
    packaged.write_bytes(timeline.init.data + b"".join(s.data for s in timeline.segments))
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=pts,dts",
         "-of", "csv=p=0", str(packaged)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    read = [tuple(int(v) for v in line.split(",")) for line in probe.stdout.split()]
    assert read == [(p.pts, p.dts) for p in packets]
