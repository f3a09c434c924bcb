"""A WHEP viewer made of GStreamer's webrtcbin, run by Debian's own python3 (its gi bindings).

    /usr/bin/python3 gst_whep.py URL [--codec H264|VP8|VP9] [--setup actpass|active|passive]
                                     [--frames N] [--timeout SECONDS]

webrtcbin makes its usual offer (one receive-only video transceiver, its
own RSA certificate, `a=setup:actpass`); `--setup` rewrites the offer's
setup attribute to make the server take the other DTLS role.  The offer is
POSTed once ICE gathering is complete, the answer applied, and the video
decoded.  The last line printed is JSON: the HTTP status, the answer, the
frames decoded and the DTLS/ICE states; the exit status is 0 once `--frames`
frames were decoded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

CAPS = {
    "H264": "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,"
    "packetization-mode=(string)1,profile-level-id=(string)42e01f",
    "VP8": "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
    "VP9": "application/x-rtp,media=video,encoding-name=VP9,payload=98,clock-rate=90000",
}


class Viewer:
    def __init__(self, url: str, codec: str, setup: str, frames: int) -> None:
        self.url = url
        self.setup = setup
        self.wanted = frames
        self.result: dict = {"status": None, "answer": "", "decoded": 0}
        self.loop = GLib.MainLoop()
        self.pipeline = Gst.Pipeline.new("whep")
        self.webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
        self.webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        self.pipeline.add(self.webrtc)
        self.webrtc.emit(
            "add-transceiver",
            GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY,
            Gst.Caps.from_string(CAPS[codec]),
        )
        self.webrtc.connect("pad-added", self.on_pad)
        self.webrtc.connect("notify::ice-gathering-state", self.on_gathering)
        self.offer: GstWebRTC.WebRTCSessionDescription | None = None

    def start(self) -> None:
        self.pipeline.set_state(Gst.State.PLAYING)
        promise = Gst.Promise.new_with_change_func(self.on_offer, None)
        self.webrtc.emit("create-offer", None, promise)

    def on_offer(self, promise: Gst.Promise, _data: object) -> None:
        promise.wait()
        reply = promise.get_reply()  # kept: the offer belongs to it
        offer = reply.get_value("offer")
        text = offer.sdp.as_text()
        if self.setup != "actpass":
            text = text.replace("a=setup:actpass", f"a=setup:{self.setup}")
        _, message = GstSdp.SDPMessage.new_from_text(text)
        self.offer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.OFFER, message)
        self.webrtc.emit("set-local-description", self.offer, Gst.Promise.new())

    def on_gathering(self, element: Gst.Element, _spec: object) -> None:
        state = element.get_property("ice-gathering-state")
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(self.post_offer)

    def post_offer(self) -> bool:
        sdp = self.webrtc.get_property("local-description").sdp.as_text()
        request = urllib.request.Request(
            self.url, data=sdp.encode(), method="POST", headers={"Content-Type": "application/sdp"}
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                self.result["status"], answer = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            self.result["status"], self.result["answer"] = error.code, error.read().decode()
            self.loop.quit()
            return False
        self.result["answer"] = answer
        _, message = GstSdp.SDPMessage.new_from_text(answer)
        description = GstWebRTC.WebRTCSessionDescription.new(
            GstWebRTC.WebRTCSDPType.ANSWER, message
        )
        self.webrtc.emit("set-remote-description", description, Gst.Promise.new())
        return False

    def on_pad(self, _element: Gst.Element, pad: Gst.Pad) -> None:
        if pad.direction != Gst.PadDirection.SRC:
            return
        decode = Gst.ElementFactory.make("decodebin")
        decode.connect("pad-added", self.on_decoded_pad)
        self.pipeline.add(decode)
        decode.sync_state_with_parent()
        pad.link(decode.get_static_pad("sink"))

    def on_decoded_pad(self, _element: Gst.Element, pad: Gst.Pad) -> None:
        sink = Gst.ElementFactory.make("fakesink")
        sink.set_property("sync", False)
        self.pipeline.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))
        pad.add_probe(Gst.PadProbeType.BUFFER, self.on_frame)

    def on_frame(self, _pad: Gst.Pad, _info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        self.result["decoded"] += 1
        if self.result["decoded"] >= self.wanted:
            GLib.idle_add(self.loop.quit)
        return Gst.PadProbeReturn.OK

    def states(self) -> None:
        self.result["ice"] = self.webrtc.get_property("ice-connection-state").value_nick
        self.result["connection"] = self.webrtc.get_property("connection-state").value_nick
        found = re.search(r"a=setup:(\w+)", self.result["answer"])
        self.result["answer_setup"] = found.group(1) if found else None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--codec", default="H264", choices=sorted(CAPS))
    parser.add_argument("--setup", default="actpass", choices=("actpass", "active", "passive"))
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=20)
    args = parser.parse_args()
    Gst.init(None)
    viewer = Viewer(args.url, args.codec, args.setup, args.frames)
    GLib.timeout_add(int(args.timeout * 1000), viewer.loop.quit)
    viewer.start()
    viewer.loop.run()
    viewer.states()
    viewer.pipeline.set_state(Gst.State.NULL)
    print(json.dumps(viewer.result), flush=True)
    return 0 if viewer.result["decoded"] >= args.frames else 1


if __name__ == "__main__":
    sys.exit(main())
