"""A publisher that reconnects, with its clock starting over: viewers keep watching.

Chromium watches over WHEP while the publisher goes away and comes back
with timestamps that jump (as OBS's do after a restart).  The browser must
see one clock that goes on: frames decoded again within about a second of
the new publisher's first keyframe, not a multi-second stall.
"""

from __future__ import annotations

from pathlib import Path

from harness.browser import wait_for
from harness.media import signal_source
from harness.publisher import publishing

PAGE = Path(__file__).parent / "pages" / "whep.html"
SOURCE = signal_source("160x90", "-tune", "zerolatency")
# The second publisher's clock lies a minute ahead of the first one's.
AHEAD = [*SOURCE, "-output_ts_offset", "60"]


def frames(driver) -> int:
    stats = driver.execute_script("return await stats()")
    return stats.get("video", {}).get("framesDecoded", 0)


def test_webrtc_playback_goes_on_after_the_publisher_comes_back(
    require_program, chromium, ghostream_server
) -> None:
    require_program("ffmpeg")
    server = ghostream_server({"streams": {"reconnectGrace": 30}})
    with publishing(server, "demo:demo", source=SOURCE, seconds=60):
        chromium.get(f"{PAGE.as_uri()}?whep={server.web_url}/demo/whep")
        wait_for(chromium, "return await stats()",
                 lambda s: s.get("video", {}).get("framesDecoded", 0) >= 50, 25,
                 "the first publisher's video")  # fmt: skip
    for source in (SOURCE, AHEAD):
        mark = server.line_count()
        with publishing(server, "demo:demo", source=source, seconds=60):
            # The second publisher's clock is 60 s ahead: a player that waited for it to come
            # round would stall that long; one that follows it decodes on within half of it.
            before = frames(chromium)
            wait_for(chromium, "return await stats()",
                     lambda s, n=before: s.get("video", {}).get("framesDecoded", 0) >= n + 25,
                     30, "video decoded again after the publisher came back")  # fmt: skip
        server.wait_for_log("stopped publishing demo", 10, start=mark)
    assert "watching demo over WebRTC" in server.log
    assert "stopped watching demo" not in server.log
