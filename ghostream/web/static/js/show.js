// A recorded show: the video, and under it its audience on the same time axis.
// The chart's x axis is wall-clock time; the video's time 0 is the recording's start,
// so a click at time T seeks to T - started.
"use strict";

const base = document.querySelector(".replay").dataset.base;
const video = document.getElementById("video");
const status = document.getElementById("status");
const COLORS = {srt: "#f5a623", webrtc: "#4fc3f7", llhls: "#81c784", telnet: "#ce93d8"};
let started = 0;

function play() {
  if (!video) return;
  const source = `${base}/index.m3u8`;
  if (window.Hls && Hls.isSupported()) {
    const hls = new Hls();
    hls.loadSource(source);
    hls.attachMedia(video);
  } else {
    video.src = source;
  }
}

function seekTo(at) {
  if (!video) return;
  video.currentTime = Math.max(0, at - started);
  video.play().catch(() => {});
}

function chart(series) {
  const box = document.getElementById("chart");
  const protocols = Object.keys(series.viewers).sort();
  const data = [series.times, ...protocols.map((p) => series.viewers[p])];
  const width = Math.max(240, box.clientWidth);
  const plot = new uPlot({
    width, height: 220,
    scales: {y: {range: (u, min, max) => [0, Math.max(2, max + 1)]}},
    series: [{}, ...protocols.map((p) => ({
      label: p, stroke: COLORS[p] || "#e0e0e0", width: 2,
      paths: uPlot.paths.stepped({align: 1}), points: {show: false},
    }))],
    cursor: {drag: {x: false, y: false}},
  }, data, box);
  plot.over.addEventListener("click", () => {
    const left = plot.cursor.left;
    if (left !== undefined && left >= 0) seekTo(plot.posToVal(left, "x"));
  });
  window.showChart = plot;
}

async function load() {
  const response = await fetch(`${base}.json`);
  if (!response.ok) {
    status.textContent = "This show cannot be loaded.";
    return;
  }
  const facts = await response.json();
  started = facts.recording ? facts.recording.started : facts.show.started;
  if (facts.recording && facts.recording.recording) status.textContent = "Still being recorded.";
  chart(facts.series);
  play();
}

window.seekToTime = seekTo;
load();
