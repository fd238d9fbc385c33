// @ts-check
// The home page: a live dashboard over server-sent events (GET /api/events).
//
// Per stream: live state, viewers, codecs, resolution, bitrate in and out, uptime, links,
// and a chart of bitrate and viewers over the last minutes. Server totals: ingress/egress,
// CPU and memory of the relaycast process, with a chart of the traffic.
// Test hooks: window.relaycast = {streams, server, connected}

import { drawChart, formatBps, formatDuration, shortBps } from "./charts.js";
import { byId } from "./dom.js";

/** @typedef {[number, number, number, number]} Sample  [time s, ingress bit/s, egress bit/s, viewers] */
/**
 * One stream as GET /api/streams and the `streams` event give it.
 * @typedef {{name: string, live: boolean, viewers?: number, viewers_connecting?: number,
 *   video_codec?: string | null, audio_codec?: string | null, resolution?: string | null,
 *   ingress_bps: number, egress_bps: number, uptime_s?: number | null}} StreamInfo
 */
/**
 * Server totals (GET /api/server, the `server` event).
 * @typedef {{time: number, live_streams: number, viewers: number, ingress_bps: number,
 *   egress_bps: number, cpu_percent: number, system_cpu_percent: number, cpu_count: number,
 *   memory_rss_bytes: number, system_memory_percent: number, uptime_s: number}} ServerInfo
 */
/** @typedef {{el: HTMLElement, canvas: HTMLCanvasElement, fields: Record<string, HTMLElement>, state: HTMLElement}} Card */

const SPAN_S = 300; // the longest window shown; shorter while there is less history

/**
 * Chart window: the history there is, between one and five minutes.
 * @param {number[][]} points
 * @param {number} now
 */
function spanFor(points, now) {
  const oldest = points.length ? points[0][0] : now;
  return Math.min(SPAN_S, Math.max(60, Math.ceil((now - oldest) / 60) * 60));
}
const rc = {
  /** @type {StreamInfo[]} */
  streams: [],
  /** @type {ServerInfo | null} */
  server: null,
  connected: false,
  /** @type {Record<string, Sample[]>} */
  history: {},
};
/** @type {any} */ (window).relaycast = rc;

const $ = byId;
const container = $("streams");
const statusEl = $("status");
const feed = $("feed");
/** @type {{ingress: [number, number][], egress: [number, number][]}} */
const totalsHistory = { ingress: [], egress: [] };
/** @type {Map<string, Card>} name -> card */
const cards = new Map();

/**
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {string | null} [className]
 * @param {string | null} [text]
 * @returns {HTMLElementTagNameMap[K]}
 */
function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text != null) e.textContent = text;
  return e;
}

/**
 * @param {string} name
 * @returns {Card}
 */
function card(name) {
  let c = cards.get(name);
  if (c) return c;
  const enc = encodeURIComponent(name);
  const root = el("article", "card stream-card");
  root.dataset.stream = name;
  const head = el("div", "card-head");
  const title = el("h2");
  const link = el("a", null, name);
  link.href = `/watch/${enc}`;
  title.append(link);
  const state = el("span", "pill");
  const actions = el("span", "actions");
  const watch = el("a", "button primary", "Watch");
  watch.href = `/watch/${enc}`;
  const publish = el("a", "button", "Streamer page");
  publish.href = `/publish/${enc}`;
  actions.append(watch, publish);
  head.append(title, state, el("span", "spacer"), actions);
  const facts = el("dl", "facts");
  /** @type {Record<string, HTMLElement>} */
  const fields = {};
  for (const [key, label] of [
    ["viewers", "Viewers"],
    ["codec", "Codec"],
    ["resolution", "Resolution"],
    ["ingress", "Bitrate in"],
    ["egress", "Bitrate out"],
    ["uptime", "Uptime"],
  ]) {
    const div = el("div");
    div.append(el("dt", null, label));
    fields[key] = el("dd", `f-${key}`, "—");
    div.append(fields[key]);
    facts.append(div);
  }
  const canvas = el("canvas", "chart");
  root.append(head, facts, canvas);
  c = { el: root, canvas, fields, state };
  cards.set(name, c);
  return c;
}

