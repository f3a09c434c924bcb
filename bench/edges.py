"""Edges: origin CPU as SRT viewers spread over two edges grow, and the latency each hop adds.

Run: .venv/bin/python bench/edges.py [--viewers 2,8,16,32] [--seconds 5]

One origin, two edges pulling from it and a third edge chained behind the
first (all subprocesses, as shipped), one 4 Mbit/s timestamped publish to
the origin.  Prints:
- origin and edges CPU for N srt-live-transmit viewers, half on each edge:
  the origin serves two pulls whatever N is, so its CPU stays flat, and the
  per-viewer slope says what each viewer costs its edge;
- one-way latency (p50, p95) of a viewer on the origin, on an edge (one hop)
  and on the chained edge (two hops), measured in turns in the same run, and
  the p50 each hop adds.
The machine may be shared: note `uptime` with the figures (printed at the end).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanout_srt import TimestampedSender, latencies, make_source, slope  # noqa: E402
from harness.server_process import ServerProcess, start_server  # noqa: E402
from process_usage import cpu_seconds  # noqa: E402
from srt_peers import counting_viewers, viewer_totals  # noqa: E402

BITRATE = 4_000_000

COMMON = {
    "auth": {"enabled": False},
    "history": {"enabled": False},
    "monitoring": {"enabled": False},
    "transcoding": {"enabled": False},
    "webrtc": {"enabled": False},
    "srt": {"maxClients": 1000, "maxClientsPerHost": 1000},
}


def start(work: Path, name: str, upstream: ServerProcess | None = None) -> ServerProcess:
    directory = work / name
    directory.mkdir()
    extra = {"origin": {"url": f"srt://127.0.0.1:{upstream.srt_port}"}} if upstream else {}
    return start_server(directory, COMMON | extra)


def spread(
    edges: list[ServerProcess], origin: ServerProcess, counts: list[int], seconds: float, work: Path
) -> list[dict]:
    results = []
    for count in counts:
        stats = [work / f"viewer-{count}-{i}.csv" for i in range(count)]
        urls = [edges[i % len(edges)].srt_url("bench") for i in range(count)]
        with counting_viewers(urls, stats):
            time.sleep(2)  # every viewer connected and settled
            pids = [origin.process.pid] + [edge.process.pid for edge in edges]
            before, wall = [cpu_seconds(pid) for pid in pids], time.monotonic()
            time.sleep(seconds)
            elapsed = time.monotonic() - wall
            cpu = [(cpu_seconds(pid) - b) / elapsed for pid, b in zip(pids, before, strict=True)]
        lost, fewest = viewer_totals(stats)
        results.append({"viewers": count, "origin": cpu[0], "edges": sum(cpu[1:])})
        print(
            f"  {count:4d} viewers: origin CPU {cpu[0] * 100:5.1f}% of a core, edges "
            + " + ".join(f"{c * 100:5.1f}%" for c in cpu[1:])
            + f"; fewest packets at a viewer {fewest}, lost or dropped {lost}",
            flush=True,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", default="2,8,16,32")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    counts = [int(n) for n in args.viewers.split(",")]
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        source_path = work / "source.ts"
        make_source(source_path, 20, BITRATE)
        origin = start(work, "origin")
        servers = [origin]
        sender = None
        try:
            edge_a = start(work, "edge-a", origin)
            edge_b = start(work, "edge-b", origin)
            chained = start(work, "edge-c", edge_a)
            servers += [edge_a, edge_b, chained]
            sender = TimestampedSender(source_path.read_bytes(), origin.srt_url("bench:x"), BITRATE)
            sender.start()
            time.sleep(1)
            print(f"one {BITRATE / 1e6:.0f} Mbit/s publish to the origin, SRT latency 120 ms")
            # In turns, so that the load of the moment weighs on each path alike.
            delays: dict[str, list[float]] = {"origin": [], "1 hop": [], "2 hops": []}
            for _ in range(args.rounds):
                for path, server in zip(delays, (origin, edge_a, chained), strict=True):
                    delays[path] += latencies(server.srt_url("bench"), 4)
            results = spread([edge_a, edge_b], origin, counts, args.seconds, work)
        finally:
            if sender is not None:
                sender.stop()
            for server in servers:
                server.stop()

    xs = [r["viewers"] for r in results]
    print()
    print(
        "origin CPU per viewer on the edges: "
        f"{slope(xs, [r['origin'] for r in results]) * 100:+.3f}% of a core "
        f"(from {results[0]['origin'] * 100:.1f}% at {xs[0]} to "
        f"{results[-1]['origin'] * 100:.1f}% at {xs[-1]})"
    )
    per_viewer = slope(xs, [r["edges"] for r in results])
    print(f"edges CPU per viewer:               {per_viewer * 100:.2f}% of a core")
    p50 = {path: statistics.median(values) for path, values in delays.items()}
    for path, values in delays.items():
        p95 = statistics.quantiles(values, n=20)[-1]
        print(
            f"latency via {path:7s} p50 {p50[path]:6.1f} ms, p95 {p95:6.1f} ms "
            f"({len(values)} samples)"
        )
    print(f"added per hop (p50):                {p50['1 hop'] - p50['origin']:+.1f} ms (first), "
          f"{p50['2 hops'] - p50['1 hop']:+.1f} ms (second)")  # fmt: skip
    print("load:", os.getloadavg())


if __name__ == "__main__":
    main()
