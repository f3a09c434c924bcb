"""Container images and the Grafana dashboard, checked against the code they ship.

Here the images are checked from their Dockerfiles (test_image builds and
runs them where podman or docker works): every file they copy exists, the ports they expose
are the server's defaults, they run unprivileged, keep the history in their
volume and ask `/healthz`.  `test_entry_command_runs_as_in_the_image` then
runs the image's command with the image's environment.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
import yaml
from harness.server_process import start_server

from ghostream import monitoring
from ghostream.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "Dockerfile", ROOT / "Dockerfile.debian"]


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    return [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1] if " " in line else "")
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith("#")
    ]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_matches_the_server(path: Path) -> None:
    steps = instructions(path)
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    ops = dict(final)
    for op, args in steps:
        if op == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), f"{path.name} copies missing {source}"
    defaults = Settings()
    expected = {
        f"{defaults.srt.listen_address.port}/udp",
        f"{defaults.web.listen_address.port}/tcp",
        f"{defaults.webrtc.min_port_udp}-{defaults.webrtc.max_port_udp}/udp",
        f"{defaults.monitoring.listen_address.port}/tcp",
    }
    assert set(ops["EXPOSE"].split()) == expected
    assert ops["USER"] not in ("root", "0")
    history = re.search(r"GHOSTREAM_HISTORY_PATH=(\S+)", ops["ENV"]).group(1)
    assert str(Path(history).parent) == ops["VOLUME"]
    assert f"127.0.0.1:{defaults.web.listen_address.port}/healthz" in ops["HEALTHCHECK"]
    assert json.loads(ops["ENTRYPOINT"]) == ["ghostream"] and json.loads(ops["CMD"]) == ["run"]


def test_entry_command_runs_as_in_the_image(tmp_path: Path) -> None:
    """`ghostream run` with the image's environment: history in the volume, /healthz ready."""
    volume = tmp_path / "var-lib-ghostream"
    volume.mkdir()
    env = {"GHOSTREAM_HISTORY_PATH": str(volume / "history.sqlite3")}
    # The environment wins over the test's file, as it does over a mounted one.
    server = start_server(tmp_path, {}, env=env)
    try:
        with urllib.request.urlopen(server.web_url + "/healthz", timeout=5) as response:
            assert response.status == 200
        assert (volume / "history.sqlite3").exists()
    finally:
        server.stop()


def test_dashboard_queries_only_metrics_the_server_exports() -> None:
    dashboard = json.loads((ROOT / "grafana" / "ghostream-dashboard.json").read_text())
    exported = set()
    for family in monitoring.REGISTRY.collect():
        exported |= {sample.name for sample in family.samples} | {
            family.name + suffix for suffix in ("", "_total", "_info")
        }
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(?:ghostream|process)_[a-z_]+", target["expr"])
    }
    assert queried and queried <= exported, queried - exported


def test_compose_file_runs_the_image_as_the_dockerfile_expects() -> None:
    """No compose tool runs here (its Traefik image cannot be pulled): checked as text."""
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["ghostream"]
    assert (ROOT / service["build"] / "Dockerfile").is_file()
    defaults = Settings()
    published = {port.split(":", 1)[1] for port in service["ports"]}
    assert published == {
        f"{defaults.srt.listen_address.port}/udp",
        f"{defaults.webrtc.min_port_udp}-{defaults.webrtc.max_port_udp}/udp",
    }
    ops = dict(instructions(ROOT / "Dockerfile"))
    mounts = {volume.split(":")[1]: volume for volume in service["volumes"]}
    assert mounts["/etc/ghostream/ghostream.yml"].endswith(":ro")
    assert ops["VOLUME"] in mounts
