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

from ghostream import config as config_module
from ghostream import monitoring
from ghostream.config import Settings, load_settings, srt_address
from ghostream.http.app import HlsMediaConvertor

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
        f"{defaults.rtmp.listen_address.port}/tcp",
        f"{defaults.rtmp.tls.listen_address.port}/tcp",
        f"{defaults.web.listen_address.port}/tcp",
        f"{defaults.webrtc.min_port_udp}-{defaults.webrtc.max_port_udp}/udp",
        f"{defaults.webrtc.tcp_listen_address.port}/tcp",
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


def edges_deployment(monkeypatch: pytest.MonkeyPatch) -> tuple[dict, dict[str, Settings]]:
    """docker-compose.edges.yml, and the settings each Ghostream service would run with."""
    monkeypatch.setattr(config_module, "DEFAULT_PATH", ROOT / "absent.yml")
    text = (ROOT / "docker-compose.edges.yml").read_text()
    compose = yaml.safe_load(re.sub(r"\$\{EDGE_KEY:\?[^}]*\}", "sample-edge-key", text))
    settings = {
        name: load_settings(None, environ=service.get("environment", {}))
        for name, service in compose["services"].items()
        if service.get("build") == "."
    }
    return compose, settings


def test_edges_deployment_matches_the_server(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The origin, the edges, Traefik and the nginx cache of the compose file agree with the code.

    No container engine runs here: every port, address and variable of the
    file is checked against the settings schema and the server's routes.
    """
    compose, settings = edges_deployment(monkeypatch)
    assert "unknown configuration" not in caplog.text
    services = compose["services"]
    for service in services.values():
        for volume in service.get("volumes", []):
            # Files shipped with the deployment (ghostream.yml is the user's own).
            source = volume.split(":")[0]
            assert not source.startswith("./deploy/") or (ROOT / source).exists(), source
    origin = settings.pop("origin")
    assert origin.srt.pull_only and origin.srt.pull_keys == ["sample-edge-key"]
    port = origin.srt.listen_address.port
    assert services["origin"]["ports"] == [f"{port}:{port}/udp"]
    assert set(settings) == {"edge1", "edge2"}
    ranges = []
    for name, edge in settings.items():
        assert srt_address(edge.origin.url) == ("origin", port)
        assert edge.origin.key in origin.srt.pull_keys
        assert edge.origin.web_url == f"http://origin:{origin.web.listen_address.port}"
        low, high = edge.webrtc.min_port_udp, edge.webrtc.max_port_udp
        assert services[name]["ports"] == [f"{low}-{high}:{low}-{high}/udp"]
        ranges.append(set(range(low, high + 1)))
    assert not ranges[0] & ranges[1]

    routes = yaml.safe_load((ROOT / "deploy" / "traefik-edges.yml").read_text())
    command = services["traefik"]["command"]
    entrypoints = dict(re.findall(r"--entrypoints\.(\w+)\.address=:(\S+)", " ".join(command)))
    assert set(entrypoints.values()) == {p.split(":")[1] for p in services["traefik"]["ports"]}
    http_services = routes["http"]["services"]
    assert {s["url"] for s in http_services["edges"]["loadBalancer"]["servers"]} == {
        f"http://{name}:{edge.web.listen_address.port}" for name, edge in settings.items()
    }
    srt_servers = routes["udp"]["services"]["srt-edges"]["loadBalancer"]["servers"]
    assert {s["address"] for s in srt_servers} == {
        f"{name}:{edge.srt.listen_address.port}" for name, edge in settings.items()
    }
    # LL-HLS goes to the cache, and only LL-HLS: every name the packager makes, nothing else.
    hls = re.fullmatch(r"PathRegexp\(`(.*)`\)", routes["http"]["routers"]["hls"]["rule"])[1]
    for path in ["/demo/index.m3u8", "/demo@480p/media.m3u8", "/demo/init-0a1f-0.mp4",
                 "/demo/seg-0a1f-12.m4s", "/demo/part-0a1f-12-3.m4s"]:  # fmt: skip
        name = path.rsplit("/", 1)[1]
        assert re.fullmatch(hls, path), path
        assert name.endswith(".m3u8") or re.fullmatch(HlsMediaConvertor.regex, name), name
    for path in ["/demo", "/demo/whep", "/demo/whep/abc", "/_stats/demo/", "/static/js/x.js"]:
        assert not re.fullmatch(hls, path), path
    cache_url = http_services["hls-cache"]["loadBalancer"]["servers"][0]["url"]
    nginx = (ROOT / "deploy" / "nginx-hls-cache.conf").read_text()
    assert f"listen {cache_url.rsplit(':', 1)[1]};" in nginx
    assert f"proxy_pass http://origin:{origin.web.listen_address.port};" in nginx


def test_compose_file_runs_the_image_as_the_dockerfile_expects() -> None:
    """No compose tool runs here (its Traefik image cannot be pulled): checked as text."""
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["ghostream"]
    assert (ROOT / service["build"] / "Dockerfile").is_file()
    defaults = Settings()
    published = {port.split(":", 1)[1] for port in service["ports"]}
    assert published == {
        f"{defaults.srt.listen_address.port}/udp",
        f"{defaults.rtmp.listen_address.port}/tcp",
        f"{defaults.webrtc.min_port_udp}-{defaults.webrtc.max_port_udp}/udp",
        f"{defaults.webrtc.tcp_listen_address.port}/tcp",
    }
    ops = dict(instructions(ROOT / "Dockerfile"))
    mounts = {volume.split(":")[1]: volume for volume in service["volumes"]}
    assert mounts["/etc/ghostream/ghostream.yml"].endswith(":ro")
    assert ops["VOLUME"] in mounts
