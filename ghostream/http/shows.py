"""Recorded shows on the web: the replay page, its HLS VOD, one MP4, and thumbnails.

`/ID/shows/N` (N a show's number in the history) is a page with the video and,
under it on the same time axis, the show's viewers over time: a click on the
chart seeks the video there.  `/ID/shows/N/index.m3u8` is the recording as
written (HLS VOD), `/ID/shows/N.mp4` the whole show remuxed once into one MP4
and then served from disk.  Recordings are the admin's unless
`recording.public` is set.  `/ID/thumbnail.jpg` is the live stream's latest
keyframe, decoded only when asked for and at most once per keyframe.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ghostream import threads
from ghostream.broker.packets import PacketHub
from ghostream.broker.registry import Broker, StreamNotFound
from ghostream.broker.stream import StreamEnded
from ghostream.config import Settings
from ghostream.history import queries
from ghostream.history.log import EventLog
from ghostream.http.pages import site_templates
from ghostream.media.errors import MalformedStream
from ghostream.media.pictures import keyframe_jpeg
from ghostream.outputs.recording import Recording, find_recording
from ghostream.outputs.recording.files import PLAYLIST, THUMBNAIL
from ghostream.outputs.recording.library import remux_to_mp4

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
SHOW_FILE = re.compile(r"(init|segment)-[0-9]{1,9}\.(mp4|m4s)")
MP4_NAME = "show.mp4"
MEDIA_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mp4": "video/mp4",
    ".m4s": "video/iso.segment",
}
MAX_LOCATED = 256
# Waiting for a keyframe of a live stream to decode, at most.
THUMBNAIL_WAIT = 5.0


def _missing(what: str) -> JSONResponse:
    return JSONResponse({"error": what}, status_code=404)


class Thumbnails:
    """The latest keyframe of each live stream as a JPEG, decoded once per keyframe at most."""

    def __init__(self, packets: PacketHub) -> None:
        self.packets = packets
        self._cached: dict[str, tuple[int, bytes]] = {}
        self._locks: dict[str, trio.Lock] = {}

    async def jpeg(self, stream_id: str) -> bytes | None:
        lock = self._locks.setdefault(stream_id, trio.Lock())
        async with lock:
            try:
                keyframe = await self._keyframe(stream_id)
            except (StreamNotFound, StreamEnded, MalformedStream):
                keyframe = None
            if keyframe is None:
                self._cached.pop(stream_id, None)
                self._locks.pop(stream_id, None)
                return None
            cached = self._cached.get(stream_id)
            if cached is not None and cached[0] == keyframe.dts:
                return cached[1]
            try:
                jpeg = await trio.to_thread.run_sync(
                    keyframe_jpeg, keyframe, limiter=threads.RECORDING
                )
            except MalformedStream:
                return None
            self._cached[stream_id] = (keyframe.dts, jpeg)
            return jpeg

    async def _keyframe(self, stream_id: str):
        """The keyframe a new reader starts on: the stream's latest one."""
        with trio.move_on_after(THUMBNAIL_WAIT):
            async with self.packets.read(stream_id) as reader:
                while True:
                    packet = await reader.receive()
                    if packet.track.kind == "video" and packet.keyframe:
                        return packet
        return None


