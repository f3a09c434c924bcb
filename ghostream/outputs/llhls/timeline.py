"""Cutting a stream's packets into LL-HLS parts and segments, without I/O.

A part closes when the next video frame would push it past the part target;
a segment closes on a keyframe once it holds the segment target (so a GOP
longer than the target makes one segment per GOP).  Parts are video-driven:
audio frames join the part that is open when they arrive.  A new `Track`
object (a new publisher, new parameter sets) closes everything, starts a new
init segment and marks the next segment as a discontinuity.

Every name carries the timeline's `run` token, so a URL never names two
different contents even when a stream restarts: caches may keep them forever.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from dataclasses import dataclass, field

from ghostream.media import fmp4
from ghostream.media.bitstream import VideoConfig, sample_units, video_config
from ghostream.media.demux import MediaPacket, Track

CLOCK = 90000
# A part may end this close past its target: timestamps are rounded to 90 kHz.
PART_SLACK = 90
# Consecutive video frames further apart than this (or going back) mean a gap.
MAX_FRAME_STEP = CLOCK
# A part waits at most this long (in video time) for the audio up to its end.
AUDIO_WAIT = CLOCK // 2
# A frame shown later than this after it is decoded is a broken timestamp, not reordering.
MAX_COMPOSITION_OFFSET = 10 * CLOCK
_runs = itertools.count()


@dataclass(frozen=True, slots=True)
class Init:
    number: int
    data: bytes
    codecs: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Part:
    msn: int
    index: int
    data: bytes
    duration: float
    independent: bool


@dataclass
class WallClock:
    """Wall-clock time minus media time, for one run of continuous timestamps.

    Its minimum over the packets is set by those that arrived fastest, so
    the burst a new reader gets from the GOP cache does not skew it.
    """

    offset: float | None = None

    def note(self, media_seconds: float, now: float) -> None:
        offset = now - media_seconds
        if self.offset is None or offset < self.offset:
            self.offset = offset


@dataclass
class Segment:
    msn: int
    init: Init
    discontinuity: bool
    start: float
    clock: WallClock
    parts: list[Part] = field(default_factory=list)
    complete: bool = False

    @property
    def program_date_time(self) -> float:
        return (self.clock.offset or 0.0) + self.start

    @property
    def duration(self) -> float:
        return sum(part.duration for part in self.parts)

    @property
    def data(self) -> bytes:
        return b"".join(part.data for part in self.parts)


@dataclass
class _Cut:
    """A part whose video is decided, waiting for the audio up to its end."""

    video: list[MediaPacket]
    end: int
    ends_segment: bool


class Timeline:
    def __init__(
        self, *, part_target: float = 0.2, segment_target: float = 2.0, window: int = 10
    ) -> None:
        self.part_target = part_target
        self.segment_target = segment_target
        self.window = window
        self.run = f"{time.time_ns() // 1_000_000:x}{next(_runs):x}"
        self.segments: deque[Segment] = deque()
        self.discontinuity_sequence = 0
        self.longest_segment = 0.0
        self.bytes_per_second = 0.0
        self._init: Init | None = None
        self._video: Track | None = None
        self._audio: Track | None = None
        self._config: VideoConfig | None = None
        self._open: list[MediaPacket] = []
        self._cuts: deque[_Cut] = deque()
        self._audio_queue: list[MediaPacket] = []
        self._audio_reached = -1
        self._last_video = 0
        self._segment_start: int | None = None
        self._discontinuity = False
        self._clock = WallClock()
        self._fragments = itertools.count(1)
        self._frame_ticks = 3600

    @property
    def ready(self) -> bool:
        """At least one complete segment: enough for a player to start."""
        return any(segment.complete for segment in self.segments)

    @property
    def target_duration(self) -> int:
        return max(math.ceil(self.segment_target), round(self.longest_segment))

    @property
    def init(self) -> Init | None:
        return self._init

    def inits(self) -> dict[int, Init]:
        return {segment.init.number: segment.init for segment in self.segments}

    def last_part(self) -> tuple[int, int] | None:
        """(media sequence number, part index) of the newest part."""
        for segment in reversed(self.segments):
            if segment.parts:
                return segment.msn, segment.parts[-1].index
        return None

    def last_complete_msn(self) -> int:
        """The newest complete segment's number; -1 before the first."""
        return next((s.msn for s in reversed(self.segments) if s.complete), -1)

    def has(self, msn: int, part: int | None) -> bool:
        """Whether a playlist now answers a blocking request for (msn, part)."""
        if part is None:
            return self.last_complete_msn() >= msn
        last = self.last_part()
        return last is not None and (last >= (msn, part) or self.last_complete_msn() >= msn)

    def add(self, packet: MediaPacket, now: float) -> bool:
        """Take one packet; True when parts were completed.  ValueError for unreadable video."""
        if packet.track.kind == "audio":
            if packet.track is not self._audio:
                return self._change_audio(packet.track)
            self._audio_queue.append(packet)
            self._audio_reached = max(self._audio_reached, packet.pts)
            return self._emit()
        emitted = False
        if packet.track is not self._video:
            emitted = self._restart()
            self._video = packet.track
            self._config = video_config(packet.track)
            self._new_init()
        elif self._open:
            step = packet.dts - self._open[-1].dts
            assert self._segment_start is not None
            if not 0 < step <= MAX_FRAME_STEP:
                # The reader skipped ahead (it lagged) or the clock jumped: a gap in the timeline.
                emitted = self._restart()
            elif (
                packet.keyframe
                and packet.dts - self._segment_start >= self.segment_target * CLOCK - PART_SLACK
            ):
                self._cut(packet.dts, ends_segment=True)
            elif packet.dts - self._open[0].dts + step > self.part_target * CLOCK + PART_SLACK:
                self._cut(packet.dts, ends_segment=False)
            if 0 < step <= MAX_FRAME_STEP:
                self._frame_ticks = step
        if self._segment_start is None:
            if not packet.keyframe or self._init is None:
                return emitted
            self._segment_start = packet.dts
        self._clock.note(packet.dts / CLOCK, now)
        self._open.append(packet)
        self._last_video = packet.dts
        return self._emit() or emitted

    def begin(self, tracks: list[Track]) -> None:
        """Describe the tracks up front, so that the first init holds video and audio."""
        for track in tracks:
            if track.kind == "video":
                self._video, self._config = track, video_config(track)
            else:
                self._audio = track
        self._new_init()

    def flush(self) -> bool:
        """Close the open part and segment (the stream ended)."""
        return self._restart()

    def _restart(self) -> bool:
        """Close everything; what comes next starts a segment on a keyframe, a discontinuity."""
        if self._open:
            self._cut(self._open[-1].dts + self._frame_ticks, ends_segment=True)
        elif self._cuts:
            self._cuts[-1].ends_segment = True
        emitted = self._emit(force=True)
        if self.segments and not self.segments[-1].complete:
            self._complete(self.segments[-1])
        self._segment_start = None
        self._discontinuity = bool(self.segments)
        self._clock = WallClock()
        self._audio_reached = -1
        return emitted

    def _change_audio(self, track: Track) -> bool:
        """New audio parameters: a new init, in place if the open segment is only starting."""
        starting = not self._cuts and self._open and self._open[0].dts == self._segment_start
        emitted = False if starting else self._restart()
        self._audio = track
        self._audio_queue = []
        self._audio_reached = -1
        self._new_init()
        return emitted

    def _new_init(self) -> None:
        if self._video is None or self._config is None:
            return
        number = 0 if self._init is None else self._init.number + 1
        audio = self._audio
        codecs = self._config.codec_string + (f",{fmp4.audio_codec_string(audio)}" if audio else "")
        data = fmp4.init_segment(self._video, self._config, audio)
        self._init = Init(number, data, codecs, self._config.width, self._config.height)

    def _cut(self, end: int, *, ends_segment: bool) -> None:
        self._cuts.append(_Cut(self._open, end, ends_segment))
        self._open = []
        if ends_segment:
            self._segment_start = None

    def _emit(self, *, force: bool = False) -> bool:
        """Publish the cut parts whose audio has arrived (TS muxers send audio late)."""
        emitted = False
        while self._cuts:
            cut = self._cuts[0]
            waiting = self._audio is not None and self._audio_reached < cut.end
            if waiting and not force and self._last_video - cut.end < AUDIO_WAIT:
                break
            self._cuts.popleft()
            self._publish(cut)
            emitted = True
        return emitted

    def _publish(self, cut: _Cut) -> None:
        assert self._video is not None and self._init is not None
        if not self.segments or self.segments[-1].complete:
            msn = self.segments[-1].msn + 1 if self.segments else 0
            start = cut.video[0].dts / CLOCK
            segment = Segment(msn, self._init, self._discontinuity, start, self._clock)
            self._discontinuity = False
            self.segments.append(segment)
        segment = self.segments[-1]
        ends = [p.dts for p in cut.video[1:]] + [cut.end]
        codec = self._video.codec
        samples = [
            fmp4.Sample(
                sample_units(codec, p.data),
                max(end - p.dts, 1),
                min(max(p.pts - p.dts, 0), MAX_COMPOSITION_OFFSET),
                p.keyframe,
            )
            for p, end in zip(cut.video, ends, strict=True)
        ]
        runs = [fmp4.TrackRun(fmp4.VIDEO_TRACK_ID, cut.video[0].dts, samples)]
        audio = [p for p in self._audio_queue if p.pts < cut.end]
        if audio and self._audio is not None:
            self._audio_queue = self._audio_queue[len(audio) :]
            rate = self._audio.sample_rate
            audio_samples = [fmp4.Sample(p.data, fmp4.audio_samples(p)) for p in audio]
            start = round(audio[0].pts * rate / CLOCK)
            runs.append(fmp4.TrackRun(fmp4.AUDIO_TRACK_ID, start, audio_samples))
        duration = sum(s.duration for s in samples) / CLOCK
        data = fmp4.fragment(next(self._fragments), runs)
        independent = cut.video[0].keyframe
        segment.parts.append(Part(segment.msn, len(segment.parts), data, duration, independent))
        if cut.ends_segment:
            self._complete(segment)

    def _complete(self, segment: Segment) -> None:
        segment.complete = True
        self.longest_segment = max(self.longest_segment, segment.duration)
        if segment.duration:
            self.bytes_per_second = sum(len(p.data) for p in segment.parts) / segment.duration
        while sum(1 for s in self.segments if s.complete) > self.window:
            if self.segments.popleft().discontinuity:
                self.discontinuity_sequence += 1
