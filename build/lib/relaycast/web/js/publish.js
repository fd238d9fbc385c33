// The streamer page: pick a source, a microphone and a quality, check the connection, go
// live over WHIP, watch the numbers, switch quality while live, stay live.
//
// URL parameters (for kiosks and automation):
//   ?key=SECRET&source=camera|screen|test&preset=360p|480p|720p|1080p&codec=vp8|h264|vp9|av1&autostart=1
//
// Globals: window.peerConnections (Map) is what the console snippet of the design notes
// reads; window.detectConnectionSpeed() is the notes' function (fixed);
// window.checkConnectionSpeed() adds the real upload measurement.
// Test hooks: window.relaycast = {state, pc, error, preset, codec, attempts, stats, viewers,
//   speed, applied, goLive(), stop(), setPreset(name), checkConnectionSpeed()}

import { drawChart, formatBps, shortBps } from "./charts.js";
import { measureClockOffset, serverNow } from "./clock.js";
import { sleep, streamNameFromPath } from "./http-util.js";
import { CODECS, DEFAULT_PRESET, PRESETS, presetByName, presetLabel } from "./presets.js";
import { checkConnectionSpeed, detectConnectionSpeed, measureUploadSpeed } from "./speedtest.js";
import { RtpStatsSampler } from "./stats.js";
import { createTestSource } from "./test-source.js";
import { WhipClient } from "./whip-client.js";

const KEY_STORAGE = "relaycast.publishKey";
const DISCONNECT_GRACE_MS = 3000;
const RETRY_MAX_MS = 10000;
const VIEWERS_POLL_MS = 2000;
const CHART_SPAN_S = 60;

const streamName = streamNameFromPath();
const params = new URLSearchParams(location.search);
const keyStorage = `${KEY_STORAGE}.${streamName}`;

window.peerConnections = window.peerConnections instanceof Map ? window.peerConnections : new Map();
window.detectConnectionSpeed = detectConnectionSpeed;
window.measureUploadSpeed = measureUploadSpeed;
window.checkConnectionSpeed = () => runSpeedCheck();

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
  viewers: null,
  speed: null,
  /** What the last preset change set: {name, width, height, fps, maxBitrate, confirmed}. */
  applied: null,
  goLive: () => goLive(),
  stop: () => stop(),
  setPreset: (name) => setPreset(name),
  checkConnectionSpeed: () => runSpeedCheck(),
};
window.relaycast = rc;

const $ = (id) => document.getElementById(id);
const els = {
  key: $("key"),
  keyHint: $("key-hint"),
  source: $("source"),
  mic: $("mic"),
  preset: $("preset"),
  codec: $("codec"),
  go: $("go"),
  stop: $("stop"),
  previewButton: $("preview-button"),
  status: $("status"),
  preview: $("preview"),
  previewEmpty: $("preview-empty"),
  liveBadge: $("live-badge"),
  pill: $("state-pill"),
  viewerCount: $("viewer-count"),
  form: $("controls"),
  speedValue: $("speed-value"),
  speedReason: $("speed-reason"),
  speedCheck: $("speed-check"),
  chart: $("chart"),
};

let media = null; // {stream, stop, resize?, kind, mic}
let client = null;
let wantLive = false;
let retryTimer = null;
let disconnectTimer = null;
let statsTimer = null;
let presetTouched = Boolean(params.get("preset"));
let switching = null;
const history = { sent: [], available: [] };

// -- state and form ------------------------------------------------------------------------

function setState(state, message) {
  rc.state = state;
  els.status.dataset.state = state;
  els.pill.dataset.state = state;
  els.pill.textContent = { idle: "offline", connecting: "connecting", live: "live", error: "error" }[state];
  els.liveBadge.hidden = state !== "live";
  if (message !== undefined) els.status.textContent = message;
  const busy = state === "connecting" || state === "live";
  for (const el of [els.key, els.source, els.mic, els.codec, els.go, els.previewButton]) el.disabled = busy;
  els.preset.disabled = state === "connecting";
  els.stop.disabled = !busy && !wantLive;
}

