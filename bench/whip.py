"""WHIP publishing: glass-to-glass WHIP -> WHEP in Chromium against SRT -> WHEP, and its server CPU.

Run: .venv/bin/python bench/whip.py [--seconds 10] [--bitrate 4000000]

Prints, for the Ghostream server (a subprocess, as shipped):
- glass-to-glass latency over WHIP: one headless Chromium page draws frames
  that show their number as a row of black and white blocks on a canvas
  (with moving noise below, so the encoder has work), publishes the canvas
  and a tone over WHIP, and plays the stream back over WHEP; the time a
  frame was drawn is compared with the time the player displays it
  (requestVideoFrameCallback).  One page, one clock;
- the same figure for an SRT publish (bench/webrtc.py's numbered source,
  sent by srt-live-transmit), measured in the same run for comparison;
- server CPU while the WHIP publish runs at the asked bitrate, with and
  without its WHEP viewer, and the bitrate the server actually received.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness.browser import open_chromium  # noqa: E402
from harness.server_process import ServerProcess, start_server  # noqa: E402
from process_usage import cpu_seconds  # noqa: E402
from webrtc import latency as srt_latency  # noqa: E402

WIDTH, HEIGHT, RATE, BITS = 640, 360, 30, 16
BLOCK = WIDTH // BITS

PUBLISH_AND_WATCH = f"""
const [bitrate, done] = arguments;
window.drawn = {{}};
window.shown = [];
const canvas = document.createElement("canvas");
canvas.width = {WIDTH};
canvas.height = {HEIGHT};
const context = canvas.getContext("2d");
let number = 0;
setInterval(() => {{
  for (let i = 0; i < 60; i++) {{
    const [r, g, b] = [0, 1, 2].map(() => Math.random() * 255);
    context.fillStyle = `rgb(${{r}},${{g}},${{b}})`;
    context.fillRect(Math.random() * {WIDTH}, {BLOCK} + Math.random() * {HEIGHT - BLOCK}, 48, 48);
  }}
  for (let bit = 0; bit < {BITS}; bit++) {{
    context.fillStyle = number >> bit & 1 ? "#fff" : "#000";
    context.fillRect(bit * {BLOCK}, 0, {BLOCK}, {BLOCK});
  }}
  window.drawn[number] = performance.timeOrigin + performance.now();
  number++;
}}, 1000 / {RATE});
const media = canvas.captureStream({RATE});
const audio = new AudioContext();
const tone = audio.createOscillator();
const sink = audio.createMediaStreamDestination();
tone.connect(sink);
tone.start();
media.addTrack(sink.stream.getAudioTracks()[0]);

async function negotiate(pc, url, headers, munge = (sdp) => sdp) {{
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {{
    if (pc.iceGatheringState === "complete") return resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
  }});
  const response = await fetch(url, {{method: "POST",
    headers: {{"Content-Type": "application/sdp", ...headers}}, body: pc.localDescription.sdp}});
  if (response.status !== 201) throw new Error(url + " answered " + response.status);
  await pc.setRemoteDescription({{type: "answer", sdp: munge(await response.text())}});
}}
// Send at the asked rate from the start, as OBS does, instead of Chromium's bandwidth probing.
const kbps = Math.round(bitrate / 1000);
const steady = (sdp) => sdp.replace(/(a=fmtp:\\d+ .*packetization-mode=1.*)/g,
  `$1;x-google-start-bitrate=${{kbps}};x-google-min-bitrate=${{kbps}};x-google-max-bitrate=${{kbps}}`);

