"""What WHEP and WHIP share: an SDP offer in, a 201 answer and a session resource out.

Both drafts ask the same of a server: `POST` an `application/sdp` offer,
answer `201 Created` with the SDP answer and a `Location` naming the
session, `DELETE` that location to end it.  Our answers carry every ICE
candidate (no trickle), so `PATCH` is refused with 405.  STUN servers are
advertised in `Link` headers, and CORS is open so that players and
publishing pages served from other origins can use either endpoint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ghostream.http.bodies import closing, read_body
from ghostream.webrtc import WebRtcOutput

MAX_OFFER_BYTES = 64 * 1024
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, If-Match",
    "Access-Control-Expose-Headers": "Location, Link, ETag",
}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(message + "\n", status_code=status, headers=CORS | (headers or {}))


def peer_of(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "?"


async def read_offer(request: Request) -> str | Response:
    """The offer's text, or the error answer that explains why there is none."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/sdp":
        return error(415, "the offer must be sent as application/sdp")
    body = await read_body(request, MAX_OFFER_BYTES)
    if body is None:
        return error(413, f"the offer is larger than {MAX_OFFER_BYTES} bytes", closing(request))
    try:
        return body.decode()
    except UnicodeDecodeError:
        return error(400, "the offer is not text")


def signalling_routes(
    webrtc: WebRtcOutput,
    path: str,
    offer: Callable[[Request], Awaitable[Response]],
    end: Callable[[str], bool],
) -> list[Route]:
    """The offer endpoint at `path`, and the session resources beneath it.

    `offer` answers a POST, calling `created` on success; `end` ends the
    session a DELETE names and says whether there was one.  A session id is
    only ever told to the client that made the session: it is the credential.
    """

    async def options(request: Request) -> Response:
        headers = CORS | ice_server_links(webrtc) | {"Accept-Post": "application/sdp"}
        return Response(status_code=204, headers=headers)

    async def resource(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=CORS)
        if request.method == "PATCH":
            return error(405, "trickle ICE is not used: the answer holds every candidate")
        if not end(request.path_params["session_id"]):
            return error(404, "no such session")
        return Response(status_code=200, headers=CORS)

    return [
        Route(path, offer, methods=["POST"]),
        Route(path, options, methods=["OPTIONS"]),
        Route(f"{path}/{{session_id:str}}", resource, methods=["DELETE", "PATCH", "OPTIONS"]),
    ]


def ice_server_links(webrtc: WebRtcOutput) -> dict[str, str]:
    servers = [f'<{url}>; rel="ice-server"' for url in webrtc.ice_servers]
    return {"Link": ", ".join(servers)} if servers else {}


def created(webrtc: WebRtcOutput, answer: str, path: str, session_id: str) -> Response:
    """The 201 answer naming the new session's resource."""
    resource = {"Location": f"{path}/{session_id}", "ETag": f'"{session_id}"'}
    return Response(
        answer,
        status_code=201,
        media_type="application/sdp",
        headers=CORS | ice_server_links(webrtc) | resource,
    )


def bearer(request: Request) -> str | None:
    """The token of `Authorization: Bearer`: a WHIP publisher's password, a WHEP viewer's token."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
