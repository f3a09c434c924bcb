"""LL-HLS through the real server: ffmpeg, httpx, hls.js in Chromium and an nginx cache as peers.

A live test signal is published over SRT; every check reads what a player
or a CDN would read over HTTP, and waits for conditions, not for time.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import trio
from harness.browser import wait_for
from harness.media import signal_source
from harness.publisher import publishing
from harness.server_process import ServerProcess, free_port

HLS_JS = (
    Path(__file__)
    .resolve()
    .parents[2]
    .joinpath("ghostream", "web", "node_modules", "hls.js", "dist", "hls.js")
)
SOURCE = signal_source("320x180", "-tune", "zerolatency")
PART = re.compile(r'#EXT-X-PART:DURATION=([0-9.]+),URI="([^"]+)"')
HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-[0-9a-f]+-(\d+)-(\d+)\.m4s"')


@pytest.fixture
def publisher(
    require_program, ghostream_server
) -> Iterator[tuple[ServerProcess, subprocess.Popen]]:
    """The server and the ffmpeg process publishing to it (tests may pause the source)."""
    require_program("ffmpeg")
    server = ghostream_server({"auth": {"enabled": False}})
    with publishing(server, "demo:demo", source=SOURCE, seconds=60) as process:
        yield server, process


@pytest.fixture
def live(publisher: tuple[ServerProcess, subprocess.Popen]) -> ServerProcess:
    return publisher[0]


def hint(playlist: str) -> tuple[int, int]:
    match = HINT.search(playlist)
    assert match, playlist
    return int(match[1]), int(match[2])


def part_requests(server: ServerProcess) -> int:
    text = httpx.get(server.metrics_url).text
    match = re.search(r'ghostream_hls_part_requests_total\{stream="demo"\} ([0-9.e+]+)', text)
    return int(float(match[1])) if match else 0


def test_ffmpeg_reads_the_playlist_and_decodes_video_and_audio(
    live: ServerProcess, tmp_path: Path
) -> None:
    frames = tmp_path / "frames.md5"
    result = subprocess.run(
        ["ffmpeg", "-hide_banner", "-v", "error", "-i", f"{live.web_url}/demo/index.m3u8",
         "-map", "0", "-t", "3", "-f", "framemd5", str(frames)],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b"", result.stderr.decode()
    lines = [line for line in frames.read_text().splitlines() if line[:1] != "#"]
    assert len([line for line in lines if line.startswith("0,")]) >= 70
    assert len([line for line in lines if line.startswith("1,")]) >= 120
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width",
         "-of", "csv=p=0", f"{live.web_url}/demo/index.m3u8"],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    # ffprobe lists the streams once per HLS program and once for the file.
    assert set(probe.stdout.split()) == {"aac", "h264,320"}, probe.stderr


def test_playlists_follow_the_low_latency_rules_and_cache_headers(live: ServerProcess) -> None:
    with httpx.Client(base_url=live.web_url, timeout=20) as client:
        index = client.get("/demo/index.m3u8")
        assert index.status_code == 200
        assert index.headers["content-type"] == "application/vnd.apple.mpegurl"
        assert index.headers["access-control-allow-origin"] == "*"
        assert index.headers["cache-control"] == "public, max-age=1"
        assert re.search(
            r'#EXT-X-STREAM-INF:BANDWIDTH=\d+,CODECS="avc1\.42c0[0-9a-f]{2},mp4a\.40\.2",'
            r"RESOLUTION=320x180\nmedia\.m3u8\n",
            index.text,
        ), index.text
        media = client.get("/demo/media.m3u8")
        text = media.text
        for tag in (
            "#EXT-X-VERSION:9\n",
            "#EXT-X-TARGETDURATION:2\n",
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12,PART-HOLD-BACK=0.6\n",
            "#EXT-X-PART-INF:PART-TARGET=0.2\n",
            "#EXT-X-PROGRAM-DATE-TIME:",
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=",
        ):
            assert tag in text, text
        parts = PART.findall(text)
        assert parts and all(float(duration) <= 0.2 for duration, _ in parts)
        assert ",INDEPENDENT=YES" in text
        init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', text)[1]
        for name in (init, parts[-1][1], re.search(r"^seg-.*$", text, re.M)[0]):
            answer = client.get(f"/demo/{name}")
            assert answer.status_code == 200 and answer.content
            assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
        preflight = client.options("/demo/media.m3u8", headers={"Origin": "http://elsewhere"})
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "*"
        msn, _ = hint(text)
        assert client.get(f"/demo/media.m3u8?_HLS_msn={msn + 3}").status_code == 400
        assert client.get("/demo/media.m3u8?_HLS_part=1").status_code == 400
        assert client.get("/nobody/index.m3u8").status_code == 404
        assert client.get("/nobody/media.m3u8").status_code == 404
        assert client.get(f"/demo/{init.replace('-0.mp4', '-7.mp4')}").status_code == 404


def test_blocking_reload_answers_when_the_part_exists_and_times_out_otherwise(
    publisher: tuple[ServerProcess, subprocess.Popen],
) -> None:
    server, source = publisher
    with httpx.Client(base_url=server.web_url, timeout=20) as client:
        msn, part = hint(client.get("/demo/media.m3u8").text)
        url = f"/demo/media.m3u8?_HLS_msn={msn}&_HLS_part={part}"
        blocked = client.get(url)
        # Answered when the part came; a timeout would be a 503 (below).
        assert blocked.status_code == 200
        listed = {uri for _, uri in PART.findall(blocked.text)}
        assert any(uri.endswith(f"-{msn}-{part}.m4s") for uri in listed), blocked.text
        assert blocked.headers["cache-control"] == "public, max-age=30"
        # With the publisher frozen no part comes: after three target durations the
        # answer is Service Unavailable (RFC 8216bis 6.2.5.2), not for a cache to keep.
        next_msn, next_part = hint(blocked.text)
        source.send_signal(signal.SIGSTOP)
        try:
            before = time.monotonic()
            stalled = client.get(f"/demo/media.m3u8?_HLS_msn={next_msn}&_HLS_part={next_part + 1}")
            waited = time.monotonic() - before
        finally:
            source.send_signal(signal.SIGCONT)
        assert stalled.status_code == 503
        assert stalled.headers["cache-control"] == "no-store"
        # Not before three target durations.
        assert waited >= 5.0
        assert f'-{next_msn}-{next_part + 1}.m4s"\n' not in stalled.text


def test_the_packager_stops_when_no_player_asks(live: ServerProcess) -> None:
    start = live.line_count()
    with httpx.Client(base_url=live.web_url, timeout=20) as client:
        assert client.get("/demo/media.m3u8").status_code == 200
    live.wait_for_log("demo: LL-HLS packager stopped, unwatched", 30, start=start)
    # Asked again, it starts again and serves.
    with httpx.Client(base_url=live.web_url, timeout=20) as client:
        assert client.get("/demo/media.m3u8").status_code == 200


def test_delta_update_equals_the_full_playlist_without_its_oldest_segments(
    require_program, ghostream_server
) -> None:
    """`_HLS_skip=YES` (RFC 8216bis 6.2.5.1) must list exactly what the full playlist does."""
    require_program("ffmpeg")
    server = ghostream_server({"auth": {"enabled": False}, "streams": {"reconnectGrace": 60}})
    # Twenty seconds of media read four times faster than real time: a window long
    # enough to skip from (CAN-SKIP-UNTIL is 12 s) without waiting twenty seconds.
    fast = ["-readrate", "4", *SOURCE[:4], "-readrate", "4", *SOURCE[4:]]
    with (
        publishing(server, "demo:demo", source=fast, seconds=20) as process,
        httpx.Client(base_url=server.web_url, timeout=20) as client,
    ):
        assert client.get("/demo/media.m3u8").status_code == 200
        process.wait(30)
        server.wait_for_log("stopped publishing demo", 10)
        full = client.get("/demo/media.m3u8").text
        delta = client.get("/demo/media.m3u8?_HLS_skip=YES").text
    skipped = int(re.search(r"#EXT-X-SKIP:SKIPPED-SEGMENTS=(\d+)", delta)[1])
    assert skipped > 0, delta
    full_segments = re.findall(r"^seg-\S+$", full, re.M)
    delta_segments = re.findall(r"^seg-\S+$", delta, re.M)
    assert delta_segments == full_segments[skipped:]
    # Everything after the last skipped segment is the same, line for line.
    tail = full.split(full_segments[skipped - 1] + "\n", 1)[1]
    assert delta.endswith(tail)
    assert "#EXT-X-VERSION:9" in delta


PLAYER_PAGE = """<!doctype html>
<video id="video" muted autoplay playsinline></video>
<script src="{hls_js}"></script>
<script>
  window.parts = 0;
  window.errors = [];
  const video = document.getElementById("video");
  const hls = new Hls({{ lowLatencyMode: true }});
  window.hls = hls;
  hls.on(Hls.Events.FRAG_LOADED, (event, data) => {{ if (data.part) window.parts += 1; }});
  hls.on(Hls.Events.ERROR, (event, data) => window.errors.push(data.details));
  hls.loadSource("{source}");
  hls.attachMedia(video);
  video.play();
