"""Which H.264 profile a WHEP answer names, for the offers browsers really send."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ghostream.media.demux import START_CODE, Track
from ghostream.media.properties import VideoProperties
from ghostream.webrtc.codecs import (
    h264_preferences,
    h264_profile,
    offer_carries,
    passthrough_obstacle,
)
from ghostream.webrtc.refusals import WebRtcError

# Chromium 156's offer on Debian: no High profile, High 4:4:4 outside 96-127.
CHROMIUM = "\r\n".join(
    f"a=fmtp:{pt} level-asymmetry-allowed=1;packetization-mode={mode};profile-level-id={pli}"
    for pt, mode, pli in [
        (102, 1, "42001f"), (104, 0, "42001f"), (108, 1, "42e01f"), (114, 0, "42e01f"),
        (116, 1, "4d001f"), (39, 0, "4d001f"), (41, 1, "f4001f"), (43, 0, "f4001f"),
    ]
)  # fmt: skip
WITH_HIGH = (
    CHROMIUM
    + "\r\na=fmtp:118 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f"
)


def video(profile_level_id: str) -> Track:
    sps = bytes([0x67]) + bytes.fromhex(profile_level_id) + b"\xac\xd9"
    return Track("video", "h264", START_CODE + sps + START_CODE + b"\x68\xeb\xe3\xcb")


def answered(profile_level_id: str, offer: str) -> str:
    return h264_profile(
        h264_preferences(video(profile_level_id), offer)[0].parameters["profile-level-id"]
    )


@pytest.mark.parametrize(
    ("stream", "offer", "expected"),
    [
        ("640028", WITH_HIGH, "high"),
        ("640028", CHROMIUM, "main"),
        ("4d401f", CHROMIUM, "main"),
        ("42c01e", CHROMIUM, "constrained-baseline"),
        ("42001e", CHROMIUM, "baseline"),
    ],
)
def test_the_answer_names_the_streams_profile_or_a_superset(stream, offer, expected) -> None:
    assert answered(stream, offer) == expected


def test_an_offer_without_usable_h264_is_refused() -> None:
    offer = "a=fmtp:41 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=f4001f"
    with pytest.raises(WebRtcError) as refused:
        h264_preferences(video("640028"), offer)
    assert refused.value.status == 406


def test_profile_names() -> None:
    assert h264_profile("42e01f") == h264_profile("42c01e") == "constrained-baseline"
    assert h264_profile("4d001f") == "main" and h264_profile("f4001f") == "high-444"


def described(**changes) -> VideoProperties:
    plain = VideoProperties("h264", "High", "3.1", 1280, 720, "4:2:0", 8, False, 30.0)
    return replace(plain, **changes)


@pytest.mark.parametrize(
    ("codec", "video", "reason"),
    [
        ("h264", described(), None),
        ("h264", None, None),
        ("h264", described(b_frames=True), "B-frames"),
        ("hevc", None, "HEVC"),
        ("h264", described(chroma="4:2:2", bit_depth=10), "4:2:2 10-bit video"),
        ("h264", described(bit_depth=10), "4:2:0 10-bit video"),
    ],
)
def test_what_keeps_browsers_from_the_video_as_it_is(codec, video, reason) -> None:
    obstacle = passthrough_obstacle(codec, video)
    assert (obstacle.reason if obstacle else None) == reason
    assert obstacle is None or "OBS" in obstacle.fix


def test_an_offer_carries_what_a_listed_profile_decodes() -> None:
    assert offer_carries(video("640028"), CHROMIUM)
    baseline_only = (
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
    )
    assert offer_carries(video("42e01f"), baseline_only)
    assert not offer_carries(video("640028"), baseline_only)
