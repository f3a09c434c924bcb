"""The history writer: events per second, and the database's size per hour of a 100-viewer show.

Run: .venv/bin/python bench/history.py [--viewers 100] [--hours 1] [--repeat 3]

Prints:
- throughput: broker events (viewer joins and leaves, byte checkpoints)
  appended to the log and applied to the projections by the real writer
  (`EventLog.record` then `flush`, batches of 1000), in events per second
  of wall clock (best and median of `--repeat` runs) and per second of
  this process's CPU time, which a loaded machine disturbs less; with the
  machine's load average;
- size: a simulated show of N viewers for H hours (each viewer watches
  20 minutes on average then another takes its place; SRT, WebRTC and
  LL-HLS; byte checkpoints every minute for every open session; a
  refusal every five minutes), the database's size after it, per hour.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ghostream.history.events import (  # noqa: E402
    BytesCheckpoint,
    PublishStarted,
    PublishStopped,
    Rejected,
    StreamClosed,
    ViewerJoined,
    ViewerLeft,
)
from ghostream.history.log import EventLog  # noqa: E402

PROTOCOLS = ("srt", "webrtc", "llhls")
CHECKPOINT = 60.0
AVERAGE_WATCH = 20 * 60.0
BYTES_PER_SECOND = 250_000


def simulated_show(viewers: int, hours: float, start: float) -> list:
    """The broker events of a show, in time order."""
    rng = random.Random(1)
    end = start + hours * 3600
    events: list = [PublishStarted("show", "203.0.113.1:4000", "srt", start)]
    timeline: list[tuple[float, int, object]] = []
    next_id = 0

    def watch(joined: float) -> None:
        nonlocal next_id
        next_id += 1
        viewer = next_id
        protocol = rng.choice(PROTOCOLS)
        peer = f"198.51.100.{rng.randrange(250)}:{rng.randrange(1024, 65535)}"
        left = min(end, joined + rng.expovariate(1 / AVERAGE_WATCH))
        timeline.append((joined, 0, ViewerJoined("show", viewer, peer, protocol, joined)))
        at = joined + CHECKPOINT
        while at < left:
            sent = int((at - joined) * BYTES_PER_SECOND)
            timeline.append((at, 1, BytesCheckpoint("show", viewer, at, sent)))
            at += CHECKPOINT
        sent = int((left - joined) * BYTES_PER_SECOND)
        timeline.append((left, 2, ViewerLeft("show", viewer, peer, protocol, left, sent, "left")))
        if left < end:
            watch(left + rng.random() * 5)

    for _ in range(viewers):
        watch(start + rng.random() * 120)
    at = start + CHECKPOINT
    while at < end:
        sent = int((at - start) * BYTES_PER_SECOND)
        timeline.append((at, 1, BytesCheckpoint("show", None, at, sent)))
        if int(at - start) % 300 < CHECKPOINT:
            refusal = Rejected("show", "192.0.2.1:1", "srt", at, "unauthorized", {"user": "show"})
            timeline.append((at, 1, refusal))
        at += CHECKPOINT
    timeline.sort(key=lambda item: (item[0], item[1]))
    events += [event for _, _, event in timeline]
    sent = int((end - start) * BYTES_PER_SECOND)
    events.append(PublishStopped("show", "203.0.113.1:4000", "srt", end, sent, "publisher left"))
    events.append(StreamClosed("show", end + 10))
    return events


def write(path: Path, events: list, batch: int = 1000) -> tuple[float, float]:
    """Seconds the writer took to append and project every event: wall clock, and CPU."""
    log = EventLog.open(path)

    async def main() -> None:
        for first in range(0, len(events), batch):
            for event in events[first : first + batch]:
                log.record(event)
            await log.flush()

    began, cpu = time.perf_counter(), time.process_time()
    trio.run(main)
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    log.close()
    return elapsed, cpu


def database_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    start = time.time() - args.hours * 3600 - 60
    events = simulated_show(args.viewers, args.hours, start)
    rates, cpu_rates = [], []
    with tempfile.TemporaryDirectory() as directory:
        for run in range(args.repeat):
            path = Path(directory) / f"history-{run}.sqlite3"
            elapsed, cpu = write(path, events)
            rates.append(len(events) / elapsed)
            cpu_rates.append(len(events) / cpu)
        size = database_bytes(Path(directory) / "history-0.sqlite3")
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load}")
    print(
        f"show: {args.viewers} viewers for {args.hours:g} h: {len(events)} events "
        f"({len(events) / args.hours:.0f} per hour)"
    )
    print(
        f"writer throughput: best {max(rates):,.0f} events/s, "
        f"median {statistics.median(rates):,.0f} events/s over {args.repeat} runs; "
        f"{statistics.median(cpu_rates):,.0f} events per CPU-second (what a core would do unshared)"
    )
    print(
        f"database size: {size / 1e6:.2f} MB for the show, "
        f"{size / 1e6 / args.hours:.2f} MB per hour of a {args.viewers}-viewer show"
    )


if __name__ == "__main__":
    main()
