// The Ghostream player: WebRTC (WHEP; UDP, else ICE-TCP) first, LL-HLS (hls.js) when both fail,
// the poster while the stream is offline, and the viewer counter below.
"use strict";

const config = JSON.parse(document.getElementById("player-config").textContent);
const video = document.getElementById("video");
const statusLine = document.getElementById("status");
const modeSelect = document.getElementById("mode");
const qualitySelect = document.getElementById("quality");
const unmute = document.getElementById("unmute");
const retryButton = document.getElementById("retry");
const RETRY_MS = 3000;
const WEBRTC_TIMEOUT_MS = 5000;
// In WebRTC mode, attempts that fail in a row before the player stops and offers a button.
const WEBRTC_TRIES = 3;

const uid = Math.random().toString(36).slice(2) + Date.now().toString(36);
const player = {
  mode: "", pc: null, hls: null, resource: null, generation: 0, retry: null, why: "", failures: 0,
};
window.ghostreamPlayer = player;

function say(text) { statusLine.textContent = text; }
function offline(yes) { document.body.classList.toggle("offline", yes); }
function streamId() { return qualitySelect.value || config.stream; }

function stopWebrtc() {
  if (player.pc) { player.pc.close(); player.pc = null; }
  if (player.resource) {
    fetch(player.resource, {method: "DELETE"}).catch(() => {});
    player.resource = null;
  }
  video.srcObject = null;
}

function stop() {
  player.generation += 1;
  clearTimeout(player.retry);
  stopWebrtc();
  if (player.hls) { player.hls.destroy(); player.hls = null; }
  video.removeAttribute("src");
  player.mode = "";
}

function retryLater(reason) {
  stop();
  offline(true);
  say(reason);
  player.retry = setTimeout(start, RETRY_MS);
}

// WebRTC was asked for and failed: a few more tries, then the player waits for the viewer.
function webrtcFailed(reason) {
  player.failures += 1;
  if (player.failures < WEBRTC_TRIES) {
    return retryLater(`WebRTC failed (${reason}); trying again (${player.failures} of ${WEBRTC_TRIES})…`);
  }
  stop();
  offline(true);
  say(`WebRTC failed ${WEBRTC_TRIES} times (${reason}). Try again, or choose LL-HLS.`);
  retryButton.hidden = false;
}

// A choice of the viewer's (mode, quality, the button): the count of failed tries starts over.
function restart() {
  player.failures = 0;
  start();
}

function playing(mode, transport) {
  player.mode = mode;
  if (mode === "webrtc") player.failures = 0;
  offline(false);
  const label = mode === "webrtc" ? `WebRTC${transport ? "/" + transport.toUpperCase() : ""}` : "LL-HLS";
  const quality = qualitySelect.value === "auto" ? "auto" : qualitySelect.value.split("@")[1];
  say(`Live over ${label}` + (quality ? ` (${quality})` : "") + (player.why ? `: ${player.why}` : ""));
}

async function start() {
  stop();
  retryButton.hidden = true;
  player.why = "";
  const chosen = modeSelect.value;
  if (chosen === "hls" || (chosen === "auto" && !config.webrtc) || qualitySelect.value === "auto") {
    return startHls();
  }
  const generation = player.generation;
  say("Connecting over WebRTC…");
  const outcome = await startWebrtc(generation).catch((error) => ({failed: String(error)}));
  if (generation !== player.generation) return;
  if (outcome.offline) return retryLater("The stream is offline; waiting for it to start…");
  if (outcome.unplayable) return startHlsInstead(outcome.unplayable);
  if (outcome.failed) {
    if (chosen === "webrtc") return webrtcFailed(outcome.failed);
    stopWebrtc();
    // Kept on the status line while LL-HLS plays: the viewer (or their admin) can act on it.
    player.why = `WebRTC could not connect (${outcome.failed})`;
    return startHls(`Connecting over LL-HLS: ${player.why}`);
  }
}

async function startWebrtc(generation) {
  const pc = new RTCPeerConnection({iceServers: config.iceServers.map((urls) => ({urls}))});
  player.pc = pc;
  pc.addTransceiver("video", {direction: "recvonly"});
  pc.addTransceiver("audio", {direction: "recvonly"});
  const media = new MediaStream();
  pc.ontrack = (event) => { media.addTrack(event.track); video.srcObject = media; };
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const token = new URLSearchParams(location.search).get("token");
  const query = `uid=${uid}${token ? `&token=${encodeURIComponent(token)}` : ""}`;
  const response = await fetch(`/${streamId()}/whep?${query}`, {
    method: "POST", headers: {"Content-Type": "application/sdp"}, body: pc.localDescription.sdp,
  });
  if (response.status === 404) return {offline: true};
  if (response.status === 415) return {unplayable: (await response.text()).trim()};
  if (response.status !== 201) {
    const why = (await response.text()).trim().slice(0, 200);
    return {failed: `the server answered ${response.status}${why ? ": " + why : ""}`};
  }
  player.resource = response.headers.get("Location");
  await pc.setRemoteDescription({type: "answer", sdp: await response.text()});
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({failed: "no media within 5 s"}), WEBRTC_TIMEOUT_MS);
    const check = () => {
      if (generation !== player.generation) return;
      if (pc.connectionState === "connected") {
        clearTimeout(timer);
        playing("webrtc");
        transportOf(pc).then((transport) => {
          if (generation === player.generation && player.mode === "webrtc") playing("webrtc", transport);
        });
        resolve({});
      } else if (pc.connectionState === "failed") {
        clearTimeout(timer);
        resolve({failed: "connection failed"});
      }
    };
    pc.onconnectionstatechange = () => {
      check();
      if (player.mode === "webrtc" && ["failed", "disconnected", "closed"].includes(pc.connectionState)) {
        retryLater("The stream stopped; waiting for it to come back…");
      }
    };
    check();
  });
}

