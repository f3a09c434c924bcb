"""WHIP signalling (RFC 9725): POST an SDP offer with a Bearer token, publish a stream.

`POST /ID/whip` takes the publisher's offer (`application/sdp`) and the
stream's password as `Authorization: Bearer …` (OBS's "Bearer Token"
field), checked by the same gatekeeper as SRT publishers (bcrypt or LDAP,
throttled per address).  It answers `201 Created` with the SDP answer and
a `Location` for the session; `DELETE` on that location ends the publish
(see `signalling`).
"""

from __future__ import annotations

import logging

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
from ghostream.streamid import InvalidStreamId, publish_request
from ghostream.webrtc import WebRtcError, WebRtcOutput

log = logging.getLogger(__name__)


def whip_routes(
    webrtc: WebRtcOutput, gatekeeper: Gatekeeper, stream_path: str, valid_id
) -> list[Route]:
    async def offer(request: Request) -> Response:
        raw_id = request.path_params["stream_id"]
        if not valid_id(raw_id.lower()):
            return error(404, "no such stream")
        token = bearer(request)
        if token is None:
            return error(
                401,
                "send the stream's password as Authorization: Bearer",
                {"WWW-Authenticate": 'Bearer realm="ghostream"'},
            )
        try:
            wanted = publish_request(raw_id, token)
        except InvalidStreamId as exc:
            return error(403, str(exc))
        sdp = await read_offer(request)
        if isinstance(sdp, Response):
            return sdp
        stream_id = wanted.stream_id
        peer = peer_of(request)
        result = await gatekeeper.admit(stream_id, wanted.password, peer, protocol="whip")
        if not result.ok:
            webrtc.broker.reject(stream_id, peer, "whip", result.reason)
            return error(401, "wrong stream id or password", {"WWW-Authenticate": "Bearer"})
        try:
            publish, answer = await webrtc.ingest.answer(stream_id, sdp, peer)
        except WebRtcError as exc:
            log.warning("WHIP publish of %s from %s refused: %s", stream_id, peer, exc)
            webrtc.broker.reject(stream_id, peer, "whip", str(exc))
            return error(exc.status, str(exc))
        return created(webrtc, answer, f"/{stream_id}/whip", publish.id)

    return signalling_routes(webrtc, f"/{stream_path}/whip", offer, webrtc.ingest.end)
