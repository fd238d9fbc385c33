// @ts-check
// The home page: a live dashboard over server-sent events (GET /api/events).
//
// Per stream: live state, viewers, codecs, resolution, bitrate in and out, uptime, links,
// and a chart of bitrate and viewers over the last minutes; for a simulcast stream, how many
// viewers get each layer (`layer_viewers` of /api/streams, the layers' sizes from
// /api/streams/{stream}). Server totals: ingress/egress,
// CPU and memory of the relaycast process, with a chart of the traffic.
// Test hooks: window.relaycast = {streams, server, connected}

import { drawChart, formatBps, formatDuration, shortBps } from "./charts.js";
import "./cluster.js"; // the cluster card (GET /api/cluster), shown only with --cluster
import { byId } from "./dom.js";

/** @typedef {[number, number, number, number]} Sample  [time s, ingress bit/s, egress bit/s, viewers] */
/**
 * One stream as GET /api/streams and the `streams` event give it.
 * @typedef {{name: string, live: boolean, viewers?: number, viewers_connecting?: number,
 *   video_codec?: string | null, audio_codec?: string | null, resolution?: string | null,
 *   ingress_bps: number, egress_bps: number, uptime_s?: number | null,
 *   layer_viewers?: Record<string, number> | null}} StreamInfo
 */
/** @typedef {{rid: string, height: number | null}} LayerSize */
/**
 * Server totals (GET /api/server, the `server` event).
 * @typedef {{time: number, live_streams: number, viewers: number, ingress_bps: number,
 *   egress_bps: number, cpu_percent: number, system_cpu_percent: number, cpu_count: number,
 *   memory_rss_bytes: number, system_memory_percent: number, uptime_s: number}} ServerInfo
 */
/**
 * @typedef {{el: HTMLElement, canvas: HTMLCanvasElement, fields: Record<string, HTMLElement>, state: HTMLElement,
 *   layers: HTMLElement, bar: HTMLElement, legend: HTMLElement}} Card
 */

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
  /** Viewers per layer per stream, as shown: name -> [{rid, label, viewers}] */
  /** @type {Record<string, {rid: string, label: string, viewers: number}[]>} */
  layerViewers: {},
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
  const layers = el("div", "layer-dist");
  layers.hidden = true;
  layers.setAttribute("aria-label", "Viewers per layer");
  const layersHead = el("div", "small muted", "Viewers per layer");
  const bar = el("div", "layer-bar");
  const legend = el("div", "layer-legend");
  layers.append(layersHead, bar, legend);
  const canvas = el("canvas", "chart");
  root.append(head, facts, layers, canvas);
  c = { el: root, canvas, fields, state, layers, bar, legend };
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
    renderLayerViewers(c, String(s.name), s.layer_viewers);
    container.append(c.el); // keeps order; moves existing nodes
  }
  drawStreamCharts();
}

// -- viewers per layer -----------------------------------------------------------------------

const LAYER_COLORS = ["#58a6ff", "#2ea043", "#d29922", "#a371f7", "#db61a2"];
const LAYER_SIZES_TTL_MS = 15_000;
/** @type {Map<string, {at: number, sizes: LayerSize[], pending: boolean}>} name -> the stream's layers */
const layerSizes = new Map();

/**
 * The stream's layers with their heights (GET /api/streams/{name}), fetched now and then.
 * @param {string} name
 * @returns {LayerSize[]}
 */
function sizesOf(name) {
  let entry = layerSizes.get(name);
  if (!entry) {
    entry = { at: -Infinity, sizes: [], pending: false };
    layerSizes.set(name, entry);
  }
  const e = entry;
  if (!e.pending && performance.now() - e.at > LAYER_SIZES_TTL_MS) {
    e.pending = true;
    fetch(`/api/streams/${encodeURIComponent(name)}`, { cache: "no-store" })
      .then((r) => (r.ok ? r.json() : null))
      .then((info) => {
        const list = info && Array.isArray(info.layers) ? info.layers : [];
        e.sizes = list
          .filter((/** @type {any} */ l) => l && typeof l.rid === "string")
          .map((/** @type {any} */ l) => ({ rid: l.rid, height: typeof l.height === "number" ? l.height : null }));
        e.at = performance.now();
        const c = cards.get(name);
        const s = rc.streams.find((x) => String(x.name) === name);
        if (c && s) renderLayerViewers(c, name, s.layer_viewers);
      })
      .catch(() => {
        e.at = performance.now();
      })
      .finally(() => {
        e.pending = false;
      });
  }
  return e.sizes;
}

/**
 * Whether a layer key means "no layer" (video paused for those viewers).
 * @param {string} rid
 */
function isPaused(rid) {
  return rid === "" || rid === "none" || rid === "null" || rid === "paused";
}

/**
 * The stacked bar and legend of one stream's viewers per layer (hidden without simulcast).
 * @param {Card} c
 * @param {string} name
 * @param {Record<string, number> | null | undefined} counts
 */
function renderLayerViewers(c, name, counts) {
  const entries = counts && typeof counts === "object" ? Object.entries(counts).filter(([, n]) => typeof n === "number") : [];
  if (!entries.length) {
    c.layers.hidden = true;
    delete rc.layerViewers[name];
    return;
  }
  const sizes = sizesOf(name);
  const height = (/** @type {string} */ rid) => sizes.find((l) => l.rid === rid)?.height ?? null;
  const fixed = ["f", "h", "q"];
  const rank = (/** @type {string} */ rid) =>
    isPaused(rid) ? 1e9 : height(rid) != null ? -(height(rid) ?? 0) : 1e6 + (fixed.includes(rid) ? fixed.indexOf(rid) : 10);
  entries.sort(([a], [b]) => rank(a) - rank(b) || a.localeCompare(b));
  const total = entries.reduce((acc, [, n]) => acc + n, 0);
  const rows = entries.map(([rid, viewers]) => {
    const h = height(rid);
    const label = isPaused(rid) ? "video paused" : h ? `${h}p (${rid})` : rid;
    return { rid, label, viewers };
  });
  rc.layerViewers[name] = rows;
  /** @type {HTMLElement[]} */
  const segments = [];
  /** @type {HTMLElement[]} */
  const legend = [];
  rows.forEach((row, i) => {
    const color = isPaused(row.rid) ? "#6e7681" : LAYER_COLORS[i % LAYER_COLORS.length];
    if (row.viewers > 0 && total > 0) {
      const seg = el("span");
      seg.style.width = `${(100 * row.viewers) / total}%`;
      seg.style.background = color;
      seg.title = `${row.label}: ${row.viewers}`;
      segments.push(seg);
    }
    const item = el("span", "layer-item");
    item.dataset.rid = row.rid;
    const dot = el("i");
    dot.style.background = color;
    item.append(dot, `${row.label}: ${row.viewers}`);
    legend.push(item);
  });
  c.bar.replaceChildren(...segments);
  c.legend.replaceChildren(...legend);
  c.layers.hidden = false;
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