// "udp", or "tcp" when the network lets WebRTC through only over ICE-TCP.
async function transportOf(pc) {
  const reports = await pc.getStats();
  for (const report of reports.values()) {
    if (report.type !== "transport" || !report.selectedCandidatePairId) continue;
    const pair = reports.get(report.selectedCandidatePairId);
    return pair && reports.get(pair.localCandidateId)?.protocol;
  }
  return undefined;
}

function gathered(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const timer = setTimeout(resolve, 2000);
    pc.onicegatheringstatechange = () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    };
  });
}

// The server will not send this stream over WebRTC (its video needs re-encoding and
// webrtc.transcode is never): LL-HLS plays it as it is, and the status line keeps saying why.
function startHlsInstead(reason) {
  stopWebrtc();
  player.why = `WebRTC is not offered for this stream (${reason})`;
  return startHls(`Connecting over LL-HLS: ${player.why}`);
}

async function startHls(message) {
  const generation = player.generation;
  const url = qualitySelect.value === "auto" ? `/${config.stream}/index.m3u8?variants`
    : `/${qualitySelect.value || config.stream}/index.m3u8`;
  const probe = await fetch(url, {method: "HEAD"}).catch(() => null);
  if (generation !== player.generation) return;
  if (!probe || probe.status === 404) return retryLater("The stream is offline; waiting for it to start…");
  if (probe.status === 415) return retryLater("This stream cannot be played in the browser.");
  say(message || "Connecting over LL-HLS…");
  if (window.Hls && Hls.isSupported()) {
    const hls = new Hls({
      lowLatencyMode: true,
      backBufferLength: 10,
      // The server counts this page once, not once as a page and once as an LL-HLS client.
      xhrSetup: (xhr) => xhr.setRequestHeader("X-Ghostream-Viewer", uid),
    });
    player.hls = hls;
    hls.on(Hls.Events.FRAG_BUFFERED, () => {
      if (generation === player.generation && player.mode !== "hls") playing("hls");
    });
    hls.on(Hls.Events.ERROR, (_, data) => {
      if (data.fatal && generation === player.generation) {
        retryLater("The stream stopped; waiting for it to come back…");
      }
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = url;
    video.addEventListener("playing", () => playing("hls"), {once: true});
  } else {
    say("This browser can play neither WebRTC nor HLS.");
  }
  video.play().catch(() => {});
}

async function refreshQualities() {
  const response = await fetch("/api/streams").catch(() => null);
  if (!response || !response.ok) return;
  const {streams} = await response.json();
  const live = streams.map((s) => s.id).filter((id) => id.startsWith(config.stream + "@"));
  const variants = [...new Set([...config.variants, ...live])].sort(
    (a, b) => parseInt(b.split("@")[1]) - parseInt(a.split("@")[1]));
  const wanted = ["", ...variants, ...(variants.length ? ["auto"] : [])];
  const have = [...qualitySelect.options].map((o) => o.value);
  if (wanted.join() === have.join()) return;
  const current = qualitySelect.value;
  qualitySelect.replaceChildren(...wanted.map((value) => {
    const label = value === "" ? "Source" : value === "auto" ? "Auto (follows the network, LL-HLS)"
      : value.split("@")[1];
    return new Option(label, value, false, value === current);
  }));
}

function showCount(count) {
  document.getElementById("viewers").textContent = `${count} ${count === 1 ? "viewer" : "viewers"}`;
}

async function refreshCounter() {
  const response = await fetch(`/_stats/${config.stream}/?uid=${uid}`).catch(() => null);
  if (response && response.ok) showCount((await response.json()).ConnectedViewers);
}

// The server pushes the count when it changes; where pushes cannot get through, poll.
function followCounter() {
  const poll = () => { refreshCounter(); setInterval(refreshCounter, config.counterPeriod); };
  if (!window.EventSource) return poll();
  const source = new EventSource(`/_stats/${config.stream}/events?uid=${uid}`);
  source.onmessage = (message) => showCount(JSON.parse(message.data).ConnectedViewers);
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) poll(); };
}

function toggleMute() {
  video.muted = !video.muted;
  unmute.textContent = video.muted ? "Unmute" : "Mute";
  unmute.setAttribute("aria-pressed", String(!video.muted));
}

unmute.addEventListener("click", toggleMute);
modeSelect.addEventListener("change", restart);
qualitySelect.addEventListener("change", restart);
retryButton.addEventListener("click", restart);
document.addEventListener("keydown", (event) => {
  if (["INPUT", "SELECT", "TEXTAREA"].includes(event.target.tagName)) return;
  if (event.key === "f") {
    if (document.fullscreenElement) document.exitFullscreen();
    else video.requestFullscreen().catch(() => {});
  } else if (event.key === "m" || (event.key === " " && event.target === document.body)) {
    event.preventDefault();
    toggleMute();
  }
});
if (new URLSearchParams(location.search).has("nowidget")) document.body.classList.add("no-widget");
window.addEventListener("pagehide", stop);

followCounter();
refreshQualities();
setInterval(refreshQualities, 10000);
start();
