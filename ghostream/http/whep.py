"""WHEP signalling (draft-ietf-wish-whep): POST an SDP offer, get an answer and a resource.

`POST /ID/whep` answers 201 with the SDP answer and a `Location` naming the
session; `DELETE` on that location ends it.  The answer carries every ICE
candidate (no trickle), so `PATCH` is refused with 405.  STUN servers are
advertised in `Link` headers as the draft describes, and CORS is open so
that players served from other origins can sign in to a stream.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ghostream.http.bodies import read_body
from ghostream.outputs.webrtc import WebRtcError, WebRtcOutput

log = logging.getLogger(__name__)

MAX_OFFER_BYTES = 64 * 1024
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, If-Match",
    "Access-Control-Expose-Headers": "Location, Link, ETag",
}


def _error(status: int, message: str) -> Response:
    return PlainTextResponse(message + "\n", status_code=status, headers=CORS)


def ice_server_links(webrtc: WebRtcOutput) -> dict[str, str]:
    """The STUN servers as `Link` headers, as WHEP and WHIP advertise them."""
    servers = [f'<{url}>; rel="ice-server"' for url in webrtc.ice_servers]
    return {"Link": ", ".join(servers)} if servers else {}


def whep_routes(webrtc: WebRtcOutput, stream_path: str, valid_id) -> list[Route]:
    def links() -> dict[str, str]:
        return ice_server_links(webrtc)

    async def options(request: Request) -> Response:
        return Response(
            status_code=204, headers=CORS | links() | {"Accept-Post": "application/sdp"}
        )

    async def offer(request: Request) -> Response:
        stream_id = request.path_params["stream_id"]
        if not valid_id(stream_id):
            return _error(404, "no such stream")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/sdp":
            return _error(415, "the offer must be sent as application/sdp")
        body = await read_body(request, MAX_OFFER_BYTES)
        if body is None:
            return _error(413, "the offer is too large")
        try:
            sdp = body.decode()
        except UnicodeDecodeError:
            return _error(400, "the offer is not text")
        peer = f"{request.client.host}:{request.client.port}" if request.client else "?"
        try:
            uid = request.query_params.get("uid", "")
            session, answer = await webrtc.answer(stream_id, sdp, peer, uid)
        except WebRtcError as exc:
            if exc.status >= 500:
                log.warning("WHEP offer for %s from %s refused: %s", stream_id, peer, exc)
            elif exc.status == 400:
                # The parser's message may quote the offer: the client hears it, the log does not.
                log.warning("WHEP offer for %s from %s refused: malformed offer", stream_id, peer)
            return _error(exc.status, str(exc))
        location = f"/{stream_id}/whep/{session.id}"
        return Response(
            answer,
            status_code=201,
            media_type="application/sdp",
            headers=CORS | links() | {"Location": location, "ETag": f'"{session.id}"'},
        )

    async def resource(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=CORS)
        if request.method == "PATCH":
            return _error(405, "trickle ICE is not used: the answer holds every candidate")
        if not webrtc.end(request.path_params["session_id"]):
            return _error(404, "no such session")
        return Response(status_code=200, headers=CORS)

    return [
        Route(f"/{stream_path}/whep", offer, methods=["POST"]),
        Route(f"/{stream_path}/whep", options, methods=["OPTIONS"]),
        Route(
            f"/{stream_path}/whep/{{session_id:str}}",
            resource,
            methods=["DELETE", "PATCH", "OPTIONS"],
        ),
    ]