function setupForm() {
  $("stream-name").textContent = streamName;
  $("watch-link").href = `/watch/${encodeURIComponent(streamName)}`;
  document.title = `Go live: ${streamName} · relaycast`;

  const remembered = localStorage.getItem(keyStorage) ?? localStorage.getItem(KEY_STORAGE);
  els.key.value = params.get("key") ?? remembered ?? "";
  if (!params.get("key") && remembered) els.keyHint.textContent = "remembered from last time";

  for (const name of Object.keys(PRESETS)) els.preset.add(new Option(presetLabel(name), name));
  els.preset.value = PRESETS[params.get("preset")] ? params.get("preset") : DEFAULT_PRESET;
  els.preset.addEventListener("change", () => {
    presetTouched = true;
    if (rc.state === "live") setPreset(els.preset.value);
  });

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
  els.source.addEventListener("change", updateMicChoice);
  updateMicChoice();

  els.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    goLive();
  });
  els.stop.addEventListener("click", () => stop());
  els.previewButton.addEventListener("click", () => preview());
  els.speedCheck.addEventListener("click", () => runSpeedCheck());
  window.addEventListener("pagehide", () => {
    if (client) client.stop();
  });
}

function updateMicChoice() {
  const test = els.source.value === "test";
  els.mic.disabled = test;
  els.mic.title = test ? "the test pattern brings its own tone" : "";
}

async function listMicrophones() {
  try {
    const devices = await navigator.mediaDevices.enumerateDevices();
    const mics = devices.filter((d) => d.kind === "audioinput" && d.deviceId && d.label);
    const chosen = els.mic.value;
    for (const opt of [...els.mic.options]) if (!["default", "none"].includes(opt.value)) opt.remove();
    for (const m of mics) {
      if (m.deviceId === "default") continue;
      els.mic.add(new Option(m.label, m.deviceId), els.mic.options.length - 1);
    }
    if ([...els.mic.options].some((o) => o.value === chosen)) els.mic.value = chosen;
  } catch {
    // no device list: default / none still work
  }
}

// -- sources and presets ---------------------------------------------------------------------

function audioConstraint() {
  const mic = els.mic.value;
  if (mic === "none") return false;
  const base = { echoCancellation: true, noiseSuppression: true };
  return mic === "default" ? base : { ...base, deviceId: { exact: mic } };
}

async function openSource(kind, preset) {
  if (kind === "test") {
    const src = createTestSource({ width: preset.width, height: preset.height, fps: preset.fps, clock: serverNow });
    return { ...src, kind, mic: "tone" };
  }
  const video = {
    width: { ideal: preset.width },
    height: { ideal: preset.height },
    frameRate: { ideal: preset.fps },
  };
  const audio = audioConstraint();
  let stream;
  if (kind === "screen") {
    stream = await navigator.mediaDevices.getDisplayMedia({ video, audio: false });
    if (audio) {
      try {
        const mic = await navigator.mediaDevices.getUserMedia({ audio });
        for (const t of mic.getAudioTracks()) stream.addTrack(t);
      } catch {
        // screen without microphone
      }
    }
  } else {
    stream = await navigator.mediaDevices.getUserMedia({ video, audio });
  }
  return {
    stream,
    kind,
    mic: els.mic.value,
    stop() {
      for (const t of stream.getTracks()) t.stop();
    },
  };
}

function describeMediaError(kind, err) {
  if (kind === "test") return `Cannot start the test pattern: ${err?.message || err}`;
  const what = kind === "screen" ? "screen" : "camera or microphone";
  switch (err?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return `Access to the ${what} was refused. Allow it in the browser (the icon in the address bar), then press Go live again.`;
    case "NotFoundError":
    case "OverconstrainedError":
      return `No ${what} found. Plug one in, pick another source, or use the test pattern.`;
    case "NotReadableError":
      return `The ${what} is busy in another program. Close it there, then try again.`;
    default:
      return `Cannot open the ${what}: ${err?.message || err}`;
  }
}

function videoTrack() {
  return media?.stream.getVideoTracks()[0] ?? null;
}

/** Capture constraints (or the test pattern's canvas) for `preset`; returns the capture size. */
async function applyCapture(preset) {
  const track = videoTrack();
  if (!track) return null;
  if (media.resize) {
    media.resize(preset.width, preset.height, preset.fps);
  } else if (media.kind === "camera") {
    try {
      await track.applyConstraints({
        width: { ideal: preset.width },
        height: { ideal: preset.height },
        frameRate: { ideal: preset.fps },
      });
    } catch {
      // keep the current capture; the encoder scales it
    }
  } else {
    try {
      await track.applyConstraints({ frameRate: { ideal: preset.fps } });
    } catch {
      // a screen capture keeps its size; scaleResolutionDownBy does the rest
    }
  }
  return captureSize(preset);
}

