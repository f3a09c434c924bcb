"""SRT metrics are the stack's own figures: a publish over a lossy link shows its repairs."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request

from harness.media import signal_source
from harness.server_process import ServerProcess
from harness.udp_relay import UdpRelay

LOSSY = {"loss": 0.05, "reorder": 0.02, "delay_ms": 5, "seed": 3}


def scrape(server: ServerProcess) -> dict[str, float]:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    return {
        name: float(value)
        for name, value in re.findall(r"^(ghostream_srt_[^ ]+) ([0-9.e+-]+)$", text, re.M)
    }


def test_a_publish_through_a_lossy_link_shows_retransmits(require_program, ghostream_server):
    require_program("ffmpeg")
    server = ghostream_server()
    with UdpRelay(("127.0.0.1", server.srt_port), **LOSSY) as relay:
        url = f"srt://127.0.0.1:{relay.address[1]}?streamid=demo:demo"
        publisher = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
             *signal_source("320x180"), "-t", "4", "-f", "mpegts", url],
            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            server.wait_for_log("publishing demo over SRT")
            during = None
            while publisher.poll() is None:
                figures = scrape(server)
                if figures['ghostream_srt_packets_lost_total{role="publish"}'] > 0:
                    during = figures
                    break
                time.sleep(0.1)
            assert during is not None, "no loss seen while publishing"
            assert during['ghostream_srt_connections{role="publish"}'] == 1
            assert during['ghostream_srt_rtt_seconds{role="publish"}'] > 0
            assert publisher.wait(30) == 0, publisher.stderr.read().decode()
        finally:
            publisher.kill()
            publisher.wait()
        assert relay.dropped > 0
    server.wait_for_log("stopped publishing demo")
    after = scrape(server)
    assert after['ghostream_srt_packets_retransmitted_total{role="publish"}'] > 0
    assert after['ghostream_srt_packets_lost_total{role="publish"}'] > 0
    assert after['ghostream_srt_connections{role="publish"}'] == 0
