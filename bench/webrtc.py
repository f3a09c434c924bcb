"""WebRTC viewers in headless Chromium: server cost per viewer, capacity, glass-to-glass latency.

Run: .venv/bin/python bench/webrtc.py [--viewers 1,5,10] [--crowd 50] [--seconds 8]
                                      [--sources 360p,720p] [--profile]

Prints, for the Ghostream server (a subprocess, as shipped) on the seed's
six-port UDP range (every viewer shares those ports):
- glass-to-glass latency over UDP and over ICE-TCP: each frame of a
  320x180 test stream carries its number as a row of black and white
  blocks; the time it was drawn (before encoding) is compared with the time
  Chromium displays it, read with requestVideoFrameCallback and a canvas.
  One machine, one clock;
- per source (640x360 at 1 Mbit/s, 1280x720 at 4 Mbit/s, with AAC audio):
  server CPU for N WebRTC viewers, the measured video rate a viewer
  receives, the slope per viewer, viewers and egress per core, and the
  largest N measured with no lost packet or frame at any viewer while the
  server stays under one core;
- a crowd of peer connections (50 by default, 320x180) on the six ports:
  how many decode every frame;
- with --profile, the server's hottest functions (py-spy) while the
  largest 720p audience watches.

All viewers are RTCPeerConnections in one headless Chromium page (Debian's
chromium), each its own WHEP session.  Chromium decodes every viewer's
video on the same two cores as the server: where frames go missing at the
client while the server stays well under a core, the client is the limit.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness.browser import open_chromium  # noqa: E402
from harness.publisher import publishing, signal_source  # noqa: E402
from harness.server_process import ServerProcess, free_port, start_server  # noqa: E402
from process_usage import cpu_seconds  # noqa: E402

PAGE = Path(__file__).resolve().parent.parent / "tests" / "interop" / "pages" / "whep.html"
# Name: description, size, bit rate, viewer counts measured (Chromium decodes every viewer).
SOURCES = {
    "360p": ("640x360 at 1 Mbit/s", "640x360", "1M", "1,5,10,20"),
    "720p": ("1280x720 at 4 Mbit/s", "1280x720", "4M", "1,2,4,6"),
    "180p": ("320x180 at 300 kbit/s", "320x180", "300k", ""),
}
UDP_RANGE = (40000, 40005)
WIDTH, HEIGHT, RATE, BITS = 320, 180, 25, 16
BLOCK = WIDTH // BITS

MANY_VIEWERS = """
window.viewers = [];
window.openViewers = async (url, count) => {
  for (let i = 0; i < count; i++) {
    const pc = new RTCPeerConnection();
    pc.addTransceiver("video", {direction: "recvonly"});
    pc.addTransceiver("audio", {direction: "recvonly"});
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
    });
    const response = await fetch(url, {method: "POST",
      headers: {"Content-Type": "application/sdp"}, body: pc.localDescription.sdp});
    if (response.status !== 201) throw new Error("WHEP answered " + response.status);
    await pc.setRemoteDescription({type: "answer", sdp: await response.text()});
    window.viewers.push(pc);
  }
};
window.totals = async () => {
  const out = [];
  for (const pc of window.viewers) {
    const one = {lost: 0, frames: 0, dropped: 0, audio: 0, bytes: 0};
    (await pc.getStats()).forEach((r) => {
      if (r.type !== "inbound-rtp") return;
      one.lost += r.packetsLost || 0;
      if (r.kind === "video") {
        one.frames = r.framesDecoded || 0;
        one.dropped = r.framesDropped || 0;
        one.bytes = r.bytesReceived || 0;
      } else one.audio = r.packetsReceived || 0;
    });
    out.push(one);
  }
  return out;
};
"""

FRAME_READER = f"""
window.shown = [];
const video = document.getElementById("video");
const canvas = new OffscreenCanvas({WIDTH}, {HEIGHT});
const context = canvas.getContext("2d", {{willReadFrequently: true}});
function onFrame(now, metadata) {{
  context.drawImage(video, 0, 0, {WIDTH}, {HEIGHT});
  const row = context.getImageData(0, {BLOCK // 2}, {WIDTH}, 1).data;
  let number = 0;
  for (let bit = 0; bit < {BITS}; bit++) {{
    const x = bit * {BLOCK} + {BLOCK // 2};
    if (row[x * 4] > 128) number |= 1 << bit;
  }}
  window.shown.push([number, performance.timeOrigin + metadata.expectedDisplayTime]);
  video.requestVideoFrameCallback(onFrame);
}}
video.requestVideoFrameCallback(onFrame);
"""


def source(name: str, directory: Path) -> list[str]:
    """ffmpeg input options replaying a clip encoded beforehand, so that publishing costs little
    and sends the same bytes whatever the machine's load."""
    clip = directory / f"{name}.ts"
    if not clip.exists():
        _, size, rate, _ = SOURCES[name]
        encode = signal_source(
            size, "-preset", "veryfast", "-tune", "zerolatency", "-b:v", rate, "-maxrate", rate,
            "-bufsize", rate,
        )  # fmt: skip
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", *encode, "-t", "10", str(clip)],
            check=True,
        )
    return ["-stream_loop", "-1", "-i", str(clip), "-c", "copy"]


def capacity(
    server: ServerProcess, chromium, name: str, counts: list[int], seconds: float, profile: bool
) -> list[dict]:
    url = f"{server.web_url}/{name}/whep"
    results = []
    with publishing(
        server, f"{name}:x", source=source(name, server.history_path.parent), seconds=3600
    ):
        opened = 0
        chromium.get(PAGE.as_uri() + "?whep=")
        chromium.set_script_timeout(300)
        chromium.execute_script(MANY_VIEWERS)
        for count in counts:
            chromium.execute_script(
                "await window.openViewers(arguments[0], arguments[1])", url, count - opened
            )
            opened = count
            time.sleep(3)  # let the new sessions connect and settle before measuring
            before_stats = chromium.execute_script("return await window.totals()")
            before_cpu, started = cpu_seconds(server.process.pid), time.monotonic()
            spy = profile and count == counts[-1] and start_profile(server.process.pid, seconds)
            time.sleep(seconds)
            elapsed = time.monotonic() - started
            cpu = (cpu_seconds(server.process.pid) - before_cpu) / elapsed
            after_stats = chromium.execute_script("return await window.totals()")
            pairs = list(zip(after_stats, before_stats, strict=True))
            frames = [a["frames"] - b["frames"] for a, b in pairs]
            lost = sum(a["lost"] - b["lost"] for a, b in pairs)
            dropped = sum(a["dropped"] - b["dropped"] for a, b in pairs)
            rate = statistics.mean(a["bytes"] - b["bytes"] for a, b in pairs) * 8 / elapsed
            expected = RATE * seconds
            clean = lost == 0 and dropped == 0 and min(frames) >= 0.95 * expected
            results.append(
                {"viewers": count, "cpu": cpu, "lost": lost, "dropped": dropped,
                 "min_frames": min(frames), "expected": expected, "clean": clean, "rate": rate}
            )  # fmt: skip
            print(
                f"  {count:3d} viewers: server {cpu * 100:5.1f} % of a core, "
                f"video {rate / 1e6:.2f} Mbit/s per viewer, "
                f"frames per viewer min {min(frames)} of ~{expected:.0f}, "
                f"packets lost {lost}, frames dropped {dropped}",
                flush=True,
            )
            if spy:
                print_profile(spy)
    return results


def start_profile(pid: int, seconds: float) -> subprocess.Popen | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("  (py-spy is not installed: pip install py-spy)")
        return None
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--format", "raw",
         "--output", "/dev/stdout", "--nonblocking"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def print_profile(spy: subprocess.Popen, top: int = 15) -> None:
    """The functions the server spent its samples in, by own time and with callees."""
    stacks, _ = spy.communicate(timeout=60)
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in stacks.splitlines():
        stack, _, count = line.rpartition(" ")
        if line.startswith("py-spy>") or not count.isdigit():
            continue
        frames = [_function(frame) for frame in stack.split(";")]
        samples += int(count)
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + int(count)
    print(f"  py-spy, {samples} samples; own time:")
    for frame, count in sorted(own.items(), key=lambda item: -item[1])[:top]:
        print(f"    {count / samples * 100:5.1f} %  {frame}")
    print("  with callees (below the event loops):")
    inner = {frame: count for frame, count in total.items() if count < samples / 2}
    for frame, count in sorted(inner.items(), key=lambda item: -item[1])[:top]:
        print(f"    {count / samples * 100:5.1f} %  {frame}")


def _function(frame: str) -> str:
    """`name (path/file.py:12)` as `name (file.py)`."""
    found = re.fullmatch(r"(.*) \((?:.*/)?([^/:]+)(?::\d+)?\)", frame)
    return f"{found[1]} ({found[2]})" if found else frame


def crowd(server: ServerProcess, chromium, count: int, seconds: float) -> None:
    url = f"{server.web_url}/crowd/whep"
    clip = source("180p", server.history_path.parent)
    with publishing(server, "crowd:x", source=clip, seconds=3600):
        chromium.get(PAGE.as_uri() + "?whep=")
        chromium.set_script_timeout(600)
        chromium.execute_script(MANY_VIEWERS)
        chromium.execute_script("await window.openViewers(arguments[0], arguments[1])", url, count)
        time.sleep(5)
        before = chromium.execute_script("return await window.totals()")
        before_cpu, started = cpu_seconds(server.process.pid), time.monotonic()
        time.sleep(seconds)
        cpu = (cpu_seconds(server.process.pid) - before_cpu) / (time.monotonic() - started)
        after = chromium.execute_script("return await window.totals()")
    pairs = list(zip(after, before, strict=True))
    expected = RATE * seconds
    frames = sorted(a["frames"] - b["frames"] for a, b in pairs)
    whole = sum(1 for f in frames if f >= 0.95 * expected)
    lost = sum(a["lost"] - b["lost"] for a, b in pairs)
    received = sorted((a["bytes"] - b["bytes"]) * 8 / seconds / 1e3 for a, b in pairs)
    print(
        f"  {count} peer connections on UDP ports {UDP_RANGE[0]}-{UDP_RANGE[1]}: "
        f"server {cpu * 100:.1f} % of a core, packets lost {lost}, video received per "
        f"connection min {received[0]:.0f} kbit/s; frames decoded per connection "
        f"min {frames[0]}, median {frames[len(frames) // 2]} of ~{expected:.0f} "
        f"({whole} decoded >= 95 %: below that, Chromium's decoding is the limit)",
        flush=True,
    )


class DatagramWriter:
    """Sends what the muxer writes as 1316-byte datagrams, padding each frame with null packets.

    srt-live-transmit forwards a UDP datagram as one SRT message at once; a
    frame of this tiny test picture is smaller than a message, so it is
    padded rather than left waiting for the next frame to fill one.
    """

    NULL_PACKET = b"\x47\x1f\xff\x10" + b"\xff" * 184

    def __init__(self, port: int) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.address = ("127.0.0.1", port)

    def write(self, data: bytes) -> int:
        padded = bytes(data) + self.NULL_PACKET * (-(len(data) // 188) % 7)
        for offset in range(0, len(padded), 1316):
            self.socket.sendto(padded[offset : offset + 1316], self.address)
        return len(data)


class NumberedSource:
    """Draws frames that show their own number, encodes them and sends them as they are made."""

    def __init__(self, url: str) -> None:
        self.drawn: dict[int, float] = {}
        self.port = free_port(socket.SOCK_DGRAM)
        self.sender = subprocess.Popen(
            ["srt-live-transmit", "-q", f"udp://127.0.0.1:{self.port}", url],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> NumberedSource:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sender.terminate()
        self.sender.wait(5)

    def _run(self) -> None:
        time.sleep(0.5)  # srt-live-transmit binds its UDP input
        output = av.open(DatagramWriter(self.port), "w", format="mpegts")
        stream = output.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(RATE)}
        stream.codec_context.time_base = Fraction(1, RATE)
        start = time.time()
        number = 0
        while not self._stop.is_set():
            delay = start + number / RATE - time.time()
            if delay > 0:
                time.sleep(delay)
            frame = self._frame(number)
            self.drawn[number] = time.time()
            for packet in stream.encode(frame):
                output.mux(packet)
            number += 1
        output.close()

    @staticmethod
    def _frame(number: int) -> av.VideoFrame:
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        luma = frame.planes[0]
        row = bytearray(luma.line_size)
        for bit in range(BITS):
            value = 235 if number >> bit & 1 else 16
            row[bit * BLOCK : (bit + 1) * BLOCK] = bytes([value]) * BLOCK
        luma.update(bytes(row) * HEIGHT)
        for chroma in frame.planes[1:]:
            chroma.update(b"\x80" * (chroma.line_size * chroma.height))
        frame.pts = number
        frame.time_base = Fraction(1, RATE)
        return frame


def latency(server: ServerProcess, chromium, seconds: float, tcp: bool) -> list[float]:
    # A stream of its own per run: a stream published again within its reconnect grace
    # continues with timestamps that start over, which is not what is measured here.
    stream = "numbered-tcp" if tcp else "numbered-udp"
    with NumberedSource(server.srt_url(f"{stream}:x")) as source:
        server.wait_for_log(f"publishing {stream} over SRT", 10)
        chromium.get(f"{PAGE.as_uri()}?whep={server.web_url}/{stream}/whep&tcp={int(tcp)}")
        deadline = time.monotonic() + 20
        # Read frames once the video plays: a callback on a video with no picture yet fails.
        while not chromium.execute_script("return document.getElementById('video').currentTime"):
            if time.monotonic() > deadline:
                raise SystemExit("the latency viewer did not play")
            time.sleep(0.1)
        chromium.execute_script(FRAME_READER)
        time.sleep(seconds)
        shown = chromium.execute_script("return window.shown")
    server.wait_for_log(f"stopped publishing {stream}", 15)
    # Skip the first second: the viewer starts on a cached keyframe and catches up.
    values = [
        (at / 1000 - source.drawn[number]) * 1000
        for number, at in shown
        if number in source.drawn and number > 2 * RATE
    ]
    return values


def report(name: str, results: list[dict]) -> None:
    if len(results) > 1:
        xs, ys = [r["viewers"] for r in results], [r["cpu"] for r in results]
        mean_x, mean_y = statistics.mean(xs), statistics.mean(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mean_x) ** 2 for x in xs
        )
        rate = statistics.mean(r["rate"] for r in results)
        print(f"  {name}: server CPU per viewer {slope * 100:.2f} % of a core", end="")
        if slope > 0:
            print(
                f", {int(1 / slope)} viewers per core, "
                f"{rate / slope / 1e6:.0f} Mbit/s of video per core"
            )
        else:
            print()
    clean = [r["viewers"] for r in results if r["clean"] and r["cpu"] < 1.0]
    print(f"  {name}: largest N with no loss, under one core: {max(clean) if clean else 0}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", help="viewer counts for every source (default: per source)")
    parser.add_argument("--crowd", type=int, default=50)
    parser.add_argument("--sources", default="360p,720p")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    for program in ("ffmpeg", "srt-live-transmit", "chromium", "chromedriver"):
        if shutil.which(program) is None:
            raise SystemExit(f"{program} is needed (scripts/test installs it)")
    print(f"Load before: {Path('/proc/loadavg').read_text().strip()} ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory() as work:
        low, high = UDP_RANGE
        server = start_server(
            Path(work),
            {
                # Every viewer here is one machine.
                "webrtc": {"minPortUDP": low, "maxPortUDP": high, "maxSessionsPerHost": 1000},
                "auth": {"enabled": False},
            },
        )
        results = {}
        try:
            chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
            for tcp in () if args.skip_latency else (False, True):
                print(
                    f"Glass-to-glass latency over {'ICE-TCP' if tcp else 'UDP'} "
                    "(drawn -> displayed in Chromium), 320x180 at 25 fps:"
                )
                with open_chromium(chromium, driver) as browser:
                    values = sorted(latency(server, browser, args.seconds, tcp))
                if values:
                    print(
                        f"  {len(values)} frames: p50 {statistics.median(values):.0f} ms, "
                        f"p95 {values[int(len(values) * 0.95)]:.0f} ms, min {values[0]:.0f} ms"
                    )
                else:
                    print("  no numbered frame was displayed")
            for name in args.sources.split(","):
                print(f"Capacity (one {SOURCES[name][0]} stream with AAC audio):")
                with open_chromium(chromium, driver) as browser:
                    counts = [int(n) for n in (args.viewers or SOURCES[name][3]).split(",")]
                    results[name] = capacity(
                        server, browser, name, counts, args.seconds, args.profile
                    )
            if args.crowd:
                print(f"Crowd ({SOURCES['180p'][0]}):")
                with open_chromium(chromium, driver) as browser:
                    crowd(server, browser, args.crowd, args.seconds)
        finally:
            server.stop()
    for name, measured in results.items():
        report(SOURCES[name][0], measured)
    print(f"Load after: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
