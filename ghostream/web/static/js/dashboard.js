// The streamer's dashboard: live streams, forward targets and refusals, and a
// chart of concurrent viewers by protocol for the current or any past show.
// Everything comes from the admin JSON API, polled while the page is open.
"use strict";

const REFRESH_MS = 5000;
// With pushes, a poll only for what no event marks (byte counts, a show's current minute).
const SLOW_REFRESH_MS = 30000;
const COLORS = {srt: "#7c5cff", webrtc: "#4fc3f7", llhls: "#ffb74d", telnet: "#81c784"};
const state = {shows: [], showId: null, chart: null, series: null};
// Read by tests and handy in the console: what the chart shows now.
window.dashboard = state;

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

function table(headers, rows) {
  if (!rows.length) return el("p", {class: "empty"}, "None.");
  return el("div", {class: "table-wrap"}, el("table", {},
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {scope: "col"}, h)))),
    el("tbody", {}, ...rows.map((row) => el("tr", {}, ...row.map((cell) => el("td", {}, cell)))))));
}

function counts(byProtocol) {
  const parts = Object.entries(byProtocol).map(([protocol, n]) => `${protocol} ${n}`);
  return parts.length ? parts.join(", ") : "none";
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleString([], {dateStyle: "short", timeStyle: "short"});
}

function duration(seconds) {
  const s = Math.round(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  if (h) return `${h}h${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}

async function getJson(url) {
  const response = await fetch(url, {credentials: "same-origin", cache: "no-store"});
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

function renderLive(live) {
  const rows = live.streams.map((s) => [
    s.id, s.state, String(s.viewers), counts(s.source),
    Object.entries(s.variants).map(([name, c]) => `@${name}: ${counts(c)}`).join("; ") || "—",
  ]);
  document.getElementById("live").replaceChildren(
    table(["Stream", "State", "Viewers", "By protocol", "Variants"], rows));
  const forwards = live.forwards.map((f) => [
    f.stream, f.target, el("span", {class: `state-${f.state}`}, f.state), clock(f.at), f.reason || "",
  ]);
  document.getElementById("forwards").replaceChildren(
    table(["Stream", "Target", "State", "Since", "Reason"], forwards));
  const refusals = live.refusals.map((r) => [clock(r.at), r.stream, r.protocol, r.peer, r.reason]);
  document.getElementById("refusals").replaceChildren(
    table(["When", "Stream", "Protocol", "Peer", "Why"], refusals));
}

async function loadShows() {
  const select = document.getElementById("show-select");
  if (!select) return;
  const {shows} = await getJson("/api/admin/shows?limit=200");
  state.shows = shows;
  if (state.showId === null || !shows.some((s) => s.id === state.showId)) {
    const live = shows.find((s) => s.live);
    state.showId = (live || shows[0] || {id: null}).id;
  }
  select.replaceChildren(...shows.map((s) => {
    const label = `${s.stream} · ${clock(s.started)}${s.live ? " · live" : ` · ${duration(s.duration)}`}`;
    const option = el("option", {value: String(s.id)}, label);
    option.selected = s.id === state.showId;
    return option;
  }));
  if (!shows.length) select.replaceChildren(el("option", {}, "No show yet"));
}

function renderStats(show) {
  const stats = [
    ["Peak viewers", `${show.peak_viewers}`],
    ["Peak at", show.peak_at ? clock(show.peak_at) : "—"],
    ["Unique viewers", `${show.unique_viewers}`],
    ["Views", `${show.views}`],
    ["Average watch", duration(show.average_watch_seconds)],
    ["Duration", duration(show.duration) + (show.live ? " (live)" : "")],
  ];
  if (show.recording) {
    const replay = el("a", {href: `/${show.stream}/shows/${show.id}`}, "Replay");
    stats.push(["Recording", replay]);
  }
  document.getElementById("show-stats").replaceChildren(
    ...stats.map(([name, value]) => el("div", {}, el("dt", {}, name), el("dd", {}, value))));
}

function renderChart(series) {
  const box = document.getElementById("chart");
  const protocols = Object.keys(series.viewers).sort();
  const data = [series.times, ...protocols.map((p) => series.viewers[p])];
  const width = Math.max(240, box.clientWidth);
  const height = Math.min(320, Math.max(200, Math.round(width * 0.45)));
  state.series = series;
  if (state.chart) state.chart.destroy();
  const options = {
    width, height,
    scales: {y: {range: (u, min, max) => [0, Math.max(2, max + 1)]}},
    axes: [
      {stroke: "#a9a3c4", grid: {stroke: "#2d2940"}},
      {stroke: "#a9a3c4", grid: {stroke: "#2d2940"}, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]},
    ],
    series: [{}, ...protocols.map((p) => ({
      label: p, stroke: COLORS[p] || "#e0e0e0", width: 2, fill: (COLORS[p] || "#e0e0e0") + "33",
      paths: uPlot.paths.stepped({align: 1}), points: {show: false},
    }))],
  };
  state.chart = new uPlot(options, data, box);
  const now = protocols.map((p) => `${p} ${series.viewers[p][series.viewers[p].length - 1]}`);
  document.getElementById("chart-now").textContent =
    protocols.length ? `At the end of the chart: ${now.join(", ")}` : "No viewer in this show yet.";
}

async function loadShow() {
  if (state.showId === null) return;
  const {show, series} = await getJson(`/api/admin/shows/${state.showId}`);
  renderStats(show);
  renderChart(series);
}

async function refresh() {
  try {
    renderLive(await getJson("/api/admin/live"));
    await loadShows();
    await loadShow();
  } catch (error) {
    console.error("dashboard refresh failed:", error);
  }
}

document.getElementById("show-select")?.addEventListener("change", (event) => {
  state.showId = Number(event.target.value);
  loadShow();
});
window.addEventListener("resize", () => { if (state.series) renderChart(state.series); });
// The server pushes each logged event: refresh on the next one, a burst at once.
let pending = null;
function soon() {
  if (pending === null) pending = setTimeout(() => { pending = null; refresh(); }, 250);
}
refresh();
if (window.EventSource) {
  const events = new EventSource("/api/admin/events");
  events.onmessage = soon;
  setInterval(refresh, SLOW_REFRESH_MS);
} else {
  setInterval(refresh, REFRESH_MS);
}
