"""The copy WebRTC viewers get of a B-frame stream, made by the transcoder's own decode/encode."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from harness.media import signal_source, write_ts

from ghostream.media.demux import TsDemuxer
from ghostream.media.properties import PropertiesTracker
from ghostream.outputs.transcode import WEBRTC_PROFILE, SourceTranscoder, Variant, VariantEncoder


def test_the_copy_has_no_b_frames_and_keeps_size_rate_and_keyframes(tmp_path: Path) -> None:
    source = signal_source("322x182", rate=30, preset="veryfast", gop=20, audio=None)
    data = write_ts(tmp_path / "source.ts", 3, source)
    packets = TsDemuxer().feed(data)
    encoder = VariantEncoder(WEBRTC_PROFILE, 322, 182, 30)
    variant = Variant(encoder, None, ExitStack())  # type: ignore[arg-type]
    transcoder = SourceTranscoder("demo", None, None, always=False)  # type: ignore[arg-type]
    chunks = [chunk for packet in packets for chunk in transcoder._transcode(packet, [variant])[0]]
    encoder.close()
    chunks += encoder.sink.take()

    copied = TsDemuxer().feed(b"".join(chunks))
    tracker = PropertiesTracker()
    for packet in copied:
        tracker.observe(packet)
    video = tracker.current
    assert video is not None and video.profile == "Constrained Baseline"
    assert not video.b_frames and (video.width, video.height, video.frame_rate) == (322, 182, 30)
    # Keyframes where the source has them, so the copy's viewers start where others do.
    assert {p.pts for p in copied if p.keyframe} == {p.pts for p in packets if p.keyframe}
