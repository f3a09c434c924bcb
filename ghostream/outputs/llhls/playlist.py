"""Media and multivariant playlists per RFC 8216bis (low-latency rules), as plain text.

Names are relative to `/ID/`: `init-RUN-N.mp4`, `seg-RUN-MSN.m4s` and
`part-RUN-MSN-INDEX.m4s`.  Parts are listed for the segments of the last
three target durations (the spec's minimum) and for the open segment,
followed by a preload hint for the next part.  With `_HLS_skip=YES` the
segments older than CAN-SKIP-UNTIL are replaced by one EXT-X-SKIP tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from ghostream.outputs.llhls.timeline import Init, Segment, Timeline

# The oldest protocol version with EXT-X-SKIP; every other tag used is older.
VERSION = 9
PART_LIST_TARGET_DURATIONS = 3
SKIP_TARGET_DURATIONS = 6
PART_HOLD_BACK_PARTS = 3
# Durations are sums of 90 kHz floats: compare them with a millisecond to spare.
SECONDS_SLACK = 0.001
NAME = re.compile(
    r"(?P<kind>init|seg|part)-(?P<run>[0-9a-f]+)-(?P<a>[0-9]+)(?:-(?P<b>[0-9]+))?\.(?:mp4|m4s)"
)


@dataclass(frozen=True, slots=True)
class MediaName:
    kind: str
    run: str
    number: int
    part: int | None


def parse_name(name: str) -> MediaName | None:
    match = NAME.fullmatch(name)
    if match is None or (match["kind"] == "part") != (match["b"] is not None):
        return None
    if (match["kind"] == "init") != name.endswith(".mp4"):
        return None
    part = int(match["b"]) if match["b"] is not None else None
    return MediaName(match["kind"], match["run"], int(match["a"]), part)


def init_name(run: str, init: Init) -> str:
    return f"init-{run}-{init.number}.mp4"


def part_name(run: str, msn: int, index: int) -> str:
    return f"part-{run}-{msn}-{index}.m4s"


def can_skip_until(timeline: Timeline) -> float:
    return float(SKIP_TARGET_DURATIONS * timeline.target_duration)


def _date(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _seconds(value: float) -> str:
    return f"{value:.5f}".rstrip("0").rstrip(".") if value else "0"


def media_playlist(timeline: Timeline, *, skip: bool = False) -> str:
    run = timeline.run
    segments = list(timeline.segments)
    complete = [s for s in segments if s.complete]
    target = timeline.target_duration
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
        f"CAN-SKIP-UNTIL={_seconds(can_skip_until(timeline))},"
        f"PART-HOLD-BACK={_seconds(PART_HOLD_BACK_PARTS * timeline.part_target)}",
        f"#EXT-X-PART-INF:PART-TARGET={_seconds(timeline.part_target)}",
        f"#EXT-X-MEDIA-SEQUENCE:{segments[0].msn if segments else 0}",
        f"#EXT-X-DISCONTINUITY-SEQUENCE:{timeline.discontinuity_sequence}",
    ]
    skipped = _skippable(complete, can_skip_until(timeline)) if skip else 0
    if skipped:
        lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
    listed = segments[skipped:]
    # Parts of the segments that end within the last three target durations.
    parts_from = len(listed)
    covered = 0.0
    while parts_from > 0 and covered < PART_LIST_TARGET_DURATIONS * target:
        parts_from -= 1
        covered += listed[parts_from].duration
    init: Init | None = None
    for position, segment in enumerate(listed):
        if segment.discontinuity and position > 0:
            lines.append("#EXT-X-DISCONTINUITY")
        if segment.init is not init:
            init = segment.init
            lines.append(f'#EXT-X-MAP:URI="{init_name(run, init)}"')
        if not segment.parts:
            continue
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_date(segment.program_date_time)}")
        if position >= parts_from:
            lines.extend(_part_lines(run, segment))
        if segment.complete:
            lines.append(f"#EXTINF:{_seconds(segment.duration)},")
            lines.append(f"seg-{run}-{segment.msn}.m4s")
    if segments:
        newest = segments[-1]
        msn, index = (newest.msn + 1, 0) if newest.complete else (newest.msn, len(newest.parts))
        hint = part_name(run, msn, index)
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{hint}"')
    return "\n".join(lines) + "\n"


def _skippable(complete: list[Segment], until: float) -> int:
    """How many of the oldest segments lie wholly before CAN-SKIP-UNTIL from the end."""
    remaining = sum(s.duration for s in complete)
    count = 0
    for segment in complete:
        if remaining - segment.duration < until - SECONDS_SLACK:
            break
        remaining -= segment.duration
        count += 1
    return count


def _part_lines(run: str, segment: Segment) -> list[str]:
    return [
        f"#EXT-X-PART:DURATION={_seconds(part.duration)},"
        f'URI="{part_name(run, segment.msn, part.index)}"'
        + (",INDEPENDENT=YES" if part.independent else "")
        for part in segment.parts
    ]


@dataclass(frozen=True, slots=True)
class Variant:
    uri: str
    bandwidth: int
    init: Init


def multivariant_playlist(variants: list[Variant]) -> str:
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for variant in sorted(variants, key=lambda v: -v.bandwidth):
        init = variant.init
        lines.append(
            f'#EXT-X-STREAM-INF:BANDWIDTH={variant.bandwidth},CODECS="{init.codecs}",'
            f"RESOLUTION={init.width}x{init.height}"
        )
        lines.append(variant.uri)
    return "\n".join(lines) + "\n"
