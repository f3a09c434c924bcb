"""One LL-HLS packager per watched stream, and the answers to every HLS request.

The packager of a stream starts with the first HLS request for it and stops
when no request came for `IDLE_STOP` seconds or the stream ends; it runs in
the service's nursery (the `LL-HLS` service of the server).  Requests never
package anything: they read the packager's timeline, or wait on it for a
blocking playlist reload or a preload-hinted part.

Caching is what lets a CDN or a plain nginx `proxy_cache` carry the viewers:
media names are never reused (they carry the timeline's run token), so
parts, segments and inits are cacheable forever; a plain playlist lives one
second; a blocking request names the part it waits for, so its answer is
cacheable too.  A blocking request that times out gets the newest playlist,
uncacheable, so that a cache never pins a stale answer to that URL.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import trio

from ghostream import monitoring
from ghostream.broker.feeds import Feeds
from ghostream.broker.packets import PacketHub
from ghostream.broker.registry import Broker, StreamNotFound
from ghostream.broker.stream import StreamEnded
from ghostream.broker.tasks import TaskOwner
from ghostream.media.errors import UnplayableStream
from ghostream.outputs.llhls.players import HlsAudience
from ghostream.outputs.llhls.playlist import (
    MediaName,
    Variant,
    media_playlist,
    multivariant_playlist,
    parse_name,
)
from ghostream.outputs.llhls.timeline import Timeline

log = logging.getLogger(__name__)

COMPONENT = "llhls"
IDLE_STOP = 10.0
# How long a first request waits for a complete segment before 503.
READY_TIMEOUT = 10.0
BLOCKING_TARGET_DURATIONS = 3
# A lagging packager jumps to the latest keyframe rather than fall further behind.
MAX_LAG = 2.0
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
IMMUTABLE = "public, max-age=31536000, immutable"
PLAYLIST_CACHE = "public, max-age=1"
BLOCKING_CACHE = "public, max-age=30"
NO_STORE = "no-store"
DEFAULT_BANDWIDTH = 1_000_000
# Answers for parts, segments and inits kept ready, per packager.
CACHED_FILES = 256


@dataclass(frozen=True, slots=True)
class HlsAnswer:
    """What to answer, with its header bytes made once for every player it goes to."""

    status: int
    body: bytes
    content_type: str = "text/plain"
    cache_control: str = NO_STORE
    headers: tuple[tuple[bytes, bytes], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        content_type = self.content_type
        if content_type.startswith("text/"):
            content_type += "; charset=utf-8"
        headers = (
            (b"content-type", content_type.encode()),
            (b"cache-control", self.cache_control.encode()),
            (b"content-length", str(len(self.body)).encode()),
        )
        object.__setattr__(self, "headers", headers)


def _error(status: int, message: str) -> HlsAnswer:
    return HlsAnswer(status, message.encode() + b"\n")


NOT_FOUND = _error(404, "no such live stream")
GONE = _error(404, "no such part, segment or init (gone from the window?)")


class Packager:
    def __init__(self, stream_id: str, generation: int) -> None:
        self.stream_id = stream_id
        # The publish it packages: a failure is remembered until the publisher changes.
        self.generation = generation
        self.timeline = Timeline()
        self.last_request = trio.current_time()
        self.ended = False
        self.failure: str | None = None
        self._version = 0
        self._changed = trio.lowlevel.ParkingLot()
        self._playlists: dict[tuple[bool, str], tuple[int, HlsAnswer]] = {}
        self._files: dict[str, HlsAnswer] = {}

    def touch(self) -> None:
        self.last_request = trio.current_time()

    def playlist(self, *, skip: bool, cache_control: str = PLAYLIST_CACHE) -> HlsAnswer:
        """The media playlist, rendered once per new part however many players ask."""
        cached = self._playlists.get((skip, cache_control))
        if cached is None or cached[0] != self._version:
            text = self._rendered(skip)
            answer = HlsAnswer(200, text, PLAYLIST_TYPE, cache_control)
            cached = self._playlists[skip, cache_control] = (self._version, answer)
        return cached[1]

    def _rendered(self, skip: bool) -> bytes:
        for (other_skip, _), (version, answer) in self._playlists.items():
            if other_skip == skip and version == self._version:
                return answer.body
        return media_playlist(self.timeline, skip=skip).encode()

    def file_answer(self, name: str, make: Callable[[], HlsAnswer]) -> HlsAnswer:
        """The answer for a media file by its name, made on the first request only.

        Names are never reused, so an answer stays right; errors are not kept.
        """
        answer = self._files.get(name)
        if answer is None:
            answer = make()
            if answer.status == 200:
                if len(self._files) >= CACHED_FILES:
                    for old in list(self._files)[: CACHED_FILES // 2]:
                        del self._files[old]
                self._files[name] = answer
        return answer

    async def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Whether `condition` held within `timeout` seconds (checked on every new part)."""
        with trio.move_on_after(timeout):
            while not condition():
                if self.ended:
                    return False
                await self._changed.park()
            return True
        return False

    async def run(self, packets: PacketHub) -> None:
        try:
            async with packets.read(self.stream_id, max_lag=MAX_LAG) as reader:
                self.timeline.begin(await reader.tracks())
                await self._package(reader)
        except StreamNotFound:
            pass
        except StreamEnded:
            if self.timeline.flush():
                self._published()
        except UnplayableStream as exc:
            # Players hear why (415); the supervisor logs and records it.
            self.failure = str(exc)
            raise
        finally:
            self.ended = True
            self._changed.unpark_all()

    async def _package(self, reader) -> None:
        while True:
            with trio.move_on_at(self.last_request + IDLE_STOP):
                packet = await reader.receive()
                if self.timeline.add(packet, time.time()):
                    self._published()
                continue
            if trio.current_time() >= self.last_request + IDLE_STOP:
                log.info("%s: LL-HLS packager stopped, unwatched", self.stream_id)
                return

    def _published(self) -> None:
        self._version += 1
        self._changed.unpark_all()


