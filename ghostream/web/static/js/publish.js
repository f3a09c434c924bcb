// Publishing from the browser over WHIP: camera and microphone, H.264 preferred.
// The stream key is sent only as the Bearer token of the WHIP request, never in a URL.
"use strict";

const config = JSON.parse(document.getElementById("publish-config").textContent);
const status = document.getElementById("status");
const startButton = document.getElementById("start");
const stopButton = document.getElementById("stop");
const publisher = {pc: null, resource: null, media: null};
window.publisher = publisher;

function say(text) {
  status.textContent = text;
}

function preferH264(transceiver) {
  const codecs = RTCRtpSender.getCapabilities("video").codecs;
  const h264 = codecs.filter((c) => c.mimeType === "video/H264"
    && /packetization-mode=1/.test(c.sdpFmtpLine || ""));
  // Constrained baseline first: no B-frames, so every viewer gets the video as it is.
  h264.sort((a, b) => Number(!/42e0/.test(a.sdpFmtpLine)) - Number(!/42e0/.test(b.sdpFmtpLine)));
  const rest = codecs.filter((c) => c.mimeType === "video/rtx");
  if (h264.length && transceiver.setCodecPreferences) transceiver.setCodecPreferences([...h264, ...rest]);
}

async function gathered(pc) {
  if (pc.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    const done = () => pc.iceGatheringState === "complete" && resolve();
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000);
  });
}

async function start(key) {
  say("Asking for the camera and microphone…");
  const media = await navigator.mediaDevices.getUserMedia({
    video: {width: {ideal: config.width}, height: {ideal: config.height}}, audio: true,
  });
  publisher.media = media;
  document.getElementById("preview").srcObject = media;
  const pc = new RTCPeerConnection({iceServers: config.iceServers.map((urls) => ({urls}))});
  publisher.pc = pc;
  for (const track of media.getTracks()) {
    const transceiver = pc.addTransceiver(track, {direction: "sendonly", streams: [media]});
    if (track.kind !== "video") continue;
    preferH264(transceiver);
    // A steady picture size: each change would restart forwards and recordings.
    const parameters = transceiver.sender.getParameters();
    parameters.degradationPreference = "maintain-resolution";
    await transceiver.sender.setParameters(parameters).catch(() => {});
  }
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "connected") say(`Publishing ${config.stream}.`);
    if (pc.connectionState === "failed") say("The connection to the server failed.");
  };
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  say("Connecting…");
  const response = await fetch(`/${config.stream}/whip`, {
    method: "POST",
    headers: {"Content-Type": "application/sdp", "Authorization": `Bearer ${key}`},
    body: pc.localDescription.sdp,
  });
  publisher.status = response.status;
  const text = await response.text();
  if (response.status !== 201) {
    stop();
    throw new Error(text.trim() || `the server answered ${response.status}`);
  }
  publisher.resource = response.headers.get("Location");
  await pc.setRemoteDescription({type: "answer", sdp: text});
}

function stop() {
  if (publisher.resource) fetch(publisher.resource, {method: "DELETE"}).catch(() => {});
  if (publisher.pc) publisher.pc.close();
  if (publisher.media) publisher.media.getTracks().forEach((t) => t.stop());
  Object.assign(publisher, {pc: null, resource: null, media: null});
  startButton.disabled = false;
  stopButton.disabled = true;
}

document.getElementById("publish-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = document.getElementById("key").value;
  startButton.disabled = true;
  stopButton.disabled = false;
  start(key).catch((error) => {
    stop();
    say(`Not publishing: ${error.message}`);
  });
});
stopButton.addEventListener("click", () => {
  stop();
  say("Stopped.");
});
window.addEventListener("pagehide", stop);