def show_routes(
    settings: Settings,
    broker: Broker,
    packets: PacketHub,
    history: EventLog | None,
    admin_guard: Callable[[Handler], Handler],
) -> list[Route]:
    root = settings.recording_directory
    thumbnails = Thumbnails(packets)
    templates, site = site_templates(settings.web)
    # One remux at a time per recording; the MP4 is then served from disk.
    remuxing: dict[Path, trio.Lock] = {}
    # Shows whose recording was found: a player fetches a segment every few seconds.
    located: OrderedDict[tuple[str, int], Path] = OrderedDict()

    def guarded(handler: Handler) -> Handler:
        return handler if settings.recording.public else admin_guard(handler)

    async def show_and_recording(request: Request) -> tuple[dict, Recording | None] | None:
        if history is None:
            return None
        show = await history.query(queries.show, request.path_params["show_id"])
        if show is None or show["stream"] != request.path_params["stream_id"]:
            return None
        recording = await trio.to_thread.run_sync(
            find_recording, root, show["stream"], show["started"]
        )
        return show, recording

    async def page(request: Request) -> Response:
        found = await show_and_recording(request)
        if found is None:
            return _missing("no such show")
        show, recording = found
        return templates.TemplateResponse(
            request,
            "show.html",
            {
                "site": site,
                "home_url": "/",
                "show": show,
                "recorded": recording is not None,
                "base": f"/{show['stream']}/shows/{show['id']}",
            },
        )

    async def facts(request: Request) -> Response:
        found = await show_and_recording(request)
        if found is None:
            return _missing("no such show")
        show, recording = found
        assert history is not None
        series = await history.query(
            queries.viewer_series, show["stream"], show["started"], show["ended"]
        )
        return JSONResponse(
            {
                "show": show,
                "series": series,
                "recording": recording.as_dict() if recording else None,
            }
        )

    async def recording_directory(request: Request) -> Path | None:
        """Where a show's recording is: looked up once, then remembered for its segments."""
        key = (request.path_params["stream_id"], request.path_params["show_id"])
        directory = located.get(key)
        if directory is not None and directory.is_dir():
            located.move_to_end(key)
            return directory
        found = await show_and_recording(request)
        if found is None or found[1] is None:
            return None
        located[key] = found[1].directory
        while len(located) > MAX_LOCATED:
            located.popitem(last=False)
        return found[1].directory

    async def media(request: Request) -> Response:
        name = request.path_params.get("name", PLAYLIST)
        if name != PLAYLIST and not SHOW_FILE.fullmatch(name):
            return _missing("no such file")
        directory = await recording_directory(request)
        if directory is None:
            return _missing("no recording of this show")
        path = directory / name
        if not path.is_file():
            return _missing("no such file")
        media_type = MEDIA_TYPES[path.suffix]
        # The playlist grows while the show is recorded; segments never change.
        cache = "no-cache" if name == PLAYLIST else "max-age=31536000, immutable"
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": cache})

    async def mp4(request: Request) -> Response:
        found = await show_and_recording(request)
        if found is None or found[1] is None:
            return _missing("no recording of this show")
        recording = found[1]
        if recording.ended is None:
            return JSONResponse(
                {"error": "the show is still being recorded: play index.m3u8 meanwhile"},
                status_code=409,
            )
        target = recording.directory / MP4_NAME
        lock = remuxing.setdefault(recording.directory, trio.Lock())
        async with lock:
            if not target.is_file():
                began = time.monotonic()
                try:
                    await trio.to_thread.run_sync(
                        remux_to_mp4, recording, target, limiter=threads.RECORDING
                    )
                except (OSError, ValueError) as exc:
                    log.error("recording %s: MP4 not made: %s", recording.directory, exc)
                    return JSONResponse({"error": "the MP4 could not be made"}, status_code=500)
                log.info(
                    "recording %s: MP4 made in %.1f s",
                    recording.directory,
                    time.monotonic() - began,
                )
        started = time.strftime("%Y%m%d-%H%M", time.localtime(recording.started))
        filename = f"{recording.stream}-{started}.mp4"
        return FileResponse(target, media_type="video/mp4", filename=filename)

    async def show_thumbnail(request: Request) -> Response:
        found = await show_and_recording(request)
        if found is None or found[1] is None or not found[1].has_thumbnail:
            return _missing("no thumbnail of this show")
        return FileResponse(found[1].directory / THUMBNAIL, media_type="image/jpeg")

    async def live_thumbnail(request: Request) -> Response:
        stream_id = request.path_params["stream_id"]
        if not await broker.provide(stream_id):
            return _missing("no such live stream")
        jpeg = await thumbnails.jpeg(stream_id)
        if jpeg is None:
            return _missing("no picture yet")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=2"})

    base = "/{stream_id:str}/shows/{show_id:int}"
    return [
        Route("/{stream_id:str}/thumbnail.jpg", live_thumbnail),
        Route(base, guarded(page)),
        Route(base + ".json", guarded(facts)),
        Route(base + ".mp4", guarded(mp4)),
        Route(base + "/thumbnail.jpg", guarded(show_thumbnail)),
        Route(base + "/{name:str}", guarded(media)),
    ]
