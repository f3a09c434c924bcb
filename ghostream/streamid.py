"""What an SRT stream id asks for: publish a stream, or watch one.

Existing users publish with the stream key `id:password` and watch with `id`;
players that follow the SRT access-control convention send
`#!::r=id,m=request` or `#!::r=id,m=publish,s=password` instead.  An empty
stream id (VLC cannot send one) watches the default stream.  Ids are
lower-cased so that an OBS key typed as `Demo:pw` publishes the page `/demo`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

# Letters, digits, `@`, `_`, `-` as in player URLs, plus dots for domain ids
# (web.oneStreamPerDomain).
STREAM_ID = re.compile(r"[a-z0-9_.@-]{1,128}")
ACCESS_CONTROL_PREFIX = "#!::"


class Mode(Enum):
    PUBLISH = "publish"
    WATCH = "watch"


class InvalidStreamId(ValueError):
    """A stream id we cannot serve; the message is safe to log (no password)."""


@dataclass(frozen=True, slots=True)
class StreamRequest:
    mode: Mode
    stream_id: str
    password: str = ""

    @property
    def is_default(self) -> bool:
        return self.mode is Mode.WATCH and not self.stream_id


def parse_stream_id(raw: str) -> StreamRequest:
    if raw.startswith(ACCESS_CONTROL_PREFIX):
        return _parse_access_control(raw[len(ACCESS_CONTROL_PREFIX) :])
    if not raw:
        return StreamRequest(Mode.WATCH, "")
    name, colon, password = raw.partition(":")
    if colon:
        return _checked(StreamRequest(Mode.PUBLISH, name.lower(), password))
    return _checked(StreamRequest(Mode.WATCH, name.lower()))


def publish_request(stream_id: str, password: str) -> StreamRequest:
    """A publish named outside the SRT stream id (WHIP: the URL and a Bearer token)."""
    return _checked(StreamRequest(Mode.PUBLISH, stream_id.lower(), password))


def _parse_access_control(text: str) -> StreamRequest:
    fields: dict[str, str] = {}
    for item in text.split(","):
        key, equals, value = item.partition("=")
        if not equals:
            raise InvalidStreamId(f"access-control item {key!r} has no value")
        fields[key.strip()] = value
    mode_name = fields.get("m", "request")
    if mode_name == "request":
        mode = Mode.WATCH
    elif mode_name == "publish":
        mode = Mode.PUBLISH
    else:
        raise InvalidStreamId(f"mode {mode_name!r} is not supported (request or publish)")
    if fields.get("t", "stream") != "stream":
        raise InvalidStreamId(f"type {fields['t']!r} is not supported (stream)")
    return _checked(StreamRequest(mode, fields.get("r", "").lower(), fields.get("s", "")))


def _checked(request: StreamRequest) -> StreamRequest:
    if request.mode is Mode.WATCH and not request.stream_id:
        return request
    if not STREAM_ID.fullmatch(request.stream_id):
        raise InvalidStreamId(f"stream id {request.stream_id!r} must be 1-128 of a-z 0-9 _ . @ -")
    if request.mode is Mode.PUBLISH and "@" in request.stream_id:
        raise InvalidStreamId("ids with @ are quality variants made by the server")
    return request
