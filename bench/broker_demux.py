"""The broker's cost per published stream: TS inspection and the shared demux.

Run: .venv/bin/python bench/broker_demux.py [--seconds 10] [--bitrate 6M] [--rounds 3]

Publishes an ffmpeg-made H.264/AAC transport stream (720p, `--bitrate`) in
SRT-sized chunks into the broker, with the `PacketHub` demuxing it for one
packet reader, as when anyone watches over WebRTC or LL-HLS.  Prints the
bytes the TS inspector reads per byte published (each chunk is inspected
once: 1.00) and the event loop's CPU time per second of media (best of the
rounds).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import trio
import trio.testing

from ghostream.broker.packets import PacketHub
from ghostream.broker.registry import Broker
from ghostream.media import ts

CHUNK = 7 * ts.PACKET_SIZE
# Bytes the TS inspector has read, whoever called it.
counted = [0]


def make_source(path: Path, seconds: int, bitrate: str) -> bytes:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-b:v", bitrate,
         "-g", "60", "-c:a", "aac", "-f", "mpegts", str(path)],
        check=True,
    )  # fmt: skip
    return path.read_bytes()


async def publish_and_demux(data: bytes) -> tuple[float, int, int]:
    """CPU seconds to publish and demux `data`, the bytes inspected, the packets read."""
    broker = Broker()
    hub = PacketHub(broker)
    read = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.run)
        await nursery.start(hub.run)
        with broker.publish("bench", "bench", "srt") as stream:
            async with hub.read("bench", max_lag=3600.0) as reader:

                async def drain() -> None:
                    nonlocal read
                    while True:
                        await reader.receive()
                        read += 1

                nursery.start_soon(drain)
                began = time.process_time()
                for offset in range(0, len(data), CHUNK):
                    stream.publish(data[offset : offset + CHUNK])
                    await trio.testing.wait_all_tasks_blocked()
                spent = time.process_time() - began
        nursery.cancel_scope.cancel()
    return spent, counted[0], read


def count_inspections() -> None:
    inspect = ts.TsInspector.inspect

    def counting(self: ts.TsInspector, chunk: bytes) -> ts.ChunkInfo:
        counted[0] += len(chunk)
        return inspect(self, chunk)

    ts.TsInspector.inspect = counting  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--bitrate", default="6M")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        data = make_source(Path(directory) / "source.ts", args.seconds, args.bitrate)
    count_inspections()
    best = None
    for _ in range(args.rounds):
        counted[0] = 0
        spent, inspected, packets = trio.run(publish_and_demux, data)
        best = spent if best is None else min(best, spent)
    print(f"published: {len(data) / 1e6:.1f} MB, {args.seconds} s of media, {packets} packets read")
    print(f"bytes inspected per byte published: {inspected / len(data):.2f}")
    per_second = 1000 * best / args.seconds
    print(f"event loop CPU per second of media: {per_second:.1f} ms (best of {args.rounds})")


if __name__ == "__main__":
    main()
