"""The shipped program: signals, exit statuses, CLI commands, metrics over HTTP, crash recovery."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import bcrypt
import pytest
import trio
from harness.cli import ghostream
from harness.media import signal_source
from harness.server_process import free_port, make_config, start_server

from ghostream.history.events import ViewerJoined, ViewerLeft
from ghostream.history.log import CRASH_REASON, EventLog


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_server_cleanly(ghostream_server, signum: int) -> None:
    server = ghostream_server()
    assert server.stop(signum, timeout=5) == 0
    assert f"{signal.Signals(signum).name} received, shutting down" in server.log
    assert "Traceback" not in server.log


def test_port_in_use_exits_1_naming_the_address(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = make_config(tmp_path, {"web": {"listenAddress": f"127.0.0.1:{port}"}})
        server = start_server(tmp_path, {}, config=config, wait=False)
        assert server.process.wait(20) == 1
    server.stop()
    errors = [line for line in server.log.splitlines() if "ERROR" in line]
    assert len(errors) == 1
    assert f"cannot listen on 127.0.0.1:{port}/tcp for web" in errors[0]
    assert "Traceback" not in server.log


def test_configuration_error_exits_2_naming_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "ghostream.yml"
    path.write_text("srt:\n  maxClients: lots\n")
    result = ghostream("--config", str(path), home=tmp_path)
    assert result.returncode == 2
    assert str(path) in result.stderr and "srt.maxClients" in result.stderr
    assert "Traceback" not in result.stderr
    path.write_text("web:\n  name: [unclosed\n")
    result = ghostream("config", "--config", str(path), home=tmp_path)
    assert result.returncode == 2
    assert str(path) in result.stderr and "line" in result.stderr


def test_environment_error_names_the_variable(tmp_path: Path) -> None:
    result = ghostream("config", env={"GHOSTREAM_SRT_MAXCLIENTS": "many"}, home=tmp_path)
    assert result.returncode == 2
    assert "GHOSTREAM_SRT_MAXCLIENTS" in result.stderr and "srt.maxClients" in result.stderr


def test_unknown_option_exits_2(tmp_path: Path) -> None:
    assert ghostream("--no-such-option", home=tmp_path).returncode == 2


def test_config_command_prints_effective_yaml_with_secrets_masked(tmp_path: Path) -> None:
    path = tmp_path / "ghostream.yml"
    path.write_text(
        "srt:\n  passphrase: topsecretphrase\n"
        "forwarding:\n  demo: [rtmp://live.example.com/app/streamkey123]\n"
    )
    result = ghostream(
        "--config", str(path), "config", env={"GHOSTREAM_WEB_NAME": "Club TV"}, home=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "topsecretphrase" not in result.stdout and "streamkey123" not in result.stdout
    assert "$2b$" not in result.stdout
    assert "name: Club TV" in result.stdout


def test_hash_password_output_verifies_with_bcrypt(tmp_path: Path) -> None:
    result = ghostream("hash-password", stdin="hunter2\n", home=tmp_path)
    assert result.returncode == 0, result.stderr
    hashed = result.stdout.strip().encode()
    assert bcrypt.checkpw(b"hunter2", hashed)
    assert not bcrypt.checkpw(b"hunter3", hashed)
    assert ghostream("hash-password", stdin="\n", home=tmp_path).returncode == 2


def test_version_and_help(tmp_path: Path) -> None:
    from ghostream import __version__

    assert ghostream("--version", home=tmp_path).stdout.strip() == f"ghostream {__version__}"
    help_text = ghostream("--help", home=tmp_path).stdout
    for command in ("config", "hash-password", "history"):
        assert command in help_text


def test_metrics_endpoint_is_scraped_over_http(ghostream_server) -> None:
    server = ghostream_server()
    with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body = response.read().decode()
    assert 'ghostream_build_info{python="' in body
    assert "process_resident_memory_bytes" in body
    assert "ghostream_srt_connections" in body


def test_monitoring_disabled_leaves_its_port_closed(ghostream_server) -> None:
    port = free_port()
    server = ghostream_server(
        {"monitoring": {"enabled": False, "listenAddress": f"127.0.0.1:{port}"}}
    )
    assert "monitoring 127" not in server.wait_for_log("Ghostream ready")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_sigkill_mid_session_then_restart_closes_the_open_sessions(
    ghostream_server, require_program, tmp_path: Path
) -> None:
    require_program("ffmpeg")
    server = ghostream_server()
    publisher = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-re", *signal_source(audio=None), "-t", "30", "-f", "mpegts",
         server.srt_url("demo:demo")],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        server.wait_for_log("publishing demo over SRT")
        # The open session reaches the database within a batch interval; wait for it there.
        deadline_rows = _wait_for_rows(server.history_path, "SELECT count(*) FROM sessions")
        assert deadline_rows == 1
        server.kill()
    finally:
        publisher.terminate()
        publisher.wait(10)
    with sqlite3.connect(server.history_path) as db:
        assert db.execute("SELECT count(*) FROM sessions WHERE ended IS NULL").fetchone()[0] == 1
    restarted = ghostream_server(config=server.config)
    restarted.wait_for_log("closed 1 session")
    result = ghostream("--config", str(restarted.config_path), "history", "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr
    sessions = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(s["kind"], s["stream"], s["end_reason"]) for s in sessions] == [
        ("publish", "demo", CRASH_REASON)
    ]
    assert sessions[0]["ended"] >= sessions[0]["started"]


def _wait_for_rows(path: Path, query: str, timeout: float = 10.0) -> int:
    """Poll the database (its writer batches) until the query counts a row."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            with sqlite3.connect(path) as db:
                count = db.execute(query).fetchone()[0]
            if count:
                return count
        time.sleep(0.05)
    raise AssertionError(f"no rows for {query!r} within {timeout}s")


