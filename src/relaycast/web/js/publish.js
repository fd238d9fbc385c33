// The streamer page: pick a source and a quality, go live over WHIP, stay live.
//
// URL parameters (for kiosks and automation):
//   ?key=SECRET&source=camera|screen|test&preset=360p|480p|720p|1080p&codec=vp8|h264|vp9|av1&autostart=1
//
// Test hooks: window.relaycast = {state, pc, error, ...}; window.peerConnections (Map) is
// what the console bitrate snippet of the design notes reads.

import { sleep, streamNameFromPath } from "./http-util.js";
import { CODECS, DEFAULT_PRESET, PRESETS, detectConnectionSpeed, presetByName, suggestPreset } from "./presets.js";
import { RtpStatsSampler, formatVideoStats } from "./stats.js";
import { createTestSource } from "./test-source.js";
import { WhipClient } from "./whip-client.js";

const KEY_STORAGE = "relaycast.publishKey";
const DISCONNECT_GRACE_MS = 3000;
const RETRY_MAX_MS = 10000;

const streamName = streamNameFromPath();
const params = new URLSearchParams(location.search);

window.peerConnections = window.peerConnections instanceof Map ? window.peerConnections : new Map();
const rc = {
  state: "idle", // idle | connecting | live | error
  pc: null,
  error: null,
  stream: streamName,
  preset: null,
  codec: null,
  source: null,
  attempts: 0,
  stats: null,
  goLive: () => goLive(),
  stop: () => stop(),
};
window.relaycast = rc;

const $ = (id) => document.getElementById(id);
const els = {
  key: $("key"),
  source: $("source"),
  preset: $("preset"),
  presetHint: $("preset-hint"),
  codec: $("codec"),
  go: $("go"),
  stop: $("stop"),
  status: $("status"),
  stats: $("stats"),
  preview: $("preview"),
  form: $("controls"),
};

let media = null; // {stream, stop}
let client = null;
let wantLive = false;
let retryTimer = null;
let disconnectTimer = null;
let statsTimer = null;

function setState(state, message) {
  rc.state = state;
  els.status.dataset.state = state;
  if (message !== undefined) els.status.textContent = message;
  const busy = state === "connecting" || state === "live";
  for (const el of [els.key, els.source, els.preset, els.codec, els.go]) el.disabled = busy;
  els.stop.disabled = !busy && !wantLive;
}

function setupForm() {
  $("stream-name").textContent = streamName;
  $("watch-link").href = `/watch/${encodeURIComponent(streamName)}`;
  document.title = `Go live: ${streamName} · relaycast`;

  els.key.value = params.get("key") ?? localStorage.getItem(KEY_STORAGE) ?? "";

  for (const [name, p] of Object.entries(PRESETS)) {
    const opt = new Option(`${name} · ${p.width}x${p.height}@${p.fps} · ${p.bitrate / 1e6} Mbit/s`, name);
    els.preset.add(opt);
  }
  const suggested = suggestPreset(detectConnectionSpeed());
  els.presetHint.textContent = `(suggested for your connection: ${suggested})`;
  els.preset.value = PRESETS[params.get("preset")] ? params.get("preset") : DEFAULT_PRESET;

  const supported = new Set(
    (RTCRtpSender.getCapabilities?.("video")?.codecs ?? []).map((c) => c.mimeType.toLowerCase()),
  );
  for (const codec of CODECS) {
    if (supported.size && !supported.has(`video/${codec}`)) continue;
    els.codec.add(new Option(codec.toUpperCase(), codec));
  }
  const codec = (params.get("codec") || "").toLowerCase();
  if (codec && [...els.codec.options].some((o) => o.value === codec)) els.codec.value = codec;

  const source = params.get("source");
  if (["camera", "screen", "test"].includes(source)) els.source.value = source;

  els.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    goLive();
  });
  els.stop.addEventListener("click", () => stop());
  window.addEventListener("pagehide", () => {
    if (client) client.stop();
  });
}

async function openSource(kind, preset) {
  if (kind === "test") {
    return createTestSource({ width: preset.width, height: preset.height, fps: preset.fps });
  }
  const video = {
    width: { ideal: preset.width },
    height: { ideal: preset.height },
    frameRate: { ideal: preset.fps },
  };
  const stream =
    kind === "screen"
      ? await navigator.mediaDevices.getDisplayMedia({ video, audio: true })
      : await navigator.mediaDevices.getUserMedia({ video, audio: true });
  return {
    stream,
    stop() {
      for (const t of stream.getTracks()) t.stop();
    },
  };
}

