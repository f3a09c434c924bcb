"""WHIP signalling (RFC 9725): POST an SDP offer with a Bearer token, publish a stream.

`POST /ID/whip` takes the publisher's offer (`application/sdp`) and the
stream's password as `Authorization: Bearer …` (OBS's "Bearer Token"
field), checked by the same gatekeeper as SRT publishers (bcrypt or LDAP,
throttled per address).  It answers `201 Created` with the SDP answer and
a `Location` for the session; `DELETE` on that location ends the publish.
The answer carries every ICE candidate, so trickle (`PATCH`) gets 405.
STUN servers are advertised in `Link` headers, and CORS is open so that a
publishing page on another origin can use it.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ghostream.auth import Gatekeeper
from ghostream.http.bodies import read_body
from ghostream.http.whep import CORS, MAX_OFFER_BYTES, ice_server_links
from ghostream.outputs.webrtc import WebRtcError, WebRtcOutput
from ghostream.streamid import InvalidStreamId, publish_request

log = logging.getLogger(__name__)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(message + "\n", status_code=status, headers=CORS | (headers or {}))


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def whip_routes(
    webrtc: WebRtcOutput, gatekeeper: Gatekeeper, stream_path: str, valid_id
) -> list[Route]:
    def links() -> dict[str, str]:
        return ice_server_links(webrtc)

    async def options(request: Request) -> Response:
        return Response(
            status_code=204, headers=CORS | links() | {"Accept-Post": "application/sdp"}
        )

    async def offer(request: Request) -> Response:
        raw_id = request.path_params["stream_id"]
        if not valid_id(raw_id.lower()):
            return _error(404, "no such stream")
        peer = f"{request.client.host}:{request.client.port}" if request.client else "?"
        token = _bearer(request)
        if token is None:
            return _error(
                401,
                "send the stream's password as Authorization: Bearer",
                {"WWW-Authenticate": 'Bearer realm="ghostream"'},
            )
        try:
            wanted = publish_request(raw_id, token)
        except InvalidStreamId as exc:
            return _error(403, str(exc))
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/sdp":
            return _error(415, "the offer must be sent as application/sdp")
        body = await read_body(request, MAX_OFFER_BYTES)
        if body is None:
            return _error(413, f"the offer is larger than {MAX_OFFER_BYTES} bytes")
        stream_id = wanted.stream_id
        result = await gatekeeper.admit(stream_id, wanted.password, peer)
        if not result.ok:
            webrtc.broker.reject(stream_id, peer, "whip", result.reason)
            return _error(401, "wrong stream id or password", {"WWW-Authenticate": "Bearer"})
        try:
            sdp = body.decode()
        except UnicodeDecodeError:
            return _error(400, "the offer is not text")
        try:
            publish, answer = await webrtc.ingest.answer(stream_id, sdp, peer)
        except WebRtcError as exc:
            log.warning("WHIP publish of %s from %s refused: %s", stream_id, peer, exc)
            webrtc.broker.reject(stream_id, peer, "whip", str(exc))
            return _error(exc.status, str(exc))
        location = f"/{stream_id}/whip/{publish.id}"
        return Response(
            answer,
            status_code=201,
            media_type="application/sdp",
            headers=CORS | links() | {"Location": location, "ETag": f'"{publish.id}"'},
        )

    async def resource(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=CORS)
        if request.method == "PATCH":
            return _error(405, "trickle ICE is not used: the answer holds every candidate")
        # The session id is a secret of the publisher that received it: it is the credential.
        if not webrtc.ingest.end(request.path_params["session_id"]):
            return _error(404, "no such session")
        return Response(status_code=200, headers=CORS)

    return [
        Route(f"/{stream_path}/whip", offer, methods=["POST"]),
        Route(f"/{stream_path}/whip", options, methods=["OPTIONS"]),
        Route(
            f"/{stream_path}/whip/{{session_id:str}}",
            resource,
            methods=["DELETE", "PATCH", "OPTIONS"],
        ),
    ]