/** The size the source captures now (the preset's size for the test pattern). */
function captureSize(preset) {
  const track = videoTrack();
  const s = track && !media.resize ? track.getSettings() : {};
  return { width: s.width || preset.width, height: s.height || preset.height };
}

/** The sender's encoding parameters for `preset` on a capture of `size`. */
async function applyEncoding(pc, preset, size) {
  const sender = pc?.getSenders().find((s) => s.track?.kind === "video");
  if (!sender) return null;
  const scale = size && size.height > preset.height ? size.height / preset.height : 1;
  const p = sender.getParameters();
  if (!p.encodings || !p.encodings.length) p.encodings = [{}];
  p.encodings[0].maxBitrate = preset.bitrate;
  p.encodings[0].maxFramerate = preset.fps;
  p.encodings[0].scaleResolutionDownBy = scale;
  p.degradationPreference = "maintain-resolution";
  await sender.setParameters(p);
  return {
    width: Math.round((size?.width ?? preset.width) / scale),
    height: Math.round((size?.height ?? preset.height) / scale),
  };
}

/**
 * Switch quality while live, without reconnecting: capture size / frame rate and the
 * sender's maxBitrate / maxFramerate / scaleResolutionDownBy. Resolves once getStats shows
 * the new resolution being sent (or after 10 s, with applied.confirmed = false).
 */
async function setPreset(name) {
  if (!PRESETS[name]) throw new Error(`unknown preset ${name}; use one of ${Object.keys(PRESETS).join(", ")}`);
  els.preset.value = name;
  const preset = presetByName(name);
  rc.preset = preset;
  if (!media) return (rc.applied = { name, ...preset, confirmed: false });
  const token = {};
  switching = token;
  const size = await applyCapture(preset);
  const expect = rc.pc ? await applyEncoding(rc.pc, preset, size) : size;
  rc.applied = { name, width: expect?.width, height: expect?.height, fps: preset.fps, maxBitrate: preset.bitrate, confirmed: false };
  if (!rc.pc) return rc.applied;
  els.status.textContent = `Switching to ${name}…`;
  const deadline = performance.now() + 10000;
  while (performance.now() < deadline && switching === token && rc.pc) {
    await sleep(250);
    const v = rc.stats?.video;
    if (v && v.height && expect && Math.abs(v.height - expect.height) <= 2 && Math.abs(v.width - expect.width) <= 2) {
      rc.applied.confirmed = true;
      break;
    }
  }
  if (switching === token && rc.state === "live") {
    els.status.textContent = rc.applied.confirmed
      ? `Live on “${streamName}” · switched to ${name}: sending ${expect.width}x${expect.height} at up to ${preset.fps} fps and ${formatBps(preset.bitrate)}`
      : `Live on “${streamName}” · asked for ${name}; the browser has not reached ${expect.width}x${expect.height} yet`;
  }
  return rc.applied;
}

// -- connection speed ------------------------------------------------------------------------

async function runSpeedCheck() {
  els.speedCheck.disabled = true;
  els.speedValue.textContent = "measuring upload to this server…";
  els.speedReason.textContent = "";
  let result;
  try {
    result = await checkConnectionSpeed();
  } finally {
    els.speedCheck.disabled = false;
  }
  rc.speed = result;
  const up = result.upload
    ? `▲ ${result.upload.mbps >= 100 ? Math.round(result.upload.mbps) : result.upload.mbps.toFixed(1)} Mbit/s upload`
    : `upload test failed (${result.error})`;
  const api = result.networkInfoApi ? ` · browser estimate ${result.networkInfoMbps} Mbit/s down` : "";
  els.speedValue.textContent = up + api;
  els.speedReason.textContent = `Suggested: ${result.preset} — ${result.reason}.`;
  for (const opt of els.preset.options) {
    opt.textContent = presetLabel(opt.value) + (opt.value === result.preset ? "  ★ suggested" : "");
  }
  if (!presetTouched && rc.state === "idle") els.preset.value = result.preset;
  return result;
}

// -- going live ------------------------------------------------------------------------------

function isRetryable(err) {
  const s = err?.status ?? 0;
  return s === 0 || s === 408 || s === 409 || s === 429 || s >= 500;
}

