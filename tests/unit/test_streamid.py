"""Stream ids as OBS, ffmpeg, ffplay and access-control players send them."""

from __future__ import annotations

import pytest

from ghostream.streamid import InvalidStreamId, Mode, StreamRequest, parse_stream_id


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("demo:secret", StreamRequest(Mode.PUBLISH, "demo", "secret")),
        ("Demo:pa:ss", StreamRequest(Mode.PUBLISH, "demo", "pa:ss")),
        ("demo", StreamRequest(Mode.WATCH, "demo")),
        ("demo@480p", StreamRequest(Mode.WATCH, "demo@480p")),
        ("stream.example.com:pw", StreamRequest(Mode.PUBLISH, "stream.example.com", "pw")),
        ("", StreamRequest(Mode.WATCH, "")),
        ("#!::r=demo,m=request", StreamRequest(Mode.WATCH, "demo")),
        ("#!::r=demo", StreamRequest(Mode.WATCH, "demo")),
        ("#!::r=demo,m=publish,u=ann,s=pw", StreamRequest(Mode.PUBLISH, "demo", "pw", "ann")),
        ("#!::r=demo,m=publish,s=pass,word", StreamRequest(Mode.PUBLISH, "demo", "pass,word")),
    ],
)
def test_forms_users_send(raw: str, expected: StreamRequest) -> None:
    assert parse_stream_id(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "demo@720p:pw",
        "a b",
        ":pw",
        "../etc:pw",
        "x" * 129,
        "#!::r=demo,m=bidirectional",
        "#!::r=demo,t=file",
        "#!::r",
        "#!::m=publish,s=pw",
    ],
)
def test_ids_we_cannot_serve_are_refused(raw: str) -> None:
    with pytest.raises(InvalidStreamId):
        parse_stream_id(raw)


def test_empty_id_watches_the_default_stream() -> None:
    assert parse_stream_id("").is_default
    assert not parse_stream_id("demo").is_default


@pytest.mark.parametrize(
    "raw",
    [
        "#!::" + ",".join(f"x{n}=1" for n in range(17)),
        "#!::r=demo,m=publish,s=" + "p" * 257,
        "demo:" + "p" * 257,
    ],
)
def test_oversized_ids_are_refused(raw: str) -> None:
    with pytest.raises(InvalidStreamId):
        parse_stream_id(raw)


@pytest.mark.parametrize(
    "raw",
    ["#!::r=demo,m=x-pass,s=word", "#!::r=UPPER-pass word,m=publish", "#!::pass,r=demo"],
)
def test_refusals_do_not_quote_the_peer(raw: str) -> None:
    with pytest.raises(InvalidStreamId) as refused:
        parse_stream_id(raw)
    assert "pass" not in str(refused.value).lower()
