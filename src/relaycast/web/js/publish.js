// @ts-check
// The streamer page: pick a source, a microphone and a quality, check the connection, go
// live over WHIP, watch the numbers, switch quality while live, stay live.
//
// URL parameters (for kiosks and automation):
//   ?key=SECRET&source=camera|screen|test&preset=360p|480p|720p|1080p&codec=vp8|h264|vp9|av1&autostart=1
//   &simulcast=0|1 (three layers for presets of 720p and up; on by default, the switch is remembered)
// The same parameters may come in the fragment instead (#key=SECRET&autostart=1: the one-click
// URL `relaycast serve` prints; a fragment never reaches a server's logs); the fragment wins
// and is then removed from the address bar. The key also comes from localStorage (per stream)
// once it has worked.
//
// Globals: window.peerConnections (Map) is what the console snippet of the design notes
// reads; window.detectConnectionSpeed() is the notes' function (fixed);
// window.checkConnectionSpeed() adds the real upload measurement.
// Test hooks: window.relaycast = {state, pc, error, preset, codec, attempts, stats, viewers,
//   speed, applied, simulcast, goLive(), stop(), setPreset(name), setSimulcast(on),
//   checkConnectionSpeed()}
//
// Simulcast: for presets of 720p and up the video goes out as three encodings, rids "f"
// (full size, the preset's bitrate), "h" (1/2 size, 0.22x) and "q" (1/4 size, 0.08x), so the
// server can give each viewer the layer its connection carries. A browser that refuses
// several encodings, or a server that answers with one, gets one encoding, and the page says
// so (relaycast.simulcast.note). Switching to a preset below 720p while live turns the two
// smaller layers off (active: false); the number of encodings is fixed for the session.

import { drawChart, formatBps, shortBps } from "./charts.js";
import { measureClockOffset, serverNow } from "./clock.js";
import { readPageConfig } from "./config.js";
import { byId, setText } from "./dom.js";
import { HttpError, errorMessage, sleep, streamNameFromPath } from "./http-util.js";
import { CODECS, DEFAULT_PRESET, PRESETS, SIMULCAST_LAYERS, presetByName, presetEncodings, presetLabel, simulcastFits } from "./presets.js";
import { SessionRunner } from "./session-runner.js";
import { checkConnectionSpeed, detectConnectionSpeed, measureUploadSpeed } from "./speedtest.js";
import { RtpStatsSampler, layerCondition } from "./stats.js";
import { createTestSource } from "./test-source.js";
import { WhipClient, videoSender } from "./whip-client.js";

/** @typedef {import("./presets.js").Preset} Preset */
/** @typedef {import("./stats.js").RtpSample} RtpSample */
/**
 * @typedef {object} SimulcastState
 * @property {boolean} enabled  the switch
 * @property {number} wanted  encodings asked for by the session (1 or 3; 0 before going live)
 * @property {number} layers  encodings the session sends (after the answer)
 * @property {string[]} rids
 * @property {string} note  why fewer layers than wanted ("" when none are missing)
 */
/** @typedef {"idle" | "connecting" | "live" | "error"} PublishState */
/**
 * A capture: camera, screen or test pattern.
 * @typedef {object} Media
 * @property {MediaStream} stream
 * @property {() => void} stop
 * @property {((w: number, h: number, fps?: number) => void)} [resize]  the test pattern's
 * @property {string} kind  camera | screen | test
 * @property {string} mic  the microphone choice it was opened with
 */

const KEY_STORAGE = "relaycast.publishKey";
const SIMULCAST_STORAGE = "relaycast.simulcast";
const RETRY_MAX_MS = 10000;
const VIEWERS_POLL_MS = 2000;
const CHART_SPAN_S = 60;

const streamName = streamNameFromPath();
const params = pageParams();
const keyStorage = `${KEY_STORAGE}.${streamName}`;
const config = readPageConfig();

/** @type {any} */
const win = window;
win.peerConnections = win.peerConnections instanceof Map ? win.peerConnections : new Map();
/** @type {Map<string, RTCPeerConnection>} the design notes' console snippet reads this */
const peerConnections = win.peerConnections;
win.detectConnectionSpeed = detectConnectionSpeed;
win.measureUploadSpeed = measureUploadSpeed;
win.checkConnectionSpeed = () => runSpeedCheck();

