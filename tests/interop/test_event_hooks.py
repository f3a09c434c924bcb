"""The event log, outward: an HTTP auth hook, webhooks and live pushes, with real clients.

The hook and the webhook receiver are plain HTTP servers in the test (as an
operator's service would be); publishers are ffmpeg over SRT and WHIP
offers over HTTP, the push clients trio-websocket and headless Chromium.
What a receiver got is checked against the history database itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import trio
from harness.browser import wait_for
from harness.publisher import publishing
from harness.server_process import ADMIN_PASSWORD, ADMIN_USER, ServerProcess
from test_publish_watch import publish_command, refused, run_peer, watch_command
from test_rtmp_ingest import refused_publish, rtmp_publishing
from test_whip import OFFER
from trio_websocket import ConnectionRejected, open_websocket_url

SECRET = "webhook-test-secret"


class Receiver:
    """An HTTP endpoint that records every JSON body POSTed to it and answers `status(body)`."""

    def __init__(self, *, delay: float = 0.0, allowed: set[str] = frozenset()) -> None:
        self.bodies: list[dict] = []
        self.raw: list[tuple[bytes, str]] = []
        self.allowed = allowed
        self.delay = delay
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = json.loads(raw)
                time.sleep(receiver.delay)
                with receiver.changed:
                    receiver.bodies.append(body)
                    receiver.raw.append((raw, self.headers.get("X-Ghostream-Signature", "")))
                    receiver.changed.notify_all()
                allowed = not receiver.allowed or body.get("stream") in receiver.allowed
                self.send_response(200 if allowed else 403)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        # Bound at once, listening only from `serve()`: until then, connections are refused.
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.server.server_bind()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def serve(self) -> None:
        self.server.server_activate()
        self.thread.start()

    def wait_until(self, accept, timeout: float, what: str) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not accept(self.bodies):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{what}: not within {timeout}s; got {self.bodies}")
                self.changed.wait(min(remaining, 0.2))
            return list(self.bodies)


@contextmanager
def receiving(*, serve: bool = True, **options) -> Iterator[Receiver]:
    receiver = Receiver(**options)
    if serve:
        receiver.serve()
    try:
        yield receiver
    finally:
        if receiver.thread.is_alive():
            receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture
def peers(require_program) -> None:
    require_program("ffmpeg")
    require_program("ffprobe")


def post_offer(server: ServerProcess, stream_id: str, token: str, path: str = "whip") -> int:
    request = urllib.request.Request(
        f"{server.web_url}/{stream_id}/{path}",
        data=OFFER.encode(),
        method="POST",
        headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_http_hook_allows_one_publisher_and_refuses_another_over_srt_whip_and_rtmp(
    peers, ghostream_server
) -> None:
    with receiving(allowed={"alice", "carol"}) as hook:
        server = ghostream_server(
            {"auth": {"backend": "http", "http": {"url": hook.url}, "failureDelay": 100}}
        )
        with publishing(server, "alice:from-the-hook"):
            probe = run_peer(
                ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of",
                 "csv=p=0", server.srt_url("alice")]
            )  # fmt: skip
            assert "h264" in probe.stdout.decode()
        refused(publish_command, server.srt_url("bob:from-the-hook"), 1403)
        server.wait_for_log(r"SRT bob from .* refused: refused by the auth hook \(HTTP 403\)")
        assert post_offer(server, "bob", "bob-password") == 401
        assert post_offer(server, "alice", "alice-password") == 201
        stderr, _ = refused_publish(server, "bob:rtmp-password")
        assert "wrong stream key" in stderr
        # alice is taken by her WHIP session: carol publishes over RTMP.
        with rtmp_publishing(server, server.rtmp_url("carol:rtmp-password"), "carol"):
            pass
        asked = [(b["protocol"], b["stream"], b["password"], b["action"]) for b in hook.bodies]
        assert ("srt", "alice", "from-the-hook", "publish") in asked
        assert ("srt", "bob", "from-the-hook", "publish") in asked
        assert ("whip", "bob", "bob-password", "publish") in asked
        assert ("whip", "alice", "alice-password", "publish") in asked
        assert ("rtmp", "bob", "rtmp-password", "publish") in asked
        assert ("rtmp", "carol", "rtmp-password", "publish") in asked
        assert {b["client"] for b in hook.bodies} == {"127.0.0.1"}
        # Viewers are not asked unless auth.http.reads says so.
        assert not [b for b in hook.bodies if b["action"] != "publish"]
        assert "from-the-hook" not in server.log


def test_http_hook_that_does_not_answer_in_time_refuses(peers, ghostream_server) -> None:
    with receiving(delay=3.0) as hook:
        server = ghostream_server(
            {"auth": {"backend": "http", "http": {"url": hook.url, "timeout": 300}}}
        )
        refused(publish_command, server.srt_url("alice:pw"), 1403)
        server.wait_for_log(r"auth hook http://127\.0\.0\.1:\d+ gave no answer in 0\.3 s: refused")


def logged_events(history: Path, after: int) -> list[tuple[int, str]]:
    with sqlite3.connect(f"file:{history}?mode=ro", uri=True) as db:
        return db.execute(
            "SELECT id, kind FROM events WHERE id > ? ORDER BY id", [after]
        ).fetchall()


def test_webhook_gets_every_event_in_order_through_an_outage_and_a_crash(
    peers, ghostream_server
) -> None:
    with receiving(serve=False) as receiver:
        hook = {"url": receiver.url, "secret": SECRET, "name": "bot"}
        server = ghostream_server({"webhooks": [hook]})
        server.wait_for_log("webhook bot: delivering new events")
        # A new webhook starts with what happens after it is configured.
        start_id = logged_events(server.history_path, 0)[-1][0]
        # The receiver is down: a show happens, then the server is killed.
        with publishing(server, "demo:demo"):
            assert run_peer(watch_command(server.srt_url("demo"))).returncode == 0
        server.wait_for_log("webhook bot: .* did not take event")
        server.kill()
        # Started again with the same history, while the receiver is still down.
        again = ghostream_server(config=server.config)
        again.wait_for_log("webhook bot: resuming after event")
        with publishing(again, "demo:demo"):
            pass
        receiver.serve()
        expected = logged_events(server.history_path, start_id)
        got = receiver.wait_until(
            lambda bodies: {b["id"] for b in bodies} >= {i for i, _ in expected},
            60,
            "every logged event delivered",
        )
        ids = [b["id"] for b in got]
        first_seen = list(dict.fromkeys(ids))
        assert first_seen == sorted(first_seen), "delivered out of order"
        assert first_seen[: len(expected)] == [i for i, _ in expected]
        assert [b["kind"] for b in got[: len(expected)]] == [k for _, k in expected]
        kinds = {b["kind"] for b in got}
        assert {"publish started", "viewer joined", "run ended unexpectedly"} <= kinds
        for raw, signature in receiver.raw:
            digest = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
            assert signature == f"sha256={digest}"
        state = again.admin_json("/api/admin/webhooks")["webhooks"]
        assert [w["name"] for w in state] == ["bot"]
        assert state[0]["delivered"] >= len(expected) and state[0]["failed"] > 0
        metrics = urllib.request.urlopen(again.metrics_url, timeout=5).read().decode()
        assert 'ghostream_webhook_deliveries_total{outcome="delivered",webhook="bot"}' in metrics


def _admin_header() -> list[tuple[bytes, bytes]]:
    credential = base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode())
    return [(b"Authorization", b"Basic " + credential)]


async def _read_events(url: str, count: int) -> list[dict]:
    received = []
    async with open_websocket_url(url, extra_headers=_admin_header()) as ws:
        with trio.fail_after(30):
            while len(received) < count:
                received.append(json.loads(await ws.get_message()))
    return received


def test_admin_push_replays_since_an_id_and_follows_without_a_gap(peers, ghostream_server) -> None:
    server = ghostream_server()
    ws_url = server.web_url.replace("http://", "ws://") + "/api/admin/events"

    async def scenario() -> None:
        replay = await _read_events(ws_url + "?since=0", 1)
        assert replay[0]["kind"] == "run started"
        last = replay[-1]["id"]
        with publishing(server, "demo:demo"):
            pass
        # Reconnecting with the last id seen: the next events come, none skipped.
        async with open_websocket_url(
            f"{ws_url}?since={last}", extra_headers=_admin_header()
        ) as ws:
            with trio.fail_after(30):
                first = json.loads(await ws.get_message())
                assert first["id"] == last + 1
                seen = [first]
                while not any(e["kind"] == "publish ended" for e in seen):
                    seen.append(json.loads(await ws.get_message()))
        ids = [e["id"] for e in seen]
        assert ids == list(range(last + 1, last + 1 + len(ids)))
        assert [k for _, k in logged_events(server.history_path, last)][: len(ids)] == [
            e["kind"] for e in seen
        ]
        # Without the admin credential, no push.
        with pytest.raises(ConnectionRejected) as refusal:
            async with open_websocket_url(ws_url) as ws:
                await ws.get_message()
        assert refusal.value.status_code == 403

    trio.run(scenario)


def test_player_page_counter_is_pushed_not_polled(peers, chromium, ghostream_server) -> None:
    # A poll every 10 minutes: a count that changes within seconds was pushed.
    server = ghostream_server({"web": {"viewersCounterRefreshPeriod": 600_000}})
    counter = "return document.getElementById('viewers').textContent"
    with publishing(server, "demo:demo"):
        chromium.get(server.web_url + "/demo")
        shown = wait_for(chromium, counter, lambda t: "viewer" in t, 20, "a count")
        wait_for(chromium, counter, lambda t: t == shown, 3, "a steady count")
        count = int(shown.split()[0])
        viewer = subprocess.Popen(
            ["ffmpeg", "-loglevel", "error", "-i", server.srt_url("demo"), "-f", "null", "-"],
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_for(chromium, counter, lambda t: t.startswith(f"{count + 1} "), 10,
                     "the count pushed when an SRT viewer joins")  # fmt: skip
        finally:
            viewer.terminate()
            viewer.wait(10)
        wait_for(chromium, counter, lambda t: t.startswith(f"{count} "), 10,
                 "the count pushed when it leaves")  # fmt: skip
        requests = chromium.execute_script(
            "return performance.getEntriesByType('resource').map((e) => e.name)"
        )
        assert not [r for r in requests if "/_stats/demo/?" in r], requests


def test_http_hook_decides_viewers_when_reads_are_checked(peers, ghostream_server) -> None:
    with receiving(allowed={"demo"}) as hook:
        auth = {"backend": "http", "http": {"url": hook.url, "reads": True}, "failureDelay": 100}
        server = ghostream_server({"auth": auth})
        hook.allowed = {"demo"}
        with publishing(server, "demo:publisher"):
            hook.allowed = {"nobody"}
            refused(watch_command, server.srt_url("#!::r=demo,m=request,s=t1"), 1403)
            server.wait_for_log(r"watch of 'demo' from .* refused: refused by the auth hook")
            assert post_offer(server, "demo", "t3", path="whep") == 401
            hook.allowed = {"demo"}
            probe = run_peer(watch_command(server.srt_url("#!::r=demo,m=request,s=t2")))
            assert probe.returncode == 0, probe.stderr.decode()
            assert post_offer(server, "demo", "t4", path="whep") == 201
        reads = [(b["protocol"], b["password"]) for b in hook.bodies if b["action"] == "read"]
        assert reads == [("srt", "t1"), ("whep", "t3"), ("srt", "t2"), ("whep", "t4")]


def test_admin_event_stream_resumes_from_last_event_id(peers, ghostream_server) -> None:
    server = ghostream_server()
    with publishing(server, "demo:demo"):
        pass
    server.wait_for_log("stopped publishing demo")
    server.admin_json("/api/admin/streams/demo")  # answered once what is queued is written
    logged = logged_events(server.history_path, 0)
    resume_after = logged[1][0]
    credential = base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {credential}", "Last-Event-ID": str(resume_after)}
    seen: list[tuple[int, str]] = []
    url = server.web_url + "/api/admin/events"
    with httpx.stream("GET", url, headers=headers, timeout=20) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[len("data: ") :])
                seen.append((event["id"], event["kind"]))
                if len(seen) == len(logged) - 2:
                    break
    assert seen == logged[2:]
    assert httpx.get(server.web_url + "/api/admin/events", timeout=20).status_code == 401