async function ensureMedia(preset) {
  const kind = els.source.value;
  const mic = kind === "test" ? "tone" : els.mic.value;
  if (media && (media.kind !== kind || media.mic !== mic || media.stream.getTracks().some((t) => t.readyState === "ended"))) {
    media.stop();
    media = null;
  }
  if (!media) {
    media = await openSource(kind, preset);
    const track = videoTrack();
    if (track) track.addEventListener("ended", () => onSourceEnded());
    listMicrophones();
  } else {
    await applyCapture(preset);
  }
  els.preview.srcObject = media.stream;
  els.previewEmpty.hidden = true;
}

function onSourceEnded() {
  if (wantLive && media?.kind === "screen") {
    stop("Screen sharing ended. Go live again when ready.");
  }
}

async function preview() {
  const preset = presetByName(els.preset.value);
  try {
    await ensureMedia(preset);
    els.status.textContent = "Preview on. Go live when ready.";
  } catch (err) {
    setState("error", describeMediaError(els.source.value, err));
  }
}

async function goLive() {
  if (wantLive) return;
  wantLive = true;
  rc.error = null;
  rc.attempts = 0;
  rc.preset = presetByName(els.preset.value);
  rc.codec = els.codec.value || null;
  rc.source = els.source.value;
  setState("connecting", "Opening the source…");
  try {
    await ensureMedia(rc.preset);
  } catch (err) {
    wantLive = false;
    rc.error = `cannot open ${rc.source}: ${err.message || err}`;
    setState("error", describeMediaError(rc.source, err));
    return;
  }
  await connect();
}

function refusal(err) {
  const key = els.key.value.trim();
  switch (err.status) {
    case 401:
      return `This stream needs its publish key: type it in the key field, then press Go live.`;
    case 403:
      return key ? `The key is not right for “${streamName}”. Check it and press Go live again.` : refusal({ status: 401 });
    default:
      return err.detail ? `${err.title || "Refused"}: ${err.detail}` : err.message || String(err);
  }
}

async function connect() {
  clearTimeout(retryTimer);
  clearTimeout(disconnectTimer);
  if (!wantLive) return;
  if (client) await client.stop();
  window.peerConnections.clear();
  rc.pc = null;
  setState("connecting", rc.attempts ? "Reconnecting…" : "Connecting to the server…");
  const key = els.key.value.trim();
  client = new WhipClient(`/whip/${encodeURIComponent(streamName)}`, { token: key });
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
      const why = err.status === 409 ? `“${streamName}” is already live from somewhere else` : err.detail || err.message;
      scheduleRetry(why);
    } else {
      wantLive = false;
      if (err.status === 401 || err.status === 403) {
        localStorage.removeItem(keyStorage);
        els.keyHint.textContent = "";
        els.key.setAttribute("aria-invalid", "true");
        els.key.focus();
      }
      setState("error", refusal(err));
    }
    return;
  }
  if (thisClient !== client || !wantLive) return;
  if (key) {
    localStorage.setItem(keyStorage, key);
    els.key.removeAttribute("aria-invalid");
  }
  withLegacyStatFields(pc);
  rc.pc = pc;
  window.peerConnections.set(streamName, pc);
  pc.addEventListener("connectionstatechange", () => onConnectionState(pc));
  onConnectionState(pc);
  const expect = await applyEncoding(pc, rc.preset, captureSize(rc.preset)).catch(() => null);
  rc.applied = { name: rc.preset.name, ...(expect ?? {}), fps: rc.preset.fps, maxBitrate: rc.preset.bitrate, confirmed: false };
  startStats(pc);
}

/**
 * The design notes' console snippet reads `stat.mediaType`, which browsers renamed `kind`
 * (webrtc-stats); give the RTP stats of this connection both names so it works as written.
 */
function withLegacyStatFields(pc) {
  const original = pc.getStats.bind(pc);
  pc.getStats = async (...args) => {
    const report = await original(...args);
    report.forEach((s) => {
      if (s.kind && s.mediaType === undefined && s.type.endsWith("rtp")) {
        try {
          s.mediaType = s.kind;
        } catch {
          // frozen stats object: nothing to add
        }
      }
    });
    return report;
  };
}

function scheduleRetry(reason) {
  const delay = Math.min(RETRY_MAX_MS, 500 * 2 ** rc.attempts);
  rc.attempts += 1;
  setState("connecting", `${reason || "Connection lost"} — retrying in ${Math.max(1, Math.round(delay / 1000))} s…`);
  retryTimer = setTimeout(() => connect(), delay);
}

