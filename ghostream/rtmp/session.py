"""One RTMP connection, sans I/O: bytes and the time in; bytes to send, events and a deadline out.

The commands an encoder sends to publish are always the same few:
`connect`, `releaseStream`/`FCPublish`, `createStream`, `publish`, and
at the end `FCUnpublish`/`deleteStream`.  The session answers each the
way ffmpeg, OBS, GStreamer and nginx-rtmp expect (`_result` with the
transaction id, `onStatus` on the message stream), and stops at `publish`
with a `PublishRequested` event until the caller calls `accept` or
`refuse`, whose description the encoder shows its user.

It also acknowledges what it received (every window of bytes), answers
pings, and keeps two clocks: a peer must reach `publish` within
`SETUP_TIMEOUT` of connecting, and a publisher that sends nothing for
`IDLE_TIMEOUT` is gone.  Anything malformed raises `RtmpError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum, auto

from ghostream.rtmp import RtmpError, amf
from ghostream.rtmp.chunks import ChunkReader, Message, write_message
from ghostream.rtmp.greeting import Greeting

SETUP_TIMEOUT = 10.0
IDLE_TIMEOUT = 10.0
WINDOW = 2_500_000
CHUNK_SIZE = 4096
STREAM_ID = 1
# Message types.
SET_CHUNK_SIZE = 1
ABORT = 2
ACKNOWLEDGEMENT = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
COMMAND_AMF3 = 17
DATA = 18
COMMAND = 20
AGGREGATE = 22
# User control events.
STREAM_BEGIN = 0
PING_REQUEST = 6
PING_RESPONSE = 7
# Chunk streams of what we send.
CONTROL_CHUNKS = 2
COMMAND_CHUNKS = 3
STATUS_CHUNKS = 5


class State(Enum):
    GREETING = auto()
    CONNECTING = auto()
    CONNECTED = auto()
    DECIDING = auto()
    PUBLISHING = auto()
    CLOSED = auto()


@dataclass(frozen=True, slots=True)
class PublishRequested:
    """The peer asks to publish `name` (the stream key) in the application `app`."""

    app: str
    name: str


@dataclass(frozen=True, slots=True)
class Media:
    """One audio or video FLV tag body, with its timestamp in milliseconds."""

    kind: str
    timestamp: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class PublishEnded:
    reason: str


Event = PublishRequested | Media | PublishEnded


class RtmpSession:
    def __init__(self, now: float, random_block: bytes) -> None:
        self.state = State.GREETING
        self.app = ""
        self.received = 0
        self._greeting = Greeting(random_block)
        self._reader = ChunkReader()
        self._out = bytearray()
        self._acknowledged = 0
        self._setup_deadline = now + SETUP_TIMEOUT
        self._last_data = now

    # The caller's side.

    def receive(self, data: bytes, now: float) -> list[Event]:
        """The events `data` brings; RtmpError if it is not RTMP."""
        if self.state is State.CLOSED:
            return []
        self._last_data = now
        self.received += len(data)
        if self.state is State.GREETING:
            reply, data = self._greeting.feed(data)
            self._out += reply
            if not self._greeting.done:
                return []
            self.state = State.CONNECTING
        events: list[Event] = []
        messages = self._reader.feed(data)
        while messages:
            for message in messages:
                self._handle(message, events)
            messages = self._reader.feed(b"") if messages[-1].type == SET_CHUNK_SIZE else []
        if self.received - self._acknowledged >= WINDOW:
            self._acknowledged = self.received
            self._control(ACKNOWLEDGEMENT, struct.pack(">I", self.received & 0xFFFFFFFF))
        return events

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def deadline(self) -> float | None:
        if self.state in (State.GREETING, State.CONNECTING, State.CONNECTED):
            return self._setup_deadline
        if self.state is State.PUBLISHING:
            return self._last_data + IDLE_TIMEOUT
        return None

    def check_time(self, now: float) -> None:
        """RtmpError once the deadline has passed."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return
        if self.state is State.PUBLISHING:
            raise RtmpError(f"no data for {IDLE_TIMEOUT:.0f} s")
        raise RtmpError(f"no publish command within {SETUP_TIMEOUT:.0f} s of connecting")

    def accept(self, description: str) -> None:
        if self.state is not State.DECIDING:
            raise RuntimeError("no publish to accept")
        self.state = State.PUBLISHING
        self._control(USER_CONTROL, struct.pack(">HI", STREAM_BEGIN, STREAM_ID))
        self._status("status", "NetStream.Publish.Start", description)

    def refuse(self, code: str, description: str) -> None:
        """Tell the peer why (the encoder shows `description`); the connection should close."""
        self._status("error", code, description)
        self.state = State.CLOSED

    # Messages.

    def _handle(self, message: Message, events: list[Event]) -> None:
        kind = message.type
        payload = message.payload
        if kind == SET_CHUNK_SIZE:
            if len(payload) < 4:
                raise RtmpError("Set Chunk Size message is too short")
            self._reader.set_chunk_size(int.from_bytes(payload[:4], "big") & 0x7FFFFFFF)
        elif kind == ABORT:
            if len(payload) >= 4:
                self._reader.abort(int.from_bytes(payload[:4], "big"))
        elif kind == USER_CONTROL:
            if len(payload) >= 6 and int.from_bytes(payload[:2], "big") == PING_REQUEST:
                self._control(USER_CONTROL, struct.pack(">H", PING_RESPONSE) + payload[2:6])
        elif kind in (AUDIO, VIDEO):
            if self.state is not State.PUBLISHING:
                raise RtmpError("media sent before the publish began")
            kind_name = "audio" if kind == AUDIO else "video"
            events.append(Media(kind_name, message.timestamp, payload))
        elif kind in (COMMAND, COMMAND_AMF3):
            body = payload[1:] if kind == COMMAND_AMF3 else payload
            self._command(amf.decode(body), events)
        elif kind == AGGREGATE:
            raise RtmpError("aggregate messages are not supported; send audio and video tags")
        # Acknowledgements, window and bandwidth sizes, metadata and shared objects
        # change nothing for a server that only receives.

    def _command(self, values: list[amf.Value], events: list[Event]) -> None:
        if len(values) < 2 or not isinstance(values[0], str):
            raise RtmpError("a command message without a command name")
        name, transaction = values[0], values[1]
        if not isinstance(transaction, float):
            raise RtmpError(f"command {name[:32]!r} has no transaction id")
        arguments = values[2:]
        if name == "connect":
            self._connect(transaction, arguments)
        elif self.state is State.CONNECTING:
            raise RtmpError(f"command {name[:32]!r} before connect")
        elif name in ("releaseStream", "FCPublish"):
            self._result(transaction, None)
        elif name == "createStream":
            self._result(transaction, None, float(STREAM_ID))
        elif name == "publish":
            self._publish(arguments, events)
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            if self.state is State.PUBLISHING:
                self.state = State.CLOSED
                events.append(PublishEnded(f"the publisher sent {name}"))
        elif name == "play":
            self.refuse(
                "NetStream.Play.Failed",
                "this server takes publishes only over RTMP: watch over SRT, WebRTC or LL-HLS",
            )

    def _connect(self, transaction: float, arguments: list[amf.Value]) -> None:
        if self.state is not State.CONNECTING:
            raise RtmpError("a second connect command")
        options = arguments[0] if arguments else None
        app = options.get("app") if isinstance(options, dict) else None
        self.app = app if isinstance(app, str) else ""
        self.state = State.CONNECTED
        self._control(WINDOW_ACK_SIZE, struct.pack(">I", WINDOW))
        self._control(SET_PEER_BANDWIDTH, struct.pack(">IB", WINDOW, 2))
        self._control(SET_CHUNK_SIZE, struct.pack(">I", CHUNK_SIZE))
        properties = {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0}
        information = {
            "level": "status",
            "code": "NetConnection.Connect.Success",
            "description": "Connection succeeded.",
            "objectEncoding": 0.0,
        }
        self._result(transaction, properties, information)

    def _publish(self, arguments: list[amf.Value], events: list[Event]) -> None:
        if self.state is not State.CONNECTED:
            raise RtmpError("a second publish command")
        name = arguments[1] if len(arguments) > 1 else None
        if not isinstance(name, str) or not name:
            self.refuse("NetStream.Publish.BadName", "publish needs a stream key (ID:PASSWORD)")
            return
        self.state = State.DECIDING
        events.append(PublishRequested(self.app, name))

    # What we send.

    def _send(self, message: Message, chunk_stream: int) -> None:
        self._out += write_message(message, chunk_stream, CHUNK_SIZE)

    def _control(self, kind: int, payload: bytes) -> None:
        # Far smaller than any chunk size: which one the peer applies makes no difference.
        self._send(Message(kind, 0, 0, payload), CONTROL_CHUNKS)

    def _result(self, transaction: float, *values: amf.Value) -> None:
        body = amf.encode(["_result", transaction, *values])
        self._send(Message(COMMAND, 0, 0, body), COMMAND_CHUNKS)

    def _status(self, level: str, code: str, description: str) -> None:
        information = {"level": level, "code": code, "description": description}
        body = amf.encode(["onStatus", 0.0, None, information])
        self._send(Message(COMMAND, STREAM_ID, 0, body), STATUS_CHUNKS)