</script>
"""


def player_page(directory: Path, source: str) -> str:
    """A page on file:// (another origin than the server) playing `source` with hls.js."""
    page = directory / "player.html"
    page.write_text(PLAYER_PAGE.format(hls_js=HLS_JS.as_uri(), source=source))
    return page.as_uri()


def test_hls_js_plays_in_low_latency_mode_from_parts(
    live: ServerProcess, chromium, tmp_path: Path
) -> None:
    assert HLS_JS.exists(), "npm install --prefix ghostream/web installs hls.js"
    chromium.get(player_page(tmp_path, f"{live.web_url}/demo/index.m3u8"))
    started = wait_for(
        chromium, "return document.getElementById('video').currentTime", lambda t: t > 0.5, 20,
        "playback starts",
    )  # fmt: skip
    wait_for(
        chromium, "return document.getElementById('video').currentTime",
        lambda t: t > started + 2, 20, "playback advances",
    )  # fmt: skip
    state = chromium.execute_script(
        "return {parts: window.parts, latency: window.hls.latency, low: window.hls.lowLatencyMode,"
        " errors: window.errors}"
    )
    assert state["low"] is True
    assert state["parts"] >= 5, state
    # Well under a segment behind the live edge: parts, not segments, are being played.
    assert 0 < state["latency"] < 2.0, state