def _history_of(path: Path, sessions: list[tuple[str, str, float, float]]) -> None:
    """A history written by the server's own writer: (stream, peer, started, ended) views."""
    log = EventLog.open(path)
    for number, (stream, peer, started, ended) in enumerate(sessions):
        log.record(ViewerJoined(stream, number, peer, "srt", started))
        log.record(ViewerLeft(stream, number, peer, "srt", ended, 100, "viewer left"))
    trio.run(log.flush)
    log.close()


def test_history_filters_by_stream_and_time(tmp_path: Path) -> None:
    database = tmp_path / "history.sqlite3"
    now = time.time()
    _history_of(
        database,
        [
            ("demo", "10.0.0.1:1", now - 3 * 3600, now - 3 * 3600 + 60),
            ("demo", "10.0.0.2:1", now - 600, now - 500),
            ("demo@480p", "10.0.0.3:1", now - 400, now - 300),
            ("demo_2", "10.0.0.4:1", now - 300, now - 200),
            ("other", "10.0.0.5:1", now - 200, now - 100),
        ],
    )
    config = tmp_path / "ghostream.yml"
    config.write_text(f"history:\n  path: {database}\n")

    def peers(*options: str) -> list[str]:
        result = ghostream("--config", str(config), "history", "--json", *options, home=tmp_path)
        assert result.returncode == 0, result.stderr
        return [json.loads(line)["peer"] for line in result.stdout.splitlines()]

    assert len(peers()) == 5
    # A stream's variants belong to it; a stream whose name merely starts the same does not.
    assert peers("--stream", "demo") == ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"]
    assert peers("--stream", "demo", "--since", "1h") == ["10.0.0.2:1", "10.0.0.3:1"]
    since = datetime.fromtimestamp(now - 250).isoformat(timespec="seconds")
    assert peers("--since", since) == ["10.0.0.4:1", "10.0.0.5:1"]
    assert peers("--limit", "2") == ["10.0.0.4:1", "10.0.0.5:1"]
    table = ghostream("--config", str(config), "history", "--stream", "other", home=tmp_path)
    assert table.returncode == 0 and len(table.stdout.splitlines()) == 1
    assert "10.0.0.5:1" in table.stdout and "viewer left" in table.stdout
    wrong = ghostream("--config", str(config), "history", "--since", "yesterday", home=tmp_path)
    assert wrong.returncode == 2 and "--since" in wrong.stderr


def test_history_of_a_missing_database_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "ghostream.yml"
    path.write_text(f"history:\n  path: {tmp_path / 'none.sqlite3'}\n")
    result = ghostream("--config", str(path), "history", home=tmp_path)
    assert result.returncode == 1
    assert "no history yet" in result.stderr


def test_health_lists_every_service_once_ready(ghostream_server) -> None:
    server = ghostream_server()
    with urllib.request.urlopen(server.web_url + "/healthz", timeout=5) as response:
        health = json.load(response)
    assert response.status == 200 and health["status"] == "ok"
    assert {"SRT", "web", "WebRTC", "LL-HLS", "history"} <= set(health["services"])