(async () => {{
  const publisher = new RTCPeerConnection();
  for (const track of media.getTracks()) {{
    const transceiver = publisher.addTransceiver(track, {{direction: "sendonly"}});
    if (track.kind !== "video") continue;
    const h264 = RTCRtpSender.getCapabilities("video").codecs.filter(
      (c) => c.mimeType === "video/H264" && /packetization-mode=1/.test(c.sdpFmtpLine));
    transceiver.setCodecPreferences(h264);
    const parameters = transceiver.sender.getParameters();
    parameters.degradationPreference = "maintain-resolution";
    parameters.encodings[0].maxBitrate = bitrate;
    await transceiver.sender.setParameters(parameters);
  }}
  await negotiate(publisher, "/demo/whip", {{Authorization: "Bearer demo"}}, steady);
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const viewer = new RTCPeerConnection();
  viewer.addTransceiver("video", {{direction: "recvonly"}});
  viewer.addTransceiver("audio", {{direction: "recvonly"}});
  const video = document.createElement("video");
  video.muted = true;
  video.autoplay = true;
  document.body.appendChild(video);
  const reader = new OffscreenCanvas({WIDTH}, {HEIGHT});
  const pixels = reader.getContext("2d", {{willReadFrequently: true}});
  viewer.ontrack = (event) => {{
    if (event.track.kind === "video") video.srcObject = new MediaStream([event.track]);
  }};
  await negotiate(viewer, "/demo/whep", {{}});
  function onFrame(now, metadata) {{
    pixels.drawImage(video, 0, 0, {WIDTH}, {HEIGHT});
    const row = pixels.getImageData(0, {BLOCK // 2}, {WIDTH}, 1).data;
    let shown = 0;
    for (let bit = 0; bit < {BITS}; bit++) {{
      if (row[(bit * {BLOCK} + {BLOCK // 2}) * 4] > 128) shown |= 1 << bit;
    }}
    window.shown.push([shown, performance.timeOrigin + metadata.expectedDisplayTime]);
    video.requestVideoFrameCallback(onFrame);
  }}
  video.requestVideoFrameCallback(onFrame);
  window.viewer = viewer;
  window.publisher = publisher;
  done("ok");
}})().catch((error) => done(String(error)));
"""


def bytes_in(server: ServerProcess) -> int:
    with urllib.request.urlopen(f"{server.web_url}/api/streams", timeout=5) as response:
        streams = json.load(response)["streams"]
    return sum(s["bytes_in"] for s in streams if s["id"] == "demo")


def measure(server: ServerProcess, seconds: float) -> tuple[float, float]:
    """Server CPU (fraction of a core) and received bitrate over `seconds`."""
    cpu, received, started = cpu_seconds(server.process.pid), bytes_in(server), time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    return (
        (cpu_seconds(server.process.pid) - cpu) / elapsed,
        (bytes_in(server) - received) * 8 / elapsed,
    )


def summary(values: list[float]) -> str:
    if not values:
        return "no numbered frame was displayed"
    values = sorted(values)
    return (
        f"{len(values)} frames: p50 {statistics.median(values):.0f} ms, "
        f"p95 {values[int(len(values) * 0.95)]:.0f} ms, min {values[0]:.0f} ms"
    )


def whip_run(server: ServerProcess, browser, seconds: float, bitrate: int) -> None:
    browser.get(f"{server.web_url}/demo/publish")
    browser.set_script_timeout(60)
    outcome = browser.execute_async_script(PUBLISH_AND_WATCH, bitrate)
    if outcome != "ok":
        raise SystemExit(f"WHIP publish or WHEP playback failed: {outcome}")
    server.wait_for_log("publishing demo over WHIP", 10)
    time.sleep(3)  # the viewer catches up from the cached keyframe, the encoder ramps up
    browser.execute_script("window.shown = []")
    cpu_both, rate = measure(server, seconds)
    drawn = browser.execute_script("return window.drawn")
    shown = browser.execute_script("return window.shown")
    values = [at - drawn[str(number)] for number, at in shown if str(number) in drawn]
    print(f"  WHIP -> WHEP: {summary(values)}")
    browser.execute_script("window.viewer.close()")
    time.sleep(2)
    cpu_alone, rate_alone = measure(server, seconds)
    print(
        f"Server CPU, one WHIP publish at {rate_alone / 1e6:.2f} Mbit/s received "
        f"(asked {bitrate / 1e6:.1f}): {cpu_alone * 100:.1f} % of a core alone, "
        f"{cpu_both * 100:.1f} % with one WHEP viewer ({rate / 1e6:.2f} Mbit/s then)"
    )
    browser.execute_script("window.publisher.close()")
    server.wait_for_log("stopped publishing demo over WHIP", 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--bitrate", type=int, default=4_000_000)
    args = parser.parse_args()
    for program in ("ffmpeg", "srt-live-transmit", "chromium", "chromedriver"):
        if shutil.which(program) is None:
            raise SystemExit(f"{program} is needed (scripts/test installs it)")
    print(f"Machine load (1, 5, 15 min): {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    with tempfile.TemporaryDirectory() as work:
        # bench/webrtc.py's numbered SRT source publishes with a key of its own.
        overrides = {"streams": {"reconnectGrace": 1}, "auth": {"enabled": False}}
        server = start_server(Path(work), overrides)
        try:
            print(f"Glass-to-glass latency (drawn -> displayed in Chromium), {RATE} fps:")
            with open_chromium(chromium, driver) as browser:
                whip_run(server, browser, args.seconds, args.bitrate)
            with open_chromium(chromium, driver) as browser:
                values = srt_latency(server, browser, args.seconds, tcp=False)
            print(f"  SRT -> WHEP (320x180, 25 fps, srt.latency default): {summary(values)}")
        finally:
            server.stop()
    print(f"Machine load after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
