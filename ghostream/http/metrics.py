"""The Prometheus endpoint: a small ASGI app on its own port, apart from the public site."""

from __future__ import annotations

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ghostream.config import ListenAddress
from ghostream.http.serving import serve_asgi
from ghostream.monitoring import REGISTRY


async def serve_metrics(
    address: ListenAddress, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    await serve_asgi(
        Starlette(routes=[Route("/metrics", metrics)]), address, task_status=task_status
    )