function onConnectionState(pc) {
  if (pc !== rc.pc || !wantLive) return;
  switch (pc.connectionState) {
    case "connected":
      clearTimeout(disconnectTimer);
      rc.attempts = 0;
      rc.error = null;
      setState("live", `Live on “${streamName}” · ${rc.preset.name}`);
      break;
    case "disconnected":
      clearTimeout(disconnectTimer);
      els.status.textContent = "Connection unstable…";
      disconnectTimer = setTimeout(() => {
        if (pc === rc.pc && pc.connectionState === "disconnected") scheduleRetry("Connection lost");
      }, DISCONNECT_GRACE_MS);
      break;
    case "failed":
      scheduleRetry("Connection lost");
      break;
    case "closed":
      break;
    default:
      setState("connecting", "Connecting media…");
  }
}

// -- stats -----------------------------------------------------------------------------------

const fmt = {
  num: (n) => (n == null ? "—" : n.toLocaleString("en-US")),
  mb: (b) => (b == null ? "—" : `${(b / 1024 / 1024).toFixed(2)} MB`),
  ms: (s) => (s == null ? "—" : `${Math.round(s * 1000)} ms`),
};

function showStats(s) {
  const v = s.video;
  const set = (id, text) => ($(id).textContent = text);
  set("st-resolution", v?.width ? `${v.width} × ${v.height}` : "—");
  set("st-fps", v?.fps != null ? `${Math.round(v.fps)} fps` : "—");
  set("st-bitrate", v?.kbps != null ? formatBps(v.kbps * 1000) : "—");
  set("st-frames", fmt.num(v?.frames));
  set("st-mb", fmt.mb(v?.bytes));
  const r = s.remote;
  set(
    "st-loss",
    r?.fractionLost != null ? `${(r.fractionLost * 100).toFixed(1)} %${r.packetsLost ? ` (${r.packetsLost} lost)` : ""}` : "—",
  );
  set("st-rtt", fmt.ms(r?.rtt ?? s.pair?.rtt));
  set("st-available", s.pair?.availableOutgoingBitrate ? formatBps(s.pair.availableOutgoingBitrate) : "—");
  set("st-codec", v?.codec ? v.codec.replace("video/", "") : "—");
  set("st-limit", v?.qualityLimitationReason ?? "—");
  set("st-audio", s.audio ? `${fmt.num(s.audio.packets)} pkts · ${(s.audio.bytes / 1024).toFixed(0)} KB` : "—");
}

function drawStatsChart() {
  drawChart(els.chart, {
    span: CHART_SPAN_S,
    series: [
      { label: "sent", color: "#e63946", points: history.sent, fill: true },
      { label: "available", color: "#58a6ff", points: history.available },
    ],
    left: (v) => shortBps(v),
  });
}

function startStats(pc) {
  clearInterval(statsTimer);
  const sampler = new RtpStatsSampler(pc, "outbound-rtp");
  statsTimer = setInterval(async () => {
    if (pc !== rc.pc) return clearInterval(statsTimer);
    let s;
    try {
      s = await sampler.sample();
    } catch {
      return; // connection closed between ticks
    }
    rc.stats = s;
    showStats(s);
    const t = Date.now() / 1000;
    if (s.video?.kbps != null) history.sent.push([t, s.video.kbps * 1000]);
    if (s.pair?.availableOutgoingBitrate) history.available.push([t, s.pair.availableOutgoingBitrate]);
    for (const list of Object.values(history)) while (list.length && list[0][0] < t - CHART_SPAN_S - 5) list.shift();
    drawStatsChart();
  }, 1000);
}

async function pollViewers() {
  try {
    const resp = await fetch("/api/streams", { cache: "no-store" });
    const list = resp.ok ? await resp.json() : [];
    const info = list.find((s) => s.name === streamName);
    rc.viewers = info ? info.viewers : 0;
  } catch {
    return; // server away: keep the last number
  }
  els.viewerCount.textContent = String(rc.viewers);
  $("st-viewers").textContent = String(rc.viewers);
}

async function stop(message = "Stopped. Go live again when ready.") {
  wantLive = false;
  switching = null;
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
  els.previewEmpty.hidden = false;
  setState("idle", message);
}

setupForm();
setState("idle");
drawStatsChart();
measureClockOffset();
listMicrophones();
pollViewers();
setInterval(pollViewers, VIEWERS_POLL_MS);
window.addEventListener("resize", drawStatsChart);
if (params.get("autostart") === "1") {
  // Let the page paint first; then start without any click.
  sleep(0).then(() => goLive());
} else {
  sleep(300).then(() => runSpeedCheck());
}
