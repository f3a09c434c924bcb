"""The container images, built by `scripts/image` and run with podman (or docker).

Reading the Dockerfiles (test_packaging) cannot see a missing shared library,
a wrong path or a permission problem. Here the Debian image is built the way
users build it and run the way README shows: the configuration mounted
read-only, the history in a named volume, ports published on the host's
loopback; everything is checked from the host with ffmpeg, ffprobe and HTTP.

A cold build makes its Debian bases with debootstrap when no registry can be
reached (minutes); they are cached, so later runs rebuild only the layers the
checkout changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from harness.programs import require
from harness.publisher import SOURCE
from harness.server_process import free_port

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 1200
# Every test here may wait for a cold image build.
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT + 120)
EXIT_NO_BASE = 3


@dataclass
class Engine:
    command: str
    env: dict[str, str]
    image: str

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.command, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def check(self, *args: str, timeout: float = 60) -> str:
        result = self(*args, timeout=timeout)
        assert result.returncode == 0, f"{self.command} {' '.join(args)}: {result.stderr}"
        return result.stdout


def build_image(flavour: str) -> Engine:
    if not shutil.which("docker"):
        require("podman")
    # A name of this checkout's own: test runs in other checkouts build theirs.
    name = f"localhost/ghostream-test:{flavour}-{hashlib.sha1(bytes(ROOT)).hexdigest()[:8]}"
    result = subprocess.run(
        [ROOT / "scripts" / "image", flavour, name],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode == EXIT_NO_BASE:
        # A base image from a registry this machine cannot reach is no program CI installs.
        pytest.skip(f"the {flavour} image cannot be built here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr[-6000:]
    chosen = dict(line.split("=", 1) for line in result.stdout.splitlines())
    env = os.environ | {k: v for k, v in chosen.items() if k not in ("ENGINE", "IMAGE")}
    return Engine(chosen["ENGINE"], env, chosen["IMAGE"])


@pytest.fixture(scope="module")
def debian_image() -> Engine:
    return build_image("debian")


@dataclass
class Container:
    engine: Engine
    name: str
    web_url: str
    srt_port: int

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.web_url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                logs = self.engine("logs", self.name)
                raise AssertionError(f"/healthz did not answer in {timeout}s:\n{logs.stderr}")
            time.sleep(0.2)

    def state(self) -> dict:
        return json.loads(self.engine.check("inspect", self.name))[0]["State"]


@pytest.fixture
def container(debian_image: Engine, tmp_path: Path) -> Iterator[Container]:
    """The Debian image running as README shows, on free loopback ports of the host."""
    config = tmp_path / "ghostream.yml"
    # No STUN server can be reached from the test machine.
    config.write_text(yaml.safe_dump({"webrtc": {"STUNServers": []}}))
    suffix = uuid.uuid4().hex[:8]
    name, volume = f"ghostream-test-{suffix}", f"ghostream-test-data-{suffix}"
    web, srt = free_port(), free_port(socket.SOCK_DGRAM)
    debian_image.check(
        "run", "--detach", "--name", name,
        "-p", f"127.0.0.1:{web}:8080", "-p", f"127.0.0.1:{srt}:9710/udp",
        "-v", f"{config}:/etc/ghostream/ghostream.yml:ro",
        "-v", f"{volume}:/var/lib/ghostream",
        debian_image.image,
    )  # fmt: skip
    running = Container(debian_image, name, f"http://127.0.0.1:{web}", srt)
    try:
        running.wait_healthy()
        yield running
    finally:
        debian_image("rm", "--force", "--time", "0", name)
        debian_image("volume", "rm", "--force", volume)


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def wait_live(container: Container, stream: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        streams = json.loads(get(container.web_url + "/api/streams")[1])["streams"]
        if any(s["id"] == stream and s["state"] == "live" for s in streams):
            return
        time.sleep(0.2)
    raise AssertionError(f"{stream} is not live after {timeout}s")


def test_debian_image_serves_publishes_keeps_history_and_stops_cleanly(
    container: Container, require_program
) -> None:
    require_program("ffmpeg")
    require_program("ffprobe")
    engine = container.engine
    status = engine.check("exec", container.name, "cat", "/proc/1/status")
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    assert uid != "0", "the server runs as an unprivileged user"
    toolchain = engine("exec", container.name, "sh", "-c", "command -v pip npm node gcc")
    assert toolchain.stdout == "", "the build toolchain stays in the build stages"
    assert get(container.web_url + "/static/vendor/hls.min.js")[0] == 200

    srt = f"srt://127.0.0.1:{container.srt_port}"
    publisher = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", *SOURCE, "-t", "30",
         "-f", "mpegts", f"{srt}?streamid=demo:demo"],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_live(container, "demo")
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
             f"{srt}?streamid=demo"],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert probe.returncode == 0, probe.stderr
        assert set(probe.stdout.split()) == {"aac", "h264"}
        status, playlist = get(container.web_url + "/demo/index.m3u8")
        assert status == 200 and playlist.startswith("#EXTM3U")
    finally:
        publisher.terminate()
        publisher.wait(10)

    # SIGTERM, and SIGKILL after 2 s: a clean stop within them exits with 0, a kill with 137.
    engine.check("stop", "--time", "2", container.name)
    assert container.state()["ExitCode"] == 0, engine("logs", container.name).stderr
    engine.check("start", container.name)
    container.wait_healthy()
    history = engine.check("exec", container.name, "ghostream", "history", "--json")
    sessions = [json.loads(line) for line in history.splitlines()]
    assert ("publish", "demo") in {(s["kind"], s["stream"]) for s in sessions}


def test_alpine_image_builds_and_runs_unprivileged(tmp_path: Path) -> None:
    engine = build_image("alpine")
    user = engine.check("image", "inspect", "--format", "{{.Config.User}}", engine.image)
    assert user.strip() not in ("", "root", "0")
    version = engine.check("run", "--rm", engine.image, "--version")
    assert version.startswith("ghostream ")
