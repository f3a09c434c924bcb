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
# Bounds on what a peer sends (the whole id is at most 512 bytes in SRT).
MAX_FIELDS = 16
MAX_VALUE = 256


class Mode(Enum):
    PUBLISH = "publish"
    WATCH = "watch"


class InvalidStreamId(ValueError):
    """A stream id we cannot serve; the message holds none of the peer's text (no password)."""


@dataclass(frozen=True, slots=True)
class StreamRequest:
    mode: Mode
    stream_id: str
    password: str = ""
    user: str = ""

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
        if len(password) > MAX_VALUE:
            raise InvalidStreamId(f"the password is longer than {MAX_VALUE} characters")
        return _checked(StreamRequest(Mode.PUBLISH, name.lower(), password))
    return _checked(StreamRequest(Mode.WATCH, name.lower()))


def publish_request(stream_id: str, password: str) -> StreamRequest:
    """A publish named outside the SRT stream id (WHIP: the URL and a Bearer token)."""
    return _checked(StreamRequest(Mode.PUBLISH, stream_id.lower(), password))


def _parse_access_control(text: str) -> StreamRequest:
    fields: dict[str, str] = {}
    items = text.split(",")
    if len(items) > MAX_FIELDS:
        raise InvalidStreamId(f"the access-control id has more than {MAX_FIELDS} fields")
    key = ""
    for item in items:
        if len(item) > MAX_VALUE:
            raise InvalidStreamId(f"an access-control field is longer than {MAX_VALUE} characters")
        name, equals, value = item.partition("=")
        if equals:
            key = name.strip()
            fields[key] = value
        elif key:
            # A comma inside a value (`s=pass,word`): the item continues the previous field.
            fields[key] += "," + item
        else:
            raise InvalidStreamId("the access-control id must start with a key=value field")
    mode_name = fields.get("m", "request")
    if mode_name == "request":
        mode = Mode.WATCH
    elif mode_name == "publish":
        mode = Mode.PUBLISH
    else:
        raise InvalidStreamId("only the modes request and publish are supported")
    if fields.get("t", "stream") != "stream":
        raise InvalidStreamId("only the type stream is supported")
    stream_id, password = fields.get("r", "").lower(), fields.get("s", "")
    return _checked(StreamRequest(mode, stream_id, password, fields.get("u", "")))


def _checked(request: StreamRequest) -> StreamRequest:
    if request.mode is Mode.WATCH and not request.stream_id:
        return request
    if not STREAM_ID.fullmatch(request.stream_id):
        raise InvalidStreamId("a stream id must be 1-128 of a-z 0-9 _ . @ -")
    if request.mode is Mode.PUBLISH and "@" in request.stream_id:
        raise InvalidStreamId("ids with @ are quality variants made by the server")
    return request
