"""Which H.264 profile a WHEP answer names, for the offers browsers really send."""

from __future__ import annotations

import pytest

from ghostream.media.demux import START_CODE, Track
from ghostream.outputs.webrtc.codecs import h264_preferences, h264_profile
from ghostream.outputs.webrtc.errors import WebRtcError

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
