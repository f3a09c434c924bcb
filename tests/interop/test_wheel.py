"""Ghostream as Python users install it: a wheel pip-installed into a fresh virtualenv.

An editable install reads the checkout, so it hides what a wheel would lack:
templates, static files, migrations or the player's hls.js read relative to
the source tree or left out of the package. Here the sdist and the wheel are
built with `python -m build` (the wheel from the sdist, as pip does from
PyPI), installed with their dependencies into a virtualenv outside the
checkout and run from another directory, then the pieces a user meets are
checked: pages, static files, hls.js, SRT in and out, the history, the version.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest
from harness.publisher import publishing
from harness.server_process import start_server

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ghostream"
WEB = PACKAGE / "web"
# The npm assets the server serves; nothing else of node_modules is shipped.
NPM_ASSETS = [
    "hls.js/dist/hls.min.js",
    "hls.js/LICENSE",
    "uplot/dist/uPlot.iife.min.js",
    "uplot/dist/uPlot.min.css",
    "uplot/LICENSE",
]
BUILD_TIMEOUT = 180


def source_files() -> set[str]:
    """What the package must ship: its source tree, minus npm's files, plus the npm assets."""
    shipped = {
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and "node_modules" not in path.parts
        and path.parent != WEB
    }
    return shipped | {f"ghostream/web/node_modules/{asset}" for asset in NPM_ASSETS}


def build(source: Path, output: Path, *options: str, env: dict | None = None):
    return subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(output), *options, str(source)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env=env,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist and the wheel of the checkout (the wheel built from the sdist)."""
    for asset in NPM_ASSETS:
        assert (WEB / "node_modules" / asset).is_file(), "scripts/test installs the npm assets"
    output = tmp_path_factory.mktemp("dist")
    result = build(ROOT, output)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return next(output.glob("*.tar.gz")), next(output.glob("*.whl"))


def test_wheel_and_sdist_ship_the_package_and_nothing_else(dists) -> None:
    sdist, wheel = dists
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    metadata = {name for name in names if name.split("/")[0].endswith(".dist-info")}
    assert names - metadata == source_files()

    with tarfile.open(sdist) as archive:
        top = sdist.name.removesuffix(".tar.gz")
        members = {
            member.name.removeprefix(top + "/")
            for member in archive.getmembers()
            if member.isfile()
        }
    package = {name for name in members if name.startswith("ghostream/")}
    assert package == source_files()
    others = {name.split("/")[0] for name in members - package}
    assert others == {"PKG-INFO", "README.md", "pyproject.toml", "setup.py", "setup.cfg"} | {
        "ghostream.egg-info"
    }


def test_wheel_is_not_built_without_the_players_npm_assets(tmp_path: Path) -> None:
    """No npm assets and no npm: the build stops and says what to do."""
    source = tmp_path / "source"
    shutil.copytree(PACKAGE, source / "ghostream", ignore=shutil.ignore_patterns("node_modules"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    no_npm = tmp_path / "bin"
    no_npm.mkdir()
    env = {**os.environ, "PATH": str(no_npm)}
    result = build(source, tmp_path / "dist", "--wheel", env=env)
    assert result.returncode != 0
    message = "npm assets are missing (node_modules/hls.js/dist/hls.min.js, node_modules/uplot"
    assert message in result.stdout + result.stderr, result.stderr
    assert not list((tmp_path / "dist").glob("*.whl"))


def fetch(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200, url
        return response.headers["Content-Type"], response.read()


def test_installed_wheel_runs_from_another_directory(
    dists, tmp_path: Path, require_program
) -> None:
    require_program("ffmpeg")
    require_program("ffprobe")
    _, wheel = dists
    version = wheel.name.split("-")[1]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    # Not the checkout's PYTHONPATH: pip would take its ghostream for installed already.
    install = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert install.returncode == 0, install.stderr[-4000:]
    site = tmp_path / "site"
    site.mkdir()
    env = {
        "XDG_DATA_HOME": str(site / "data"),
        "PYTHONPATH": "",
        "HOME": str(site),
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHOSTREAM_")} | env

    def ghostream(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [venv / "bin" / "ghostream", *args],
            capture_output=True,
            text=True,
            cwd=site,
            env=env,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )

    located = subprocess.run(
        [venv / "bin" / "python", "-c", "import ghostream; print(ghostream.__file__)"],
        capture_output=True,
        text=True,
        cwd=site,
        env=env,
        check=True,
    )
    installed = Path(located.stdout.strip()).parent
    assert installed.is_relative_to(venv), "the installed package runs, not the checkout"
    assert ghostream("--version").stdout.strip() == f"ghostream {version}"
    files_before = sorted(installed.rglob("*"))

    server = start_server(
        site,
        {"history": {"path": ""}},
        env=env,
        command=[str(venv / "bin" / "ghostream")],
        cwd=site,
    )
    try:
        kind, home = fetch(server.web_url + "/")
        assert kind.startswith("text/html") and b"/static/css/style.css" in home
        kind, css = fetch(server.web_url + "/static/css/style.css")
        assert kind.startswith("text/css")
        assert css == (WEB / "static" / "css" / "style.css").read_bytes()
        kind, hls = fetch(server.web_url + "/static/vendor/hls.min.js")
        assert kind.startswith("text/javascript")
        assert hls == (WEB / "node_modules" / "hls.js" / "dist" / "hls.min.js").read_bytes()
        kind, charts = fetch(server.web_url + "/static/vendor/uPlot.iife.min.js")
        assert kind.startswith("text/javascript")
        assert (
            charts == (WEB / "node_modules" / "uplot" / "dist" / "uPlot.iife.min.js").read_bytes()
        )
        _, metrics = fetch(server.metrics_url)
        assert f'version="{version}"'.encode() in next(
            line for line in metrics.splitlines() if line.startswith(b"ghostream_build_info{")
        )
        with publishing(server, "demo:demo"):
            probe = subprocess.run(
                ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name",
                 "-of", "csv=p=0", server.srt_url("demo")],
                capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        assert probe.returncode == 0, probe.stderr
        assert set(probe.stdout.split()) == {"aac", "h264"}
    finally:
        assert server.stop() == 0, server.log

    assert (site / "data" / "ghostream" / "history.sqlite3").is_file()
    history = ghostream("--config", str(server.config_path), "history", "--json")
    assert history.returncode == 0, history.stderr
    sessions = [json.loads(line) for line in history.stdout.splitlines()]
    assert {(s["kind"], s["stream"]) for s in sessions} == {("publish", "demo"), ("view", "demo")}
    assert sorted(installed.rglob("*")) == files_before, "nothing is written into the package"
