"""The RTMP core driven as an encoder would, with a fake clock: every reply and timeout exactly.

The client side here is written from the spec (handshake blocks, chunk
headers, AMF0 commands); the interop tests check the same core against
ffmpeg, GStreamer and nginx-rtmp.
"""

from __future__ import annotations

import struct

import pytest

from ghostream.rtmp import RtmpError, amf
from ghostream.rtmp.chunks import ChunkReader, Message, write_message
from ghostream.rtmp.session import (
    IDLE_TIMEOUT,
    SETUP_TIMEOUT,
    WINDOW,
    Media,
    PublishEnded,
    PublishRequested,
    RtmpSession,
    State,
)

C1 = bytes(range(256)) * 6
GREETED = b"\x03" + C1 + C1
PUBLISH = amf.encode(["publish", 1.0])


class Client:
    """An encoder's side: sends commands, reads what the server answers."""

    def __init__(self) -> None:
        self.session = RtmpSession(0.0, bytes(1528))
        self.replies = ChunkReader()
        self.now = 0.0
        self.transaction = 0

    def handshake(self) -> bytes:
        assert self.session.receive(b"\x03" + C1, self.now) == []
        answer = self.session.data_to_send()
        assert answer[0] == 3 and len(answer) == 1 + 2 * 1536
        # S2 echoes C1: the simple handshake.
        assert answer[1 + 1536 :] == C1
        return answer

    def send(self, data: bytes) -> list:
        return self.session.receive(data, self.now)

    def command(self, name: str, *values: amf.Value, stream_id: int = 0) -> list:
        self.transaction += 1
        body = amf.encode([name, float(self.transaction), *values])
        return self.send(write_message(Message(20, stream_id, 0, body), 3, 128))

    def received(self) -> list[Message]:
        messages = []
        data = self.session.data_to_send()
        while True:
            batch = self.replies.feed(data)
            data = b""
            if not batch:
                return messages
            for message in batch:
                if message.type == 1:
                    self.replies.set_chunk_size(int.from_bytes(message.payload, "big"))
            messages += batch

    def commands(self) -> list[list[amf.Value]]:
        return [amf.decode(m.payload) for m in self.received() if m.type == 20]

    def publish(self, key: str = "demo:demo") -> list:
        self.handshake()
        assert self.send(C1) == []
        self.command("connect", {"app": "live", "tcUrl": "rtmp://localhost/live"})
        self.command("releaseStream", None, key)
        self.command("FCPublish", None, key)
        self.command("createStream", None)
        return self.command("publish", None, key, "live", stream_id=1)


def test_connect_to_publish_answers_every_command_as_encoders_expect() -> None:
    client = Client()
    events = client.publish()
    assert events == [PublishRequested("live", "demo:demo")]
    messages = client.received()
    controls = {m.type: m.payload for m in messages if m.type in (1, 5, 6)}
    assert controls[5] == struct.pack(">I", WINDOW)
    assert int.from_bytes(controls[1], "big") == 4096
    results = [amf.decode(m.payload) for m in messages if m.type == 20]
    assert [r[:2] for r in results] == [["_result", float(n)] for n in (1, 2, 3, 4)]
    assert results[0][3]["code"] == "NetConnection.Connect.Success"
    # createStream gives the message stream the publish then uses.
    assert results[3][3] == 1.0
    assert client.session.state is State.DECIDING
    client.session.accept("publishing demo")
    status = [m for m in client.received() if m.type == 20]
    assert status[0].stream_id == 1
    assert amf.decode(status[0].payload)[3]["code"] == "NetStream.Publish.Start"


def test_media_becomes_events_and_fcunpublish_ends_the_publish() -> None:
    client = Client()
    client.publish()
    client.session.accept("ok")
    video = write_message(Message(9, 1, 40, b"\x17\x01\x00\x00\x00"), 6, 128)
    audio = write_message(Message(8, 1, 41, b"\xaf\x01\x21"), 4, 128)
    assert client.send(video + audio) == [
        Media("video", 40, b"\x17\x01\x00\x00\x00"),
        Media("audio", 41, b"\xaf\x01\x21"),
    ]
    assert client.command("FCUnpublish", None, "demo:demo") == [
        PublishEnded("the publisher sent FCUnpublish")
    ]


def test_a_refusal_carries_the_description_the_encoder_shows() -> None:
    client = Client()
    client.publish("demo:wrong")
    client.received()
    client.session.refuse("NetStream.Publish.Unauthorized", "wrong stream key")
    (status,) = client.commands()
    assert status[0] == "onStatus"
    assert status[3] == {
        "level": "error",
        "code": "NetStream.Publish.Unauthorized",
        "description": "wrong stream key",
    }
    assert client.session.closed


def test_pings_are_answered_and_every_window_acknowledged() -> None:
    client = Client()
    client.publish()
    client.session.accept("ok")
    client.received()
    client.send(write_message(Message(4, 0, 0, struct.pack(">HI", 6, 1234)), 2, 128))
    (pong,) = client.received()
    assert (pong.type, pong.payload) == (4, struct.pack(">HI", 7, 1234))
    # Big video messages until a window's worth has come in.
    body = b"\x17\x01\x00\x00\x00" + bytes(60_000)
    total = client.session.received
    while total < WINDOW:
        client.send(write_message(Message(9, 1, 0, body), 6, 128))
        total = client.session.received
    acks = [m for m in client.received() if m.type == 3]
    assert len(acks) == 1
    assert int.from_bytes(acks[0].payload, "big") == total


def test_a_peer_must_publish_within_the_setup_timeout() -> None:
    client = Client()
    client.handshake()
    assert client.session.deadline == SETUP_TIMEOUT
    client.session.check_time(SETUP_TIMEOUT - 0.001)
    with pytest.raises(RtmpError, match="no publish command"):
        client.session.check_time(SETUP_TIMEOUT)


def test_a_silent_publisher_is_gone_after_the_idle_timeout() -> None:
    client = Client()
    client.publish()
    # Deciding (the throttle may hold a refusal for a minute) has no deadline.
    assert client.session.deadline is None
    client.session.accept("ok")
    client.now = 30.0
    client.send(write_message(Message(8, 1, 0, b"\xaf\x01"), 4, 128))
    assert client.session.deadline == 30.0 + IDLE_TIMEOUT
    with pytest.raises(RtmpError, match="no data"):
        client.session.check_time(30.0 + IDLE_TIMEOUT)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x06" + C1, "version 6"),
        (GREETED + write_message(Message(9, 1, 0, b"\x17"), 6, 128), "before the publish"),
        (GREETED + write_message(Message(20, 0, 0, PUBLISH), 3, 128), "before connect"),
        (GREETED + write_message(Message(22, 0, 0, b""), 3, 128), "aggregate"),
    ],
    ids=["encrypted", "media first", "publish first", "aggregate"],
)  # fmt: skip
def test_what_cannot_be_served_is_a_typed_error(data: bytes, message: str) -> None:
    with pytest.raises(RtmpError, match=message):
        RtmpSession(0.0, bytes(1528)).receive(data, 0.0)


def test_playing_is_refused_with_a_reason() -> None:
    client = Client()
    client.handshake()
    client.send(C1)
    client.command("connect", {"app": "live"})
    client.command("createStream", None)
    client.received()
    client.command("play", None, "demo", stream_id=1)
    (status,) = client.commands()
    assert status[3]["code"] == "NetStream.Play.Failed"
    assert client.session.closed
