"""Request bodies read with a bound, so that no client can make the server hold a large one.

A body over its bound is answered 413 at once, and over HTTP/1.1 the answer
says `Connection: close`: the rest of the body is never read, so the
connection could not carry another request, and the client learns it is
over instead of sending on.  (HTTP/2 forbids the header; the stream ends.)
"""

from __future__ import annotations

from starlette.requests import Request


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to exceed `limit` bytes.

    A declared length is refused before anything is read, and a streamed
    body is dropped at the first chunk past the limit, so a large body never
    sits in memory.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def closing(request: Request) -> dict[str, str]:
    """The headers of an answer that leaves a request's body unread."""
    return {"Connection": "close"} if request.scope.get("http_version", "1.1") < "2" else {}