/** @param {StreamInfo[]} streams */
function renderStreams(streams) {
  rc.streams = streams;
  const names = new Set(streams.map((s) => String(s.name)));
  for (const [name, c] of cards) {
    if (!names.has(name)) {
      c.el.remove();
      cards.delete(name);
    }
  }
  if (!streams.length) {
    container.replaceChildren(el("p", "empty", "No streams yet. Pick a name above and go live."));
    return;
  }
  container.querySelector(".empty")?.remove();
  const sorted = [...streams].sort((a, b) => Number(b.live) - Number(a.live) || String(a.name).localeCompare(String(b.name)));
  for (const s of sorted) {
    const c = card(String(s.name));
    c.state.dataset.state = s.live ? "live" : "waiting";
    c.state.textContent = s.live ? "live" : "offline";
    const f = c.fields;
    f.viewers.textContent = String(s.viewers ?? 0) + (s.viewers_connecting ? ` (+${s.viewers_connecting} joining)` : "");
    f.codec.textContent = [s.video_codec, s.audio_codec].filter(Boolean).join(" + ") || "—";
    f.resolution.textContent = s.resolution ? s.resolution.replace("x", " × ") : "—";
    f.ingress.textContent = s.live ? formatBps(s.ingress_bps) : "—";
    f.egress.textContent = formatBps(s.egress_bps);
    f.uptime.textContent = s.uptime_s != null ? formatDuration(s.uptime_s) : "—";
    container.append(c.el); // keeps order; moves existing nodes
  }
  drawStreamCharts();
}

function drawStreamCharts() {
  const now = Date.now() / 1000;
  for (const [name, c] of cards) {
    const h = rc.history[name] ?? [];
    drawChart(c.canvas, {
      span: spanFor(h, now),
      now,
      series: [
        { label: "in", color: "#e63946", points: h.map((x) => [x[0], x[1]]), fill: true },
        { label: "out", color: "#58a6ff", points: h.map((x) => [x[0], x[2]]) },
        { label: "viewers", color: "#2ea043", points: h.map((x) => [x[0], x[3]]), axis: "right", step: true },
      ],
      left: shortBps,
      right: (v) => String(Math.round(v)),
    });
  }
}

/** @param {ServerInfo} t */
function renderServer(t) {
  rc.server = t;
  $("t-streams").textContent = `${t.live_streams}`;
  $("t-viewers").textContent = `${t.viewers}`;
  $("t-ingress").textContent = formatBps(t.ingress_bps);
  $("t-egress").textContent = formatBps(t.egress_bps);
  $("t-cpu").textContent = `${t.cpu_percent.toFixed(0)} %`;
  $("t-cpu-sub").textContent = `machine ${t.system_cpu_percent.toFixed(0)} % · ${t.cpu_count} cores`;
  $("t-mem").textContent = `${(t.memory_rss_bytes / 1024 / 1024).toFixed(0)} MB`;
  $("t-mem-sub").textContent = `machine ${t.system_memory_percent.toFixed(0)} % used`;
  $("t-uptime").textContent = `server up ${formatDuration(t.uptime_s)}`;
  const now = t.time;
  totalsHistory.ingress.push([now, t.ingress_bps]);
  totalsHistory.egress.push([now, t.egress_bps]);
  for (const list of Object.values(totalsHistory)) while (list.length && list[0][0] < now - SPAN_S - 5) list.shift();
  drawChart($("totals-chart", HTMLCanvasElement), {
    span: spanFor(totalsHistory.ingress, now),
    now,
    series: [
      { label: "ingress", color: "#e63946", points: totalsHistory.ingress, fill: true },
      { label: "egress", color: "#58a6ff", points: totalsHistory.egress, fill: true },
    ],
    left: shortBps,
  });
}

function connectFeed() {
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => {
    rc.connected = true;
    feed.dataset.state = "live";
    feed.textContent = "live updates";
    statusEl.textContent = "";
  });
  source.addEventListener("error", () => {
    rc.connected = false;
    feed.dataset.state = "reconnecting";
    feed.textContent = "reconnecting";
    statusEl.textContent = "Lost the live feed from the server; reconnecting…";
  });
  source.addEventListener("history", (ev) => {
    rc.history = JSON.parse(ev.data);
  });
  source.addEventListener("samples", (ev) => {
    const newest = JSON.parse(ev.data);
    for (const [name, sample] of Object.entries(newest)) {
      const list = (rc.history[name] ??= []);
      if (!list.length || list[list.length - 1][0] < sample[0]) list.push(sample);
      while (list.length && list[0][0] < sample[0] - SPAN_S - 5) list.shift();
    }
    for (const name of Object.keys(rc.history)) if (!(name in newest)) delete rc.history[name];
    drawStreamCharts();
  });
  source.addEventListener("streams", (ev) => renderStreams(JSON.parse(ev.data)));
  source.addEventListener("server", (ev) => renderServer(JSON.parse(ev.data)));
}

$("start").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("new-stream", HTMLInputElement).value.trim();
  if (name) location.href = `/publish/${encodeURIComponent(name)}`;
});
window.addEventListener("resize", drawStreamCharts);
connectFeed();
