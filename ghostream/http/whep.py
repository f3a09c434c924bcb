"""WHEP signalling (draft-ietf-wish-whep): a viewer POSTs an SDP offer, gets an answer.

`POST /ID/whep` answers 201 with the SDP answer and a `Location` naming the
session; `DELETE` on that location ends it (see `signalling`).  A `uid`
query parameter lets the player's viewer id follow the session into the
stream's statistics.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ghostream.auth import Gatekeeper
from ghostream.http.signalling import (
    bearer,
    created,
    error,
    peer_of,
    read_offer,
    signalling_routes,
)
from ghostream.webrtc import WebRtcError, WebRtcOutput


def whep_routes(
    webrtc: WebRtcOutput, gatekeeper: Gatekeeper, stream_path: str, valid_id
) -> list[Route]:
    async def offer(request: Request) -> Response:
        stream_id = request.path_params["stream_id"]
        if not valid_id(stream_id):
            return error(404, "no such stream")
        sdp = await read_offer(request)
        if isinstance(sdp, Response):
            return sdp
        peer = peer_of(request)
        token = bearer(request) or request.query_params.get("token", "")
        allowed = await gatekeeper.admit_reader(stream_id, token, peer, protocol="whep")
        if not allowed.ok:
            return error(401, "not allowed to watch", {"WWW-Authenticate": "Bearer"})
        try:
            uid = request.query_params.get("uid", "")
            session, answer = await webrtc.answer(stream_id, sdp, peer, uid)
        except WebRtcError as exc:
            # Logged and recorded (once a minute per host) where it was refused.
            return error(exc.status, str(exc))
        return created(webrtc, answer, f"/{stream_id}/whep", session.id)

    return signalling_routes(webrtc, f"/{stream_path}/whep", offer, webrtc.end)