const rc = {
  /** @type {PublishState} */
  state: "idle",
  /** @type {RTCPeerConnection | null} */
  pc: null,
  /** @type {string | null} */
  error: null,
  stream: streamName,
  /** @type {Preset | null} */
  preset: null,
  /** @type {string | null} */
  codec: null,
  /** @type {string | null} */
  source: null,
  attempts: 0,
  /** @type {RtpSample | null} */
  stats: null,
  /** @type {number | null} */
  viewers: null,
  /** @type {Awaited<ReturnType<typeof checkConnectionSpeed>> | null} */
  speed: null,
  /** The STUN/TURN servers the next session will use. */
  /** @type {RTCIceServer[]} */
  iceServers: config.iceServers,
  /** @type {SimulcastState} */
  simulcast: { enabled: true, wanted: 0, layers: 0, rids: [], note: "" },
  /** What the last preset change set. */
  /** @type {{name: string, width?: number, height?: number, fps: number, maxBitrate: number, confirmed: boolean} | null} */
  applied: null,
  goLive: () => goLive(),
  stop: () => stop(),
  /** @param {string} name */
  setPreset: (name) => setPreset(name),
  /** @param {boolean} on */
  setSimulcast: (on) => setSimulcast(on),
  checkConnectionSpeed: () => runSpeedCheck(),
};
win.relaycast = rc;

const els = {
  key: byId("key", HTMLInputElement),
  keyHint: byId("key-hint"),
  source: byId("source", HTMLSelectElement),
  mic: byId("mic", HTMLSelectElement),
  preset: byId("preset", HTMLSelectElement),
  codec: byId("codec", HTMLSelectElement),
  simulcast: byId("simulcast", HTMLInputElement),
  simulcastHint: byId("simulcast-hint"),
  layers: byId("layers", HTMLTableElement),
  layersBody: byId("layers-body"),
  go: byId("go", HTMLButtonElement),
  stop: byId("stop", HTMLButtonElement),
  previewButton: byId("preview-button", HTMLButtonElement),
  status: byId("status"),
  preview: byId("preview", HTMLVideoElement),
  previewEmpty: byId("preview-empty"),
  liveBadge: byId("live-badge"),
  pill: byId("state-pill"),
  viewerCount: byId("viewer-count"),
  form: byId("controls", HTMLFormElement),
  speedValue: byId("speed-value"),
  speedReason: byId("speed-reason"),
  speedCheck: byId("speed-check", HTMLButtonElement),
  chart: byId("chart", HTMLCanvasElement),
};

/** @type {Media | null} */
let media = null;
let wantLive = false;
/** @type {ReturnType<typeof setInterval> | undefined} */
let statsTimer;
let presetTouched = Boolean(params.get("preset"));
/** @type {object | null} */
let switching = null;
/** @type {{sent: [number, number][], available: [number, number][]}} */
const chartHistory = { sent: [], available: [] };

const runner = new SessionRunner({
  iceServers: config.iceServers,
  createClient: (iceServers) => {
    if (!media || !rc.preset) throw new Error("no source to publish");
    const preset = rc.preset;
    const simulcast = rc.simulcast.enabled && simulcastFits(preset);
    const encodings = presetEncodings(preset, { simulcast, baseScale: baseScale(preset, captureSize(preset)) });
    rc.simulcast.wanted = encodings.length;
    rc.simulcast.layers = 0;
    rc.simulcast.rids = [];
    rc.simulcast.note = "";
    return new WhipClient(`/whip/${encodeURIComponent(streamName)}`, media.stream, {
      token: els.key.value.trim(),
      iceServers,
      videoCodec: rc.codec || "",
      maxBitrate: preset.bitrate,
      maxFramerate: preset.fps,
      encodings,
    });
  },
  open: (client) => client.publish(),
  maxDelayMs: RETRY_MAX_MS,
  onAttempt: ({ attempt }) => {
    peerConnections.clear();
    rc.pc = null;
    rc.attempts = attempt;
    setState("connecting", attempt ? "Reconnecting…" : "Connecting to the server…");
  },
  onSession: (pc, client) => onSession(pc, client),
  onConnectionState: (pc, state) => onConnectionState(pc, state),
  onRetry: ({ reason, error, delayMs, attempt }) => {
    rc.attempts = attempt + 1;
    if (error) rc.error = errorMessage(error);
    const why =
      error instanceof HttpError && error.status === 409 ? `“${streamName}” is already live from somewhere else` : reason;
    setState("connecting", `${why || "Connection lost"} — retrying in ${Math.max(1, Math.round(delayMs / 1000))} s…`);
  },
  onFailed: (err) => {
    wantLive = false;
    rc.error = errorMessage(err);
    if (err instanceof HttpError && (err.status === 401 || err.status === 403)) {
      localStorage.removeItem(keyStorage);
      els.keyHint.textContent = "";
      els.key.setAttribute("aria-invalid", "true");
      els.key.focus();
    }
    setState("error", refusal(err));
  },
});