class LlHls(TaskOwner):
    """The `LL-HLS` service: owns the packagers' nursery and answers HLS requests."""

    def __init__(
        self, packets: PacketHub, broker: Broker, variant_names: Sequence[str] = ()
    ) -> None:
        self.packets = packets
        self.broker = broker
        # Quality variants that can be made on request (`ID@<name>`), for players that adapt.
        self.variant_names = list(variant_names)
        self._packagers = Feeds[Packager](
            broker.supervisor,
            COMPONENT,
            self._run_packager,
            ended=lambda packager: packager.ended,
        )
        self.audience = HlsAudience(broker)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.audience.run)
            await nursery.start(super().run)
            task_status.started()

    async def _run_packager(self, packager: Packager) -> None:
        try:
            await packager.run(self.packets)
        finally:
            stream = self.broker.get(packager.stream_id)
            if packager.failure is not None and stream is not None:
                # Remembered by this publish only: a new publisher gets a new try.
                if stream.generation == packager.generation:
                    stream.unplayable[COMPONENT] = packager

    async def _packager(self, stream_id: str) -> Packager | None:
        """The stream's running packager, started if needed; None when it is not live."""
        packager = self._packagers.get(stream_id)
        if packager is not None:
            packager.touch()
            return packager
        if not await self.broker.provide(stream_id):
            return None
        stream = self.broker.get(stream_id)
        if stream is None:
            return None
        failed = stream.unplayable.get(COMPONENT)
        if failed is not None:
            return failed
        generation = stream.generation
        packager = self._packagers.open(
            self._nursery, stream_id, lambda: Packager(stream_id, generation)
        )
        log.info("%s: LL-HLS packager started", stream_id)
        return packager

    async def _ready(self, stream_id: str, timeout: float = READY_TIMEOUT) -> Packager | None:
        """The packager once it has a segment, or once it failed (its `failure` says why)."""
        packager = await self._packager(stream_id)
        if packager is None:
            return None
        await packager.wait_until(lambda: packager.timeline.ready, timeout)
        ready = packager.timeline.ready or packager.failure is not None
        return packager if ready else None

    async def multivariant(self, stream_id: str, all_variants: bool = False) -> HlsAnswer:
        """The stream and its live variants; with `all_variants`, every variant that can be made.

        A player that adapts to its network asks for all of them: each is made
        while some player fetches it, and stops when none does.
        """
        packager = await self._ready(stream_id)
        if packager is None:
            return NOT_FOUND if self.broker.get(stream_id) is None else _not_ready(stream_id)
        if packager.failure is not None:
            return _unplayable(packager.failure)
        if all_variants and "@" not in stream_id:
            for name in self.variant_names:
                await self.broker.provide(f"{stream_id}@{name}")
        names = [s.id for s in self.broker.summaries() if s.id.startswith(stream_id + "@")]
        variants = [_variant("media.m3u8", packager)]
        with trio.move_on_after(READY_TIMEOUT / 2):
            for name in sorted(names):
                other = await self._ready(name)
                if other is not None and other.failure is None:
                    variants.append(_variant(f"../{name}/media.m3u8", other))
        body = multivariant_playlist(variants).encode()
        return HlsAnswer(200, body, PLAYLIST_TYPE, PLAYLIST_CACHE)

    async def media_playlist(self, stream_id: str, query: Mapping[str, str]) -> HlsAnswer:
        try:
            msn = _directive(query, "_HLS_msn")
            part = _directive(query, "_HLS_part")
        except ValueError as exc:
            return _error(400, str(exc))
        if part is not None and msn is None:
            return _error(400, "_HLS_part needs _HLS_msn")
        skip = query.get("_HLS_skip", "").upper() in ("YES", "V2")
        packager = await self._ready(stream_id)
        if packager is None:
            return NOT_FOUND if self.broker.get(stream_id) is None else _not_ready(stream_id)
        if packager.failure is not None:
            return _unplayable(packager.failure)
        timeline = packager.timeline
        if msn is None:
            return packager.playlist(skip=skip)
        if _too_far(timeline, msn, part):
            return _error(400, f"_HLS_msn={msn} _HLS_part={part} is too far ahead of the live edge")
        timeout = BLOCKING_TARGET_DURATIONS * timeline.target_duration
        if not await packager.wait_until(lambda: timeline.has(msn, part), timeout):
            # RFC 8216bis 6.2.5.2: after three target durations, Service Unavailable.
            return _error(503, f"_HLS_msn={msn} _HLS_part={part} did not come in {timeout:.0f} s")
        return packager.playlist(skip=skip, cache_control=BLOCKING_CACHE)

    async def media_file(
        self, stream_id: str, name: str, client: str = "", peer: str = ""
    ) -> HlsAnswer:
        """A part, segment or init; a `client` fetching parts or segments counts as a viewer."""
        wanted = parse_name(name)
        packager = await self._packager(stream_id)
        if packager is None:
            return NOT_FOUND
        timeline = packager.timeline
        if wanted is None or wanted.run != timeline.run:
            return GONE
        if wanted.kind == "part":
            assert wanted.part is not None
            number, index = wanted.number, wanted.part
            if _is_next_part(timeline, number, index):
                # A preload hint: the spec has the server hold it until the part exists.
                timeout = BLOCKING_TARGET_DURATIONS * timeline.target_duration
                await packager.wait_until(lambda: timeline.has(number, index), timeout)
        answer = packager.file_answer(name, partial(_file_answer, timeline, wanted))
        if answer.status == 200:
            if wanted.kind == "part":
                monitoring.HLS_PART_REQUESTS.labels(stream_id).inc()
            if client and wanted.kind != "init":
                self.audience.saw(stream_id, client, peer, len(answer.body))
            log.debug("%s: served %s", stream_id, name)
        return answer


