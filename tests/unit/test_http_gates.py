"""The web app's gates, through its ASGI interface: readiness and the admin API's lock."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import trio
from harness.server_process import ADMIN_HASH, ADMIN_PASSWORD

from ghostream.config import load_settings
from ghostream.context import ServerContext
from ghostream.http.app import create_app


def context_with(tmp_path: Path, settings_yaml: str) -> ServerContext:
    path = tmp_path / "ghostream.yml"
    path.write_text(f"history:\n  path: {tmp_path / 'history.sqlite3'}\n{settings_yaml}")
    return ServerContext.create(load_settings(path, environ={}))


async def test_healthz_answers_503_until_every_service_listens(tmp_path: Path) -> None:
    context = context_with(tmp_path, "")
    transport = httpx.ASGITransport(app=create_app(context))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://ghostream") as client:
            starting = await client.get("/healthz")
            assert (starting.status_code, starting.json()["status"]) == (503, "starting")
            context.listening.append("web")
            context.ready = True
            ready = await client.get("/healthz")
            assert (ready.status_code, ready.json()["status"]) == (200, "ok")
    finally:
        context.close()


async def test_without_an_admin_credential_set_the_admin_api_is_closed_to_everyone(
    tmp_path: Path,
) -> None:
    """No `admin.credentials` and no `admin.token`: no header of any kind opens it."""
    context = context_with(tmp_path, "auth:\n  failureDelay: 0\n")
    transport = httpx.ASGITransport(app=create_app(context))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://ghostream") as client:
            for authorization in ("", "Basic YWRtaW46YWRtaW4=", "Basic Og==", "Bearer ", "x"):
                headers = {"Authorization": authorization} if authorization else {}
                for path in ("/api/admin/streams/demo", "/admin"):
                    answer = await client.get(path, headers=headers)
                    assert answer.status_code == 401, (path, authorization)
            assert (await client.get("/api/streams")).status_code == 200
    finally:
        context.close()


async def test_the_same_request_opens_it_once_a_credential_is_set(tmp_path: Path) -> None:
    """The control for the test above: what was refused was the missing setting."""
    context = context_with(tmp_path, f"admin:\n  credentials:\n    admin: '{ADMIN_HASH}'\n")
    transport = httpx.ASGITransport(app=create_app(context))
    credential = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://ghostream") as client:
            answer = await client.get(
                "/api/admin/streams/demo", headers={"Authorization": f"Basic {credential}"}
            )
            assert answer.status_code == 200
    finally:
        context.close()


async def refusal_times(client: httpx.AsyncClient, path: str, headers: list[dict]) -> list:
    """(status, seconds) of each request, one after the other."""
    answers = []
    for header in headers:
        start = trio.current_time()
        answer = await client.post(path, headers=header, content=b"v=0\r\n")
        answers.append((answer.status_code, trio.current_time() - start))
    return answers


async def test_wrong_whip_tokens_and_edge_keys_are_refused_ever_later(tmp_path: Path) -> None:
    """Guessing a stream password over WHIP, or an edge key, is slowed like any other guess."""
    context = context_with(
        tmp_path,
        "auth:\n  failureDelay: 100\n  basic:\n    credentials:\n"
        f"      alice: '{ADMIN_HASH}'\nsrt:\n  pullKeys: ['an-edge-key-of-20-chars']\n",
    )
    transport = httpx.ASGITransport(app=create_app(context))
    sdp = {"Content-Type": "application/sdp"}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://ghostream") as client:
            whip = await refusal_times(
                client,
                "/alice/whip",
                [sdp | {"Authorization": f"Bearer guess{n}"} for n in range(4)],
            )
            edges = await refusal_times(
                client, "/_edges/viewers", [{"Authorization": f"Bearer guess{n}"} for n in range(4)]
            )
    finally:
        context.close()
    # The first mistake is free, then 0.1 s doubling: each refusal waits at least that long.
    for answers, status in ((whip, 401), (edges, 403)):
        assert [code for code, _ in answers] == [status] * 4
        waits = [seconds for _, seconds in answers]
        assert all(w >= least for w, least in zip(waits, (0, 0.1, 0.2, 0.4), strict=True)), waits
