"""Live pushes: the history's events to the admin, a stream's count and state to its page.

`/api/admin/events` is a WebSocket (admin credential) that replays the log
from `?since=EVENT_ID` and then follows it, one JSON message per event: a
client that lost its connection reconnects with the last id it saw and
misses nothing; a GET of the same URL gives the same events as Server-Sent
Events (each with its id, so that a browser's EventSource resumes by itself
after a reconnect): the dashboard follows it.  `/_stats/ID/events` is a
public Server-Sent Events stream of what the player shows
(`{"ConnectedViewers": N, "live": true}`), sent when it changes instead of
being polled for; an open stream counts as a page viewer, as a poll did.
Both carry nothing private: the public stream has no addresses, and the
admin stream is the admin API's data.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ghostream.audience import Audience
from ghostream.auth.throttle import host_key
from ghostream.broker.registry import Broker
from ghostream.history.events import (
    Event,
    PublishStarted,
    PublishStopped,
    StreamClosed,
    ViewerJoined,
    ViewerLeft,
)
from ghostream.history.follow import follow
from ghostream.history.log import EventLog
from ghostream.http.admin import AdminAuth, admin_only

log = logging.getLogger(__name__)

# A page's stream is re-read at least this often (pages and edges change without an event).
RECHECK_INTERVAL = 5.0
# Open pushes: in all, and from one host (each is a task and a socket).
MAX_PUSHES = 10_000
MAX_PUSHES_PER_HOST = 16
WATCHED = (PublishStarted, PublishStopped, StreamClosed, ViewerJoined, ViewerLeft)


class Changes:
    """Wakes every waiting push when a stream starts, stops, or gains or loses a viewer."""

    def __init__(self) -> None:
        self._changed = trio.Event()

    def observe(self, event: Event) -> None:
        if isinstance(event, WATCHED):
            self._changed.set()
            self._changed = trio.Event()

    async def wait(self, timeout: float) -> None:
        with trio.move_on_after(timeout):
            await self._changed.wait()


class OpenPushes:
    """How many pushes are open, in all and per host, so that one host cannot hold them all."""

    def __init__(self) -> None:
        self._hosts: Counter[str] = Counter()

    def admit(self, host: str) -> bool:
        if sum(self._hosts.values()) >= MAX_PUSHES or self._hosts[host] >= MAX_PUSHES_PER_HOST:
            return False
        self._hosts[host] += 1
        return True

    def release(self, host: str) -> None:
        self._hosts[host] -= 1
        if not self._hosts[host]:
            del self._hosts[host]


def push_routes(
    broker: Broker,
    audience: Audience,
    history: EventLog | None,
    admin: AdminAuth,
    stream_path: str,
    valid_id: Callable[[str], bool],
) -> list[BaseRoute]:
    changes = Changes()
    broker.on_event.append(changes.observe)
    open_pushes = OpenPushes()

    def state(stream_id: str) -> dict:
        live = any(s.id == stream_id for s in broker.summaries())
        return {"ConnectedViewers": audience.total(stream_id), "live": live}

    async def stream_events(request: Request) -> Response:
        stream_id = request.path_params["stream_id"]
        if not valid_id(stream_id):
            return JSONResponse({"error": "no such stream"}, status_code=404)
        address = request.client.host if request.client else "?"
        host = host_key(address)
        if not open_pushes.admit(host):
            return JSONResponse({"error": "too many open pushes"}, status_code=429)
        uid = request.query_params.get("uid", "")[:64]

        async def messages() -> AsyncIterator[str]:
            try:
                sent: dict | None = None
                while True:
                    if uid:
                        audience.pages.saw(uid, stream_id, address)
                    now = state(stream_id)
                    if now != sent:
                        sent = now
                        yield f"data: {json.dumps(now)}\n\n"
                    else:
                        yield ": still here\n\n"
                    await changes.wait(RECHECK_INTERVAL)
            finally:
                open_pushes.release(host)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(messages(), media_type="text/event-stream", headers=headers)

    async def admin_events(websocket: WebSocket) -> None:
        if history is None:
            await websocket.close(code=1011, reason="the history is off")
            return
        if not await admin.authorized(websocket):
            await websocket.close(code=1008, reason="admin credential required")
            return
        since_text = websocket.query_params.get("since", "")
        if since_text and not since_text.isdigit():
            await websocket.close(code=1008, reason="since must be an event id")
            return
        since = int(since_text) if since_text else history.last_id
        kinds = tuple(k for k in websocket.query_params.getlist("kind") if k)
        await websocket.accept()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_closed, websocket, nursery.cancel_scope)
            try:
                async for batch in follow(history, since, kinds):
                    for event in batch:
                        await websocket.send_text(json.dumps(event, separators=(",", ":")))
            except WebSocketDisconnect:
                nursery.cancel_scope.cancel()

    async def admin_event_stream(request: Request) -> Response:
        """The same events as Server-Sent Events, for pages: a reconnect resumes by itself."""
        if history is None:
            return JSONResponse({"error": "the history is off"}, status_code=404)
        resume = request.headers.get("last-event-id") or request.query_params.get("since", "")
        if resume and not resume.isdigit():
            return JSONResponse({"error": "since must be an event id"}, status_code=400)
        since = int(resume) if resume else history.last_id
        kinds = tuple(k for k in request.query_params.getlist("kind") if k)

        async def messages() -> AsyncIterator[str]:
            async for batch in follow(history, since, kinds):
                for event in batch:
                    yield f"id: {event['id']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(messages(), media_type="text/event-stream", headers=headers)

    return [
        Route(f"/_stats/{stream_path}/events", stream_events),
        WebSocketRoute("/api/admin/events", admin_events),
        Route("/api/admin/events", admin_only(admin, admin_event_stream)),
    ]


async def _until_closed(websocket: WebSocket, scope: trio.CancelScope) -> None:
    """Read (and ignore) what the client sends; its close ends the push."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass
    scope.cancel()