function isRetryable(err) {
  const s = err?.status ?? 0;
  return s === 0 || s === 408 || s === 409 || s === 429 || s >= 500;
}

async function goLive() {
  if (wantLive) return;
  wantLive = true;
  rc.error = null;
  rc.attempts = 0;
  const key = els.key.value.trim();
  if (key) localStorage.setItem(KEY_STORAGE, key);
  rc.preset = presetByName(els.preset.value);
  rc.codec = els.codec.value || null;
  rc.source = els.source.value;
  setState("connecting", "Opening the source…");
  try {
    media = await openSource(rc.source, rc.preset);
  } catch (err) {
    wantLive = false;
    rc.error = `cannot open ${rc.source}: ${err.message || err}`;
    setState("error", `Cannot open the ${rc.source}: ${err.message || err}`);
    return;
  }
  els.preview.srcObject = media.stream;
  await connect();
}

async function connect() {
  clearTimeout(retryTimer);
  clearTimeout(disconnectTimer);
  if (!wantLive) return;
  if (client) await client.stop();
  window.peerConnections.clear();
  rc.pc = null;
  setState("connecting", rc.attempts ? "Reconnecting…" : "Connecting to the server…");
  client = new WhipClient(`/whip/${encodeURIComponent(streamName)}`, { token: els.key.value.trim() });
  const thisClient = client;
  let pc;
  try {
    pc = await client.publish(media.stream, {
      videoCodec: rc.codec || "",
      maxBitrate: rc.preset.bitrate,
      maxFramerate: rc.preset.fps,
    });
  } catch (err) {
    if (thisClient !== client || !wantLive) return;
    rc.error = err.message || String(err);
    if (isRetryable(err)) {
      scheduleRetry(err.detail || err.message);
    } else {
      wantLive = false;
      setState("error", err.detail ? `${err.title || "Refused"}: ${err.detail}` : rc.error);
    }
    return;
  }
  if (thisClient !== client || !wantLive) return;
  rc.pc = pc;
  window.peerConnections.set(streamName, pc);
  pc.addEventListener("connectionstatechange", () => onConnectionState(pc));
  onConnectionState(pc);
  startStats(pc);
}

function scheduleRetry(reason) {
  const delay = Math.min(RETRY_MAX_MS, 500 * 2 ** rc.attempts);
  rc.attempts += 1;
  setState("connecting", `${reason || "Connection lost"} — retrying in ${Math.round(delay / 1000)} s…`);
  retryTimer = setTimeout(() => connect(), delay);
}

function onConnectionState(pc) {
  if (pc !== rc.pc || !wantLive) return;
  switch (pc.connectionState) {
    case "connected":
      clearTimeout(disconnectTimer);
      rc.attempts = 0;
      rc.error = null;
      setState("live", `Live on “${streamName}”.`);
      break;
    case "disconnected":
      clearTimeout(disconnectTimer);
      disconnectTimer = setTimeout(() => {
        if (pc === rc.pc && pc.connectionState === "disconnected") scheduleRetry("Connection lost");
      }, DISCONNECT_GRACE_MS);
      break;
    case "failed":
      scheduleRetry("Connection failed");
      break;
    case "closed":
      break;
    default:
      setState("connecting", "Connecting media…");
  }
}

function startStats(pc) {
  clearInterval(statsTimer);
  const sampler = new RtpStatsSampler(pc, "outbound-rtp");
  statsTimer = setInterval(async () => {
    if (pc !== rc.pc) return clearInterval(statsTimer);
    try {
      const s = await sampler.sample();
      rc.stats = s;
      els.stats.textContent = formatVideoStats(s.video);
    } catch {
      // connection closed between ticks
    }
  }, 1000);
}

async function stop() {
  wantLive = false;
  clearTimeout(retryTimer);
  clearTimeout(disconnectTimer);
  clearInterval(statsTimer);
  const c = client;
  client = null;
  rc.pc = null;
  window.peerConnections.clear();
  if (c) await c.stop();
  if (media) media.stop();
  media = null;
  els.preview.srcObject = null;
  els.stats.textContent = "";
  setState("idle", "Stopped. Go live again when ready.");
}

setupForm();
setState("idle");
if (params.get("autostart") === "1") {
  // Let the page paint first; then start without any click.
  sleep(0).then(() => goLive());
}