# One process that keeps the caller's user: run as root, workers would drop to
# nobody and lose access to the test's private temporary directory.
NGINX_CONFIG = """
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    proxy_cache_path {prefix}/cache keys_zone=hls:10m;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass {origin};
            proxy_http_version 1.1;
            proxy_cache hls;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10s;
            proxy_cache_lock_age 10s;
            proxy_read_timeout 20s;
        }}
    }}
}}
"""


@contextmanager
def nginx_cache(nginx: str, directory: Path, origin: str) -> Iterator[str]:
    """An unmodified nginx proxy_cache in front of `origin`, on a free loopback port."""
    port = free_port()
    directory.mkdir()
    config = directory / "nginx.conf"
    config.write_text(NGINX_CONFIG.format(prefix=directory, port=port, origin=origin))
    errors = (directory / "stderr.log").open("w")
    process = subprocess.Popen(
        [nginx, "-p", str(directory), "-c", str(config), "-e", "stderr", "-g", "daemon off;"],
        stdin=subprocess.DEVNULL, stderr=errors,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, (directory / "stderr.log").read_text()
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        errors.close()


async def follow(client: httpx.AsyncClient, seconds: float) -> list[str]:
    """A player: blocking reloads for the next part, then fetch every part it does not have."""
    fetched: list[str] = []
    playlist = (await client.get("/demo/media.m3u8")).text
    deadline = trio.current_time() + seconds
    while trio.current_time() < deadline:
        for _, uri in PART.findall(playlist):
            if uri not in fetched:
                answer = await client.get(f"/demo/{uri}")
                assert answer.status_code == 200, uri
                fetched.append(uri)
        msn, part = hint(playlist)
        answer = await client.get(f"/demo/media.m3u8?_HLS_msn={msn}&_HLS_part={part}")
        assert answer.status_code == 200
        playlist = answer.text
    return fetched


async def test_a_caching_proxy_serves_many_players_and_the_origin_sends_each_part_once(
    require_program, live: ServerProcess, tmp_path: Path
) -> None:
    nginx = require_program("nginx")
    with httpx.Client(base_url=live.web_url) as client:
        # Start the packager, so that the players start on a playlist with parts.
        assert client.get("/demo/media.m3u8", timeout=20).status_code == 200
    before = part_requests(live)
    with nginx_cache(nginx, tmp_path / "nginx", live.web_url) as proxy:
        results: list[list[str]] = []

        async def player() -> None:
            async with httpx.AsyncClient(base_url=proxy, timeout=20) as client:
                results.append(await follow(client, 4.0))

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(player)
    served = part_requests(live) - before
    distinct = {uri for fetched in results for uri in fetched}
    assert all(len(fetched) >= 15 for fetched in results), [len(f) for f in results]
    # Every part reached every player, and the origin sent each one once.
    assert served == len(distinct), (served, len(distinct))