/**
 * The page's parameters: the query, then the fragment over it (`#key=…&autostart=1`). The
 * fragment is removed from the address bar at once (it may hold the publish key).
 * @returns {URLSearchParams}
 */
function pageParams() {
  const merged = new URLSearchParams(location.search);
  if (location.hash.length > 1) {
    for (const [name, value] of new URLSearchParams(location.hash.slice(1))) merged.set(name, value);
    window.history.replaceState(window.history.state, "", location.pathname + location.search);
  }
  return merged;
}

// -- state and form ------------------------------------------------------------------------

/**
 * @param {PublishState} state
 * @param {string} [message]
 */
function setState(state, message) {
  rc.state = state;
  els.status.dataset.state = state;
  els.pill.dataset.state = state;
  els.pill.textContent = { idle: "offline", connecting: "connecting", live: "live", error: "error" }[state];
  els.liveBadge.hidden = state !== "live";
  if (message !== undefined) els.status.textContent = message;
  const busy = state === "connecting" || state === "live";
  for (const el of [els.key, els.source, els.mic, els.codec, els.simulcast, els.go, els.previewButton]) el.disabled = busy;
  els.preset.disabled = state === "connecting";
  els.stop.disabled = !busy && !wantLive;
  showSimulcastHint();
}

function setupForm() {
  setText("stream-name", streamName);
  byId("watch-link", HTMLAnchorElement).href = `/watch/${encodeURIComponent(streamName)}`;
  document.title = `Go live: ${streamName} · relaycast`;

  const remembered = localStorage.getItem(keyStorage) ?? localStorage.getItem(KEY_STORAGE);
  els.key.value = params.get("key") ?? remembered ?? "";
  if (!params.get("key") && remembered) els.keyHint.textContent = "remembered from last time";

  for (const name of Object.keys(PRESETS)) els.preset.add(new Option(presetLabel(name), name));
  const wanted = params.get("preset") ?? "";
  els.preset.value = PRESETS[wanted] ? wanted : DEFAULT_PRESET;
  els.preset.addEventListener("change", () => {
    presetTouched = true;
    showSimulcastHint();
    if (rc.state === "live") setPreset(els.preset.value);
  });

  const wantSimulcast = params.get("simulcast") ?? localStorage.getItem(SIMULCAST_STORAGE) ?? "1";
  rc.simulcast.enabled = wantSimulcast !== "0";
  els.simulcast.checked = rc.simulcast.enabled;
  els.simulcast.addEventListener("change", () => setSimulcast(els.simulcast.checked));
  showSimulcastHint();

  const supported = new Set(
    (RTCRtpSender.getCapabilities?.("video")?.codecs ?? []).map((c) => c.mimeType.toLowerCase()),
  );
  for (const codec of CODECS) {
    if (supported.size && !supported.has(`video/${codec}`)) continue;
    els.codec.add(new Option(codec.toUpperCase(), codec));
  }
  const codec = (params.get("codec") || "").toLowerCase();
  if (codec && [...els.codec.options].some((o) => o.value === codec)) els.codec.value = codec;

  const source = params.get("source") ?? "";
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
    runner.stop();
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

/**
 * @param {string} kind  camera | screen | test
 * @param {Preset} preset
 * @returns {Promise<Media>}
 */
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

/**
 * @param {string} kind
 * @param {any} err
 * @returns {string}
 */
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
/**
 * @param {Preset} preset
 * @returns {Promise<{width: number, height: number} | null>}
 */
async function applyCapture(preset) {
  const track = videoTrack();
  if (!track || !media) return null;
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
/**
 * @param {Preset} preset
 * @returns {{width: number, height: number}}
 */
function captureSize(preset) {
  const track = videoTrack();
  /** @type {MediaTrackSettings} */
  const s = track && media && !media.resize ? track.getSettings() : {};
  return { width: s.width || preset.width, height: s.height || preset.height };
}

/**
 * How much the capture is shrunk to the preset's size (1 when it is not larger).
 * @param {Preset} preset
 * @param {{width: number, height: number} | null} size
 * @returns {number}
 */
function baseScale(preset, size) {
  return size && size.height > preset.height ? size.height / preset.height : 1;
}

/**
 * The sender's encoding parameters for `preset` on a capture of `size`: the top encoding as
 * the preset says; with simulcast the smaller layers follow (on at 720p and up, else off).
 * Returns the size the top encoding sends.
 * @param {RTCPeerConnection | null} pc
 * @param {Preset} preset
 * @param {{width: number, height: number} | null} size
 * @returns {Promise<{width: number, height: number} | null>}
 */
async function applyEncoding(pc, preset, size) {
  const sender = pc ? videoSender(pc) : undefined;
  if (!sender) return null;
  const scale = baseScale(preset, size);
  const p = sender.getParameters();
  if (!p.encodings || !p.encodings.length) p.encodings = [{}];
  const simulcast = p.encodings.length > 1;
  const layers = presetEncodings(preset, { simulcast, baseScale: scale });
  const on = simulcastFits(preset);
  p.encodings.forEach((enc, i) => {
    const want = (simulcast && layers.find((l) => l.rid === enc.rid)) || layers[Math.min(i, layers.length - 1)];
    enc.maxFramerate = want.maxFramerate;
    enc.scaleResolutionDownBy = want.scaleResolutionDownBy;
    // below 720p only the top layer stays, with the preset's whole bitrate
    enc.maxBitrate = simulcast && !on && i === 0 ? preset.bitrate : want.maxBitrate;
    if (simulcast) enc.active = i === 0 || on;
  });
  p.degradationPreference = "maintain-resolution";
  await sender.setParameters(p);
  return {
    width: Math.round((size?.width ?? preset.width) / scale),
    height: Math.round((size?.height ?? preset.height) / scale),
  };
}

/**
 * Turn simulcast on or off for the next session (remembered in this browser).
 * @param {boolean} on
 */
function setSimulcast(on) {
  rc.simulcast.enabled = Boolean(on);
  els.simulcast.checked = rc.simulcast.enabled;
  localStorage.setItem(SIMULCAST_STORAGE, rc.simulcast.enabled ? "1" : "0");
  showSimulcastHint();
  return rc.simulcast.enabled;
}

/** What the switch means for the chosen preset, or what the session does. */
function showSimulcastHint() {
  const sc = rc.simulcast;
  const preset = presetByName(els.preset.value);
  let text;
  if (sc.layers && (rc.state === "live" || rc.state === "connecting")) {
    text = sc.layers > 1 ? `sending ${sc.layers} layers (${sc.rids.join(", ")})` : "sending one encoding";
    if (sc.note) text += ` — ${sc.note}`;
  } else if (!sc.enabled) {
    text = "off: one encoding; every viewer gets the same quality";
  } else if (!simulcastFits(preset)) {
    text = "one encoding below 720p";
  } else {
    const sizes = SIMULCAST_LAYERS.map(
      (l) => `${Math.round(preset.width / l.scaleResolutionDownBy)}×${Math.round(preset.height / l.scaleResolutionDownBy)}`,
    );
    const total = SIMULCAST_LAYERS.reduce((a, l) => a + preset.bitrate * l.share, 0);
    text = `3 layers (${sizes.join(", ")}), ${formatBps(total)} in all: each viewer gets the one that fits`;
  }
  els.simulcastHint.textContent = text;
}

/**
 * Switch quality while live, without reconnecting: capture size / frame rate and the
 * sender's maxBitrate / maxFramerate / scaleResolutionDownBy. Resolves once getStats shows
 * the new resolution being sent (or after 10 s, with applied.confirmed = false).
 */
/**
 * @param {string} name
 */
async function setPreset(name) {
  if (!PRESETS[name]) throw new Error(`unknown preset ${name}; use one of ${Object.keys(PRESETS).join(", ")}`);
  els.preset.value = name;
  const preset = presetByName(name);
  rc.preset = preset;
  if (!media) return (rc.applied = { ...preset, maxBitrate: preset.bitrate, confirmed: false });
  const token = {};
  switching = token;
  const size = await applyCapture(preset);
  const expect = (rc.pc ? await applyEncoding(rc.pc, preset, size) : size) ?? { width: preset.width, height: preset.height };
  const applied = { name, width: expect.width, height: expect.height, fps: preset.fps, maxBitrate: preset.bitrate, confirmed: false };
  rc.applied = applied;
  if (!rc.pc) return applied;
  els.status.textContent = `Switching to ${name}…`;
  const deadline = performance.now() + 10000;
  while (performance.now() < deadline && switching === token && rc.pc) {
    await sleep(250);
    const v = rc.stats?.video;
    if (v && v.height && v.width && Math.abs(v.height - expect.height) <= 2 && Math.abs(v.width - expect.width) <= 2) {
      applied.confirmed = true;
      break;
    }
  }
  if (switching === token && rc.state === "live") {
    els.status.textContent = applied.confirmed
      ? `Live on “${streamName}” · switched to ${name}: sending ${expect.width}x${expect.height} at up to ${preset.fps} fps and ${formatBps(preset.bitrate)}`
      : `Live on “${streamName}” · asked for ${name}; the browser has not reached ${expect.width}x${expect.height} yet`;
  }
  return applied;
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

/** @param {Preset} preset */
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
    rc.error = `cannot open ${rc.source}: ${errorMessage(err)}`;
    setState("error", describeMediaError(rc.source, err));
    return;
  }
  if (!wantLive) return; // stopped while the source opened
  await runner.start();
}

/**
 * What a final refusal means for the streamer, in words.
 * @param {unknown} err
 * @returns {string}
 */
function refusal(err) {
  const key = els.key.value.trim();
  const status = err instanceof HttpError ? err.status : -1;
  if (status === 401 || (status === 403 && !key)) {
    return `This stream needs its publish key: type it in the key field, then press Go live.`;
  }
  if (status === 403) return `The key is not right for “${streamName}”. Check it and press Go live again.`;
  if (err instanceof HttpError && err.detail) return `${err.title || "Refused"}: ${err.detail}`;
  return errorMessage(err);
}

/**
 * A session was answered (201): remember the key, expose the connection, start the numbers.
 * @param {RTCPeerConnection} pc
 * @param {WhipClient} client
 */
async function onSession(pc, client) {
  const key = client.token;
  const encodings = videoSender(pc)?.getParameters().encodings ?? [];
  rc.simulcast.layers = Math.max(1, encodings.length);
  rc.simulcast.rids = encodings.map((e) => e.rid).filter((r) => typeof r === "string");
  rc.simulcast.note = client.simulcastNote;
  showSimulcastHint();
  if (key) {
    localStorage.setItem(keyStorage, key);
    els.key.removeAttribute("aria-invalid");
  }
  withLegacyStatFields(pc);
  rc.pc = pc;
  rc.iceServers = runner.iceServers;
  peerConnections.set(streamName, pc);
  const preset = rc.preset ?? presetByName(els.preset.value);
  const expect = await applyEncoding(pc, preset, captureSize(preset)).catch(() => null);
  rc.applied = { name: preset.name, ...(expect ?? {}), fps: preset.fps, maxBitrate: preset.bitrate, confirmed: false };
  if (pc === rc.pc) startStats(pc);
}

/**
 * The design notes' console snippet reads `stat.mediaType`, which browsers renamed `kind`
 * (webrtc-stats); give the RTP stats of this connection both names so it works as written.
 * @param {RTCPeerConnection} pc
 */
function withLegacyStatFields(pc) {
  const original = pc.getStats.bind(pc);
  /** @type {any} */ (pc).getStats = async (/** @type {MediaStreamTrack | null | undefined} */ selector) => {
    const report = await original(selector);
    report.forEach((/** @type {any} */ s) => {
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

/**
 * @param {RTCPeerConnection} pc
 * @param {RTCPeerConnectionState} state
 */
function onConnectionState(pc, state) {
  if (pc !== rc.pc) return;
  switch (state) {
    case "connected":
      rc.attempts = 0;
      rc.error = null;
      setState("live", `Live on “${streamName}” · ${rc.preset?.name ?? ""}`);
      break;
    case "disconnected":
      els.status.textContent = "Connection unstable…";
      break;
    case "failed":
    case "closed":
      break; // the runner retries
    default:
      setState("connecting", "Connecting media…");
  }
}

// -- stats -----------------------------------------------------------------------------------

const fmt = {
  /** @param {number | null | undefined} n */
  num: (n) => (n == null ? "—" : n.toLocaleString("en-US")),
  /** @param {number | null | undefined} b */
  mb: (b) => (b == null ? "—" : `${(b / 1024 / 1024).toFixed(2)} MB`),
  /** @param {number | null | undefined} s */
  ms: (s) => (s == null ? "—" : `${Math.round(s * 1000)} ms`),
};

/** @param {RtpSample} s */
function showStats(s) {
  const v = s.video;
  const set = setText;
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
  set("st-limit", limitText(s));
  set("st-audio", s.audio ? `${fmt.num(s.audio.packets)} pkts · ${(s.audio.bytes / 1024).toFixed(0)} KB` : "—");
  showLayers(s);
}

/**
 * "Limited by": the encoder's reason, and with simulcast which layers it dropped or limited.
 * @param {RtpSample} s
 * @returns {string}
 */
function limitText(s) {
  if (!s.layers.length) return s.video?.qualityLimitationReason ?? "—";
  const parts = [];
  for (const l of s.layers) {
    const c = layerCondition(l);
    const why = l.qualityLimitationReason && l.qualityLimitationReason !== "none" ? ` (${l.qualityLimitationReason})` : "";
    if (c.state === "dropped") parts.push(`${l.rid} dropped${why}`);
    if (c.state === "limited") parts.push(`${l.rid} limited${why}`);
  }
  return parts.length ? parts.join(", ") : "none";
}

/**
 * The simulcast layers: one row each (resolution, frame rate, bitrate, what the encoder does).
 * @param {RtpSample} s
 */
function showLayers(s) {
  const sc = rc.simulcast;
  if (sc.wanted > 1 && sc.layers > 1 && s.videoStreams === 1 && !sc.note) {
    // offered and answered, yet the browser encodes one stream (e.g. SVC for this codec)
    sc.note = `the browser sends one stream for ${s.video?.codec?.replace("video/", "") || "this codec"}`;
    showSimulcastHint();
  }
  const layers = s.layers;
  let summary;
  if (!sc.layers) summary = "—";
  else if (layers.length > 1) {
    const sending = layers.filter((l) => l.active && l.fps).length;
    summary = `${sending} of ${layers.length} sending`;
  } else summary = sc.note ? `one (${sc.note})` : "one encoding";
  setText("st-simulcast", summary);
  els.layers.hidden = layers.length < 2;
  if (layers.length < 2) return;
  const rows = layers.map((l) => {
    const tr = document.createElement("tr");
    const c = layerCondition(l);
    tr.dataset.rid = l.rid;
    tr.dataset.state = c.state;
    const cells = [
      l.rid,
      l.width && l.height ? `${l.width} × ${l.height}` : "—",
      l.fps != null ? `${Math.round(l.fps)} fps` : c.state === "dropped" ? "0 fps" : "—",
      l.kbps != null ? formatBps(l.kbps * 1000) : "—",
      c.text,
    ];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  els.layersBody.replaceChildren(...rows);
}

function drawStatsChart() {
  drawChart(els.chart, {
    span: CHART_SPAN_S,
    series: [
      { label: "sent", color: "#e63946", points: chartHistory.sent, fill: true },
      { label: "available", color: "#58a6ff", points: chartHistory.available },
    ],
    left: (v) => shortBps(v),
  });
}

/** @param {RTCPeerConnection} pc */
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
    if (s.video?.kbps != null) chartHistory.sent.push([t, s.video.kbps * 1000]);
    if (s.pair?.availableOutgoingBitrate) chartHistory.available.push([t, s.pair.availableOutgoingBitrate]);
    for (const list of Object.values(chartHistory)) while (list.length && list[0][0] < t - CHART_SPAN_S - 5) list.shift();
    drawStatsChart();
  }, 1000);
}

async function pollViewers() {
  try {
    const resp = await fetch("/api/streams", { cache: "no-store" });
    const list = resp.ok ? await resp.json() : [];
    const info = list.find((/** @type {{name: string, viewers: number}} */ s) => s.name === streamName);
    rc.viewers = info ? info.viewers : 0;
  } catch {
    return; // server away: keep the last number
  }
  els.viewerCount.textContent = String(rc.viewers);
  setText("st-viewers", String(rc.viewers));
}

async function stop(message = "Stopped. Go live again when ready.") {
  wantLive = false;
  switching = null;
  clearInterval(statsTimer);
  rc.pc = null;
  peerConnections.clear();
  await runner.stop();
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