def _file_answer(timeline: Timeline, wanted: MediaName) -> HlsAnswer:
    if wanted.kind == "init":
        init = timeline.inits().get(wanted.number)
        data = init.data if init is not None else None
        content_type = "video/mp4"
    elif wanted.kind == "seg":
        data = _segment_data(timeline, wanted.number)
        content_type = "video/iso.segment"
    else:
        assert wanted.part is not None
        data = _part_data(timeline, wanted.number, wanted.part)
        content_type = "video/iso.segment"
    if data is None:
        return GONE
    return HlsAnswer(200, data, content_type, IMMUTABLE)


def _unplayable(failure: str) -> HlsAnswer:
    return _error(415, f"this stream cannot be played over LL-HLS: {failure}")


def _not_ready(stream_id: str) -> HlsAnswer:
    log.info("%s: no complete LL-HLS segment in %.0f s; no keyframes?", stream_id, READY_TIMEOUT)
    return _error(503, "the stream has no complete segment yet; try again")


def _variant(uri: str, packager: Packager) -> Variant:
    timeline = packager.timeline
    assert timeline.init is not None
    rate = timeline.bytes_per_second
    bandwidth = math.ceil(rate * 8 * 1.1) if rate else DEFAULT_BANDWIDTH
    return Variant(uri, bandwidth, timeline.init)


def _directive(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    if not value.isdigit() or len(value) > 12:
        raise ValueError(f"{name} must be a non-negative integer")
    return int(value)


def _advance_part_limit(timeline: Timeline) -> int:
    """RFC 8216bis 6.2.5.2: three parts' worth of seconds, or three parts when they are long."""
    target = timeline.part_target
    return math.ceil(3 / target) if target < 1 else 3


def _too_far(timeline: Timeline, msn: int, part: int | None) -> bool:
    if msn > timeline.last_complete_msn() + 2:
        return True
    last = timeline.last_part()
    if part is None or last is None:
        return False
    last_msn, last_index = last
    if msn < last_msn:
        return False
    ahead = part - last_index if msn == last_msn else part + 1
    return ahead > _advance_part_limit(timeline)


def _is_next_part(timeline: Timeline, msn: int, index: int) -> bool:
    last = timeline.last_part()
    if last is None:
        return False
    return (msn, index) in ((last[0], last[1] + 1), (last[0] + 1, 0))


def _segment_data(timeline: Timeline, msn: int) -> bytes | None:
    for segment in timeline.segments:
        if segment.msn == msn and segment.complete:
            return segment.data
    return None


def _part_data(timeline: Timeline, msn: int, index: int) -> bytes | None:
    for segment in reversed(timeline.segments):
        if segment.msn == msn:
            return segment.parts[index].data if index < len(segment.parts) else None
    return None
