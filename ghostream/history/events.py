"""What happens to streams and viewers, as the event log and metrics see it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PublishStarted:
    stream_id: str
    peer: str
    protocol: str
    at: float


@dataclass(frozen=True, slots=True)
class PublishStopped:
    stream_id: str
    peer: str
    protocol: str
    at: float
    bytes: int
    reason: str


@dataclass(frozen=True, slots=True)
class ViewerJoined:
    stream_id: str
    viewer_id: int
    peer: str
    protocol: str
    at: float


@dataclass(frozen=True, slots=True)
class ViewerLeft:
    stream_id: str
    viewer_id: int
    peer: str
    protocol: str
    at: float
    bytes: int
    reason: str


@dataclass(frozen=True, slots=True)
class ViewerSkipped:
    """A slow viewer was moved ahead to the latest keyframe, or dropped (`dropped`)."""

    stream_id: str
    viewer_id: int
    protocol: str
    at: float
    dropped: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    stream_id: str
    peer: str
    protocol: str
    at: float
    reason: str
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Forwarding:
    """A forward target of a stream started, failed or stopped; `target` has no stream key."""

    stream_id: str
    target: str
    at: float
    kind: str
    reason: str = ""
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class StreamFault:
    """A per-stream component failed on the stream's data; `action` says what was done."""

    stream_id: str
    component: str
    at: float
    reason: str
    action: str


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """A stream's publisher did not return within the grace period: its show is over."""

    stream_id: str
    at: float


@dataclass(frozen=True, slots=True)
class BytesCheckpoint:
    """Bytes a session moved so far (`viewer_id` None: the publisher), sent periodically.

    The history keeps running totals truthful during a long session, and
    after a crash the last checkpoint is what the session is known to have moved.
    """

    stream_id: str
    viewer_id: int | None
    at: float
    bytes: int


@dataclass(frozen=True, slots=True)
class RecordingStopped:
    """A show's recording ended: with its show, or early on a write error (`reason`)."""

    stream_id: str
    at: float
    seconds: float
    bytes: int
    reason: str = ""


Event = (
    PublishStarted
    | PublishStopped
    | ViewerJoined
    | ViewerLeft
    | ViewerSkipped
    | Rejected
    | Forwarding
    | StreamFault
    | StreamClosed
    | BytesCheckpoint
    | RecordingStopped
)
