"""What anyone can read holds no personal data; the details need the admin credential."""

from __future__ import annotations

import base64
import subprocess
import time
import urllib.error
import urllib.request

import bcrypt
import pytest
from harness.publisher import SOURCE, publishing
from harness.server_process import ADMIN_PASSWORD, ADMIN_USER, ServerProcess

TOKEN = "a-long-random-admin-token"


def fetch(server: ServerProcess, path: str, authorization: str = "") -> tuple[int, str]:
    # The site's own name, as a browser asks for it: link previews name the server by it.
    headers = {"Host": "stream.example"}
    if authorization:
        headers["Authorization"] = authorization
    request = urllib.request.Request(server.web_url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def server(require_program, ghostream_server) -> ServerProcess:
    require_program("ffmpeg")
    token_hash = bcrypt.hashpw(TOKEN.encode(), bcrypt.gensalt(rounds=4)).decode()
    return ghostream_server(
        {"admin": {"token": token_hash}, "auth": {"failureDelay": 100, "maxFailureDelay": 400}}
    )


def test_public_answers_hold_no_address_and_admin_ones_do(server: ServerProcess) -> None:
    refused = subprocess.run(
        ["ffmpeg", "-v", "error", *SOURCE, "-t", "1", "-f", "mpegts",
         server.srt_url("demo:wrong-password")],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert refused.returncode != 0
    with publishing(server, "demo:demo"):
        watched = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", server.srt_url("demo"), "-t", "1", "-f", "null", "-"],
            capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert watched.returncode == 0, watched.stderr.decode()
        for path in ("/api/streams", "/api/streams/demo", "/_stats/demo/", "/demo", "/"):
            status, body = fetch(server, path)
            assert status == 200, path
            assert "127.0.0.1" not in body, path
            assert "wrong password" not in body, path
        waited = []
        for authorization in ("", basic(ADMIN_USER, "guess"), basic("root", ADMIN_PASSWORD),
                              "Bearer guess", "Digest x"):  # fmt: skip
            start = time.monotonic()
            status, body = fetch(server, "/api/admin/streams/demo", authorization)
            waited.append(time.monotonic() - start)
            assert status == 401, authorization
            assert "127.0.0.1" not in body
        # Each refusal of this client waits longer: 0, .1, .2, .4, .4 s.
        assert [w >= least for w, least in zip(waited, (0, 0.1, 0.2, 0.4, 0.4), strict=True)] == [
            True
        ] * 5
        for authorization in (basic(ADMIN_USER, ADMIN_PASSWORD), f"Bearer {TOKEN}"):
            status, body = fetch(server, "/api/admin/streams/demo", authorization)
            assert status == 200
            assert "127.0.0.1" in body and "wrong password" in body
    assert "wrong-password" not in server.log
