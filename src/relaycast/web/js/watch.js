// @ts-check
// The viewer page: WHEP in, play at once (muted autoplay, visible unmute), wait for the
// streamer, reconnect by itself, adapt the playout buffer to the link, show the numbers.
//
// relaycast accepts viewers before the streamer is live (201) and starts sending when the
// stream goes live, so "waiting for the streamer" is a state of a connected viewer.
//
// Adaptive buffering policy (automatic mode, evaluated once a second from getStats()):
//   loss  = packets lost / expected over the last 3 s, the worse of video and audio
//   jitter = inbound RTP interarrival jitter (RFC 3550 §6.4.1) of the audio (video if no audio)
//   level       target   entered when (loss >= or jitter >=)
//   clean          0 ms   —
//   light        200 ms   1 %   or  20 ms
//   moderate     500 ms   4 %   or  50 ms
//   heavy       1000 ms  10 %   or 100 ms
// Up: as soon as two consecutive seconds call for a higher level (straight to it).
// Down: one level at a time, after 10 consecutive seconds with loss and jitter below half
// of the current level's entry thresholds (hysteresis: no flapping around a threshold).
// The target goes to every receiver's jitterBufferTarget (audio and video, kept in sync).
// applyAdaptiveBuffering(lossPercent, bufferMs) forces a target by hand and switches the
// automatic mode off until the "automatic" switch is turned back on.
//
// Quality (simulcast): when the server has the WHEP layer extension (js/layers.js), the page
// polls the session's layer resource every second while playing and shows a quality
// menu: Auto and each layer by its height, the layer being received and the server's reason.
// Choosing a layer pins it (POST {"mediaId": mid, "encodingId": rid}); Auto sends {}. A server
// without the extension (404): no menu.
//
// Test hooks: window.relaycast = {state, pc, stats, framesDecoded, buffer, glassToGlass,
//   layers, setBufferTarget(ms), setAutoBuffering(on), setLayer(rid | null)}
//   state: connecting | waiting | live | reconnecting | error

import { formatBps } from "./charts.js";
import { measureClockOffset, serverNow } from "./clock.js";
import { readPageConfig } from "./config.js";
import { byId, setText } from "./dom.js";
import { HttpError, errorMessage, streamNameFromPath } from "./http-util.js";
import { LayerControl, layerLabel } from "./layers.js";
import { SessionRunner, defaultRetryable } from "./session-runner.js";
import { RtpStatsSampler } from "./stats.js";
import { TimecodeReader } from "./timecode.js";
import { WhepClient } from "./whep-client.js";

/** @typedef {import("./stats.js").RtpSample} RtpSample */
/** @typedef {"connecting" | "waiting" | "live" | "reconnecting" | "error"} WatchState */
/** @typedef {import("./layers.js").LayerStatus} LayerStatus */
/**
 * @typedef {object} LayersState
 * @property {boolean} available  the server has the layer extension and the stream layers
 * @property {string | null} url  the session's layer resource
 * @property {boolean} announced  the WHEP 201's Link header named it
 * @property {LayerStatus | null} status  the last GET
 * @property {string} error
 * @property {number} polls
 */
/** @typedef {{name: string, ms: number, loss: number, jitter: number}} BufferLevel */
/**
 * @typedef {object} BufferState
 * @property {boolean} auto
 * @property {number} targetMs
 * @property {string} level
 * @property {string} reason
 * @property {number} lossPercent
 * @property {number} jitterMs
 */

const RETRY_MAX_MS = 10000;
const STALL_MS = 2500; // no new frame for this long: the streamer is away

/** @type {readonly BufferLevel[]} */
export const BUFFER_LEVELS = Object.freeze([
  Object.freeze({ name: "clean", ms: 0, loss: 0, jitter: 0 }),
  Object.freeze({ name: "light", ms: 200, loss: 1, jitter: 20 }),
  Object.freeze({ name: "moderate", ms: 500, loss: 4, jitter: 50 }),
  Object.freeze({ name: "heavy", ms: 1000, loss: 10, jitter: 100 }),
]);
const UP_AFTER_S = 2;
const DOWN_AFTER_S = 10;
const LOSS_WINDOW_S = 3;

const streamName = streamNameFromPath();
const params = new URLSearchParams(location.search);
const token = params.get("token") || "";
const config = readPageConfig();

const video = byId("video", HTMLVideoElement);
const statusEl = byId("status");
const unmute = byId("unmute");
const els = {
  wrap: byId("video-wrap"),
  curtain: byId("curtain"),
  curtainText: byId("curtain-text"),
  pill: byId("state-pill"),
  overlay: byId("overlay"),
  mute: byId("mute"),
  volume: byId("volume", HTMLInputElement),
  statsToggle: byId("stats-toggle"),
  pip: byId("pip"),
  fullscreen: byId("fullscreen"),
  auto: byId("auto-buffer", HTMLInputElement),
  target: byId("buffer-target"),
  reason: byId("buffer-reason"),
  liveDot: byId("live-dot"),
  quality: byId("quality", HTMLSelectElement),
  qualityCard: byId("quality-card"),
  qualityMode: byId("quality-mode"),
  qualityCurrent: byId("quality-current"),
  qualityReason: byId("quality-reason"),
  qualityButtons: byId("quality-buttons"),
  ovLayer: byId("ov-layer"),
};

const rc = {
  /** @type {WatchState} */
  state: "connecting",
  /** @type {RTCPeerConnection | null} */
  pc: null,
  /** @type {string | null} */
  error: null,
  stream: streamName,
  attempts: 0,
  /** @type {RtpSample | null} */
  stats: null,
  framesDecoded: 0,
  /** The STUN/TURN servers the next session will use. */
  /** @type {RTCIceServer[]} */
  iceServers: config.iceServers,
  /** @type {BufferState} */
  buffer: { auto: true, targetMs: 0, level: "clean", reason: "clean link: no extra buffer", lossPercent: 0, jitterMs: 0 },
  /** From the test pattern's timecode. */
  /** @type {{lastMs: number, medianMs: number, reads: number, misses: number, at: number} | null} */
  glassToGlass: null,
  /** @type {LayersState} */
  layers: { available: false, url: null, announced: false, status: null, error: "", polls: 0 },
  /**
   * Pin a layer by its rid; null returns to automatic.
   * @param {string | null} rid
   */
  setLayer: (rid) => setLayer(rid),
  /** @param {number} ms */
  setBufferTarget: (ms) => setBufferTarget(ms),
  /** @param {boolean} on */
  setAutoBuffering: (on) => setAutoBuffering(on),
};
/** @type {any} */ (window).relaycast = rc;

/** @type {ReturnType<typeof setInterval> | undefined} */
let statsTimer;
let lastFrameAt = 0;
/** @type {TimecodeReader | null} */
let reader = null;
/** @type {[number, number][]} [performance.now(), delay ms] */
const g2g = [];
/** @type {number[]} per-second loss percentages */
const lossWindow = [];
let upCount = 0;
let downCount = 0;
let clockSynced = false;
let headStartTaken = false;
/** @type {LayerControl | null} */
let layerControl = null;
let qualitySignature = "";

/** @type {Record<WatchState, string>} */
const MESSAGES = {
  connecting: "Connecting…",
  waiting: "Waiting for the streamer…",
  live: "Live",
  reconnecting: "Connection lost — reconnecting…",
  error: "Cannot watch this stream.",
};

// The session starts before anything else on the page: the WHEP POST leaves as soon as the
// offer is ready; the clock sync, the controls and the stats come after.
const runner = new SessionRunner({
  iceServers: config.iceServers,
  createClient: (iceServers) => {
    const client = new WhepClient(`/whep/${encodeURIComponent(streamName)}`, { token, iceServers });
    // the first session is the one watch.html began before this module arrived
    if (!headStartTaken) headStartTaken = client.adopt(/** @type {any} */ (window).relaycastHeadStart);
    return client;
  },
  isRetryable: (err) => defaultRetryable(err) || (err instanceof HttpError && err.status === 404),
  maxDelayMs: RETRY_MAX_MS,
  onAttempt: ({ attempt }) => {
    stopLayers();
    rc.pc = null;
    rc.attempts = attempt;
    if (attempt === 0) setState("connecting");
  },
  onSession: (pc, client) => {
    onSession(pc, client.stream);
    startLayers(pc, client);
  },
  onConnectionState: (pc, state) => onConnectionState(pc, state),
  onRetry: ({ reason, error, delayMs, attempt }) => {
    rc.attempts = attempt + 1;
    if (error) rc.error = errorMessage(error);
    setState("reconnecting", `${reason} — retrying in ${Math.max(1, Math.round(delayMs / 1000))} s…`);
  },
  onFailed: (err) => {
    rc.error = errorMessage(err);
    setState("error", refusal(err));
  },
});
runner.start();

/** The design notes' call: force a buffer as if `lossPercent` % of packets were lost. */
/** @type {any} */ (window).applyAdaptiveBuffering = (/** @type {unknown} */ lossPercent, /** @type {unknown} */ bufferMs) => {
  const loss = Number(lossPercent) || 0;
  const target = bufferMs == null ? levelFor(loss, 0).ms : Number(bufferMs);
  setAutoBuffering(false);
  const applied = setBufferTarget(target, `set by hand for ${loss} % loss`);
  return { targetMs: rc.buffer.targetMs, reason: rc.buffer.reason, receivers: applied };
};

/**
 * @param {WatchState} state
 * @param {string} [message]
 */
function setState(state, message) {
  rc.state = state;
  statusEl.dataset.state = state;
  statusEl.textContent = message ?? MESSAGES[state];
  els.pill.dataset.state = state;
  els.pill.textContent = state;
  els.curtain.hidden = state === "live";
  els.curtainText.textContent = message ?? MESSAGES[state];
  els.curtain.dataset.state = state;
  els.liveDot.hidden = state !== "live";
}

/**
 * What a final refusal means for the viewer, in words.
 * @param {unknown} err
 * @returns {string}
 */
function refusal(err) {
  if (!(err instanceof HttpError)) return errorMessage(err);
  switch (err.status) {
    case 401:
      return "This stream is private: open it with the link that carries your viewer token (…/watch/" +
        `${streamName}?token=…).`;
    case 403:
      return token
        ? "Your viewer token is not valid for this stream (expired, or made for another stream). Ask the streamer for a new link."
        : "You are not allowed to watch this stream. Ask the streamer for a link with a viewer token.";
    default:
      return err.detail ? `${err.title || "Refused"}: ${err.detail}` : err.message;
  }
}

/**
 * A session was answered: play its tracks.
 * @param {RTCPeerConnection} pc
 * @param {MediaStream} stream
 */
function onSession(pc, stream) {
  rc.pc = pc;
  rc.iceServers = runner.iceServers;
  rc.framesDecoded = 0;
  lastFrameAt = 0;
  whenLoadedOrFlowing(stream, () => {
    if (video.srcObject !== stream) video.srcObject = stream;
    video.play().catch(() => {}); // muted autoplay is allowed; ignore if not yet
  });
  applyTarget();
  pc.addEventListener("track", () => applyTarget());
  startStats(pc);
  if (!clockSynced) {
    // after the POST, not before it: the clock matters only for glass-to-glass
    clockSynced = true;
    measureClockOffset();
    setInterval(() => measureClockOffset(), 60_000);
  }
  if (!reader) {
    reader = new TimecodeReader(video, { now: serverNow, onDelay: onGlassToGlass });
  }
}

/**
 * Run `fn` once the page's load event has fired or media flows (a track of `stream` unmutes),
 * whichever comes first: a <video> waiting for a streamer who is not live yet would hold the
 * load event back (and the tab's spinner turning).
 * @param {MediaStream} stream
 * @param {() => void} fn
 */
function whenLoadedOrFlowing(stream, fn) {
  if (document.readyState === "complete" || stream.getTracks().some((t) => !t.muted)) {
    fn();
    return;
  }
  let done = false;
  const once = () => {
    if (!done) fn();
    done = true;
  };
  window.addEventListener("load", once, { once: true });
  for (const track of stream.getTracks()) track.addEventListener("unmute", once, { once: true });
}

/**
 * @param {RTCPeerConnection} pc
 * @param {RTCPeerConnectionState} state
 */
function onConnectionState(pc, state) {
  if (pc !== rc.pc) return;
  if (state === "connected") {
    rc.attempts = 0;
    rc.error = null;
    if (rc.state !== "live") setState("waiting");
  }
}

// -- adaptive buffering ----------------------------------------------------------------------

/**
 * @param {number} loss  percent
 * @param {number} jitter  ms
 * @returns {number}
 */
function levelIndexFor(loss, jitter) {
  let idx = 0;
  BUFFER_LEVELS.forEach((l, i) => {
    if (i > 0 && (loss >= l.loss || jitter >= l.jitter)) idx = i;
  });
  return idx;
}

/**
 * @param {number} loss
 * @param {number} jitter
 * @returns {BufferLevel}
 */
function levelFor(loss, jitter) {
  return BUFFER_LEVELS[levelIndexFor(loss, jitter)];
}

/** Set every receiver's jitterBufferTarget (ms); returns how many receivers took it. */
/**
 * @param {number} ms
 * @param {string} [reason]
 * @returns {number}
 */
function setBufferTarget(ms, reason) {
  const target = Math.max(0, Math.min(4000, Math.round(Number(ms) || 0)));
  rc.buffer.targetMs = target;
  if (reason) rc.buffer.reason = reason;
  else if (!rc.buffer.auto) rc.buffer.reason = "set by hand";
  const n = applyTarget();
  showBuffer();
  return n;
}

function applyTarget() {
  if (!rc.pc) return 0;
  let n = 0;
  for (const receiver of rc.pc.getReceivers()) {
    if ("jitterBufferTarget" in receiver) {
      receiver.jitterBufferTarget = rc.buffer.targetMs;
      n++;
    } else if ("playoutDelayHint" in receiver) {
      /** @type {any} */ (receiver).playoutDelayHint = rc.buffer.targetMs / 1000;
      n++;
    }
  }
  return n;
}

/** @param {boolean} on */
function setAutoBuffering(on) {
  rc.buffer.auto = Boolean(on);
  els.auto.checked = rc.buffer.auto;
  upCount = 0;
  downCount = 0;
  if (rc.buffer.auto) {
    // resume from the level at or below the current target
    let idx = 0;
    BUFFER_LEVELS.forEach((l, i) => {
      if (l.ms <= rc.buffer.targetMs) idx = i;
    });
    rc.buffer.level = BUFFER_LEVELS[idx].name;
    setBufferTarget(BUFFER_LEVELS[idx].ms, "automatic: measuring the link…");
    return;
  }
  rc.buffer.level = "manual";
  showBuffer();
}

function showBuffer() {
  const b = rc.buffer;
  els.target.textContent = b.targetMs >= 1000 ? `${(b.targetMs / 1000).toFixed(1)} s` : `${b.targetMs} ms`;
  els.reason.textContent = b.reason;
  byId("ov-buffer").textContent = `${b.targetMs} ms${b.auto ? " (auto)" : " (manual)"}`;
  for (const btn of document.querySelectorAll("button[data-buffer]")) {
    if (!(btn instanceof HTMLElement)) continue;
    btn.setAttribute("aria-pressed", String(!b.auto && Number(btn.dataset.buffer) === b.targetMs));
  }
}

/** One second of the automatic policy (see the top of this file). */
/** @param {RtpSample} s */
function adaptBuffer(s) {
  const losses = /** @type {number[]} */ ([s.video?.lossPercent, s.audio?.lossPercent].filter((x) => x != null));
  if (!losses.length) return;
  lossWindow.push(Math.max(...losses));
  while (lossWindow.length > LOSS_WINDOW_S) lossWindow.shift();
  const loss = lossWindow.reduce((a, b) => a + b, 0) / lossWindow.length;
  // Audio packets leave every 20 ms, so their jitter is the link's; video jitter also
  // counts the spread of each frame's packets, used only when there is no audio.
  const jitter = 1000 * (s.audio?.jitter ?? s.video?.jitter ?? 0);
  rc.buffer.lossPercent = loss;
  rc.buffer.jitterMs = jitter;
  if (!rc.buffer.auto) return;

  const current = Math.max(0, BUFFER_LEVELS.findIndex((l) => l.ms === rc.buffer.targetMs && l.name === rc.buffer.level));
  const wanted = levelIndexFor(loss, jitter);
  const measured = `${loss.toFixed(1)} % loss, ${Math.round(jitter)} ms jitter`;
  let next = current;
  if (wanted > current) {
    downCount = 0;
    upCount += 1;
    if (upCount >= UP_AFTER_S) next = wanted;
  } else {
    upCount = 0;
    const lvl = BUFFER_LEVELS[current];
    if (current > 0 && loss < lvl.loss / 2 && jitter < lvl.jitter / 2) {
      downCount += 1;
      if (downCount >= DOWN_AFTER_S) next = current - 1;
    } else {
      downCount = 0;
    }
  }
  if (next !== current) {
    upCount = 0;
    downCount = 0;
    const l = BUFFER_LEVELS[next];
    rc.buffer.level = l.name;
    const why =
      next > current
        ? `${measured}: ${l.name} → ${l.ms} ms`
        : `link better for ${DOWN_AFTER_S} s (${measured}): ${l.name} → ${l.ms} ms`;
    setBufferTarget(l.ms, `automatic · ${why}`);
  } else if (current === 0) {
    rc.buffer.reason = `automatic · ${measured}: clean link, no extra buffer`;
    showBuffer();
  } else {
    rc.buffer.reason = `automatic · ${measured}: holding ${BUFFER_LEVELS[current].name} (${rc.buffer.targetMs} ms)`;
    showBuffer();
  }
}

// -- quality (simulcast layers) -------------------------------------------------------------

/**
 * Follow the session's layers (the WHEP layer extension), if the server has it.
 * @param {RTCPeerConnection} pc
 * @param {WhepClient} client
 */
function startLayers(pc, client) {
  stopLayers();
  const resource = client.layerResource();
  if (!resource) return;
  rc.layers.url = resource.url;
  rc.layers.polls = 0;
  rc.layers.announced = resource.announced;
  layerControl = new LayerControl({
    url: resource.url,
    announced: resource.announced,
    mediaId: () => client.videoMid(),
    token,
    onUpdate: (control) => showLayers(control),
    // while playing (and once at the start, to know whether there is a menu at all)
    shouldPoll: () => rc.pc === pc && !document.hidden && (rc.state === "live" || rc.layers.polls === 0),
  });
  layerControl.start();
}

function stopLayers() {
  layerControl?.stop();
  layerControl = null;
  rc.layers.available = false;
  rc.layers.status = null;
  hideLayers();
}

function hideLayers() {
  els.quality.hidden = true;
  els.qualityCard.hidden = true;
  for (const e of document.querySelectorAll(".ov-layer")) if (e instanceof HTMLElement) e.hidden = true;
}

/**
 * @param {string | null} rid
 * @returns {Promise<boolean>}
 */
async function setLayer(rid) {
  if (!layerControl || !rc.layers.available) return false;
  return layerControl.pin(rid);
}

/** @param {LayerControl} control */
function showLayers(control) {
  if (control !== layerControl) return;
  const st = control.status;
  rc.layers.available = control.available === true && Boolean(st && st.layers.length);
  rc.layers.status = st;
  rc.layers.error = control.error;
  rc.layers.polls = control.polls;
  if (!rc.layers.available || !st) {
    hideLayers();
    return;
  }
  const byRid = new Map(st.layers.map((l) => [l.rid, l]));
  const label = (/** @type {string | null} */ rid) => (rid ? layerLabel(byRid.get(rid) ?? { rid, width: null, height: null, fps: null, bitrate_bps: null, active: true }, st.layers) : "");
  const current = st.current ? label(st.current) : "no video";
  const switching = st.target && st.target !== st.current ? label(st.target) : "";
  const chosen = st.mode === "pinned" ? (st.target ?? st.current) : null;

  // the menu: rebuilt only when the layers change
  const signature = JSON.stringify([st.layers.map((l) => [l.rid, label(l.rid), l.active]), st.mode, chosen, current]);
  if (signature !== qualitySignature) {
    qualitySignature = signature;
    const auto = new Option(st.mode === "auto" ? `Auto · ${current}` : "Auto", "auto");
    const options = [auto];
    const buttons = [];
    const autoButton = document.createElement("button");
    autoButton.type = "button";
    autoButton.textContent = "Auto";
    autoButton.dataset.layer = "auto";
    buttons.push(autoButton);
    for (const l of st.layers) {
      const text = label(l.rid) + (l.active ? "" : " (off)");
      options.push(new Option(text, l.rid));
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = text;
      b.dataset.layer = l.rid;
      b.title = [l.width && l.height ? `${l.width}×${l.height}` : "", l.fps ? `${Math.round(l.fps)} fps` : "", l.bitrate_bps ? formatBps(l.bitrate_bps) : ""]
        .filter(Boolean)
        .join(" · ");
      buttons.push(b);
    }
    els.quality.replaceChildren(...options);
    els.qualityButtons.replaceChildren(...buttons);
  }
  const value = chosen ?? "auto";
  if (document.activeElement !== els.quality) els.quality.value = value;
  for (const b of els.qualityButtons.querySelectorAll("button")) {
    b.setAttribute("aria-pressed", String(b.dataset.layer === value));
  }

  const estimate = st.estimate_bps != null ? `estimate ${formatBps(st.estimate_bps)}` : "";
  els.qualityCurrent.textContent = switching ? `${current} → ${switching}` : current;
  els.qualityMode.textContent = st.mode === "pinned" ? `pinned to ${label(chosen)}` : "auto";
  els.qualityReason.textContent = [st.reason, estimate, control.error].filter(Boolean).join(" · ");
  els.ovLayer.textContent = `${current}${st.mode === "pinned" ? " (pinned)" : " (auto)"}`;
  els.quality.hidden = false;
  els.qualityCard.hidden = false;
  for (const e of document.querySelectorAll(".ov-layer")) if (e instanceof HTMLElement) e.hidden = false;
}

// -- glass-to-glass --------------------------------------------------------------------------

/** @param {number} delayMs */
function onGlassToGlass(delayMs) {
  const now = performance.now();
  g2g.push([now, delayMs]);
  while (g2g.length && g2g[0][0] < now - 3000) g2g.shift();
  const sorted = g2g.map(([, d]) => d).sort((a, b) => a - b);
  rc.glassToGlass = {
    lastMs: Math.round(delayMs),
    medianMs: Math.round(sorted[Math.floor(sorted.length / 2)]),
    reads: reader?.reads ?? 0,
    misses: reader?.misses ?? 0,
    at: now,
  };
}

// -- stats -----------------------------------------------------------------------------------

/** @param {RtpSample} s */
function showOverlay(s) {
  const v = s.video;
  const set = setText;
  set("ov-resolution", v?.width ? `${v.width}×${v.height}` : "—");
  set("ov-fps", v?.fps != null ? `${Math.round(v.fps)}` : "—");
  const kbps = (v?.kbps ?? 0) + (s.audio?.kbps ?? 0);
  set("ov-bitrate", v?.kbps != null ? formatBps(kbps * 1000) : "—");
  set("ov-loss", `${rc.buffer.lossPercent.toFixed(1)} %`);
  set("ov-jitter", `${Math.round(rc.buffer.jitterMs)} ms`);
  set(
    "ov-freezes",
    v?.freezes != null ? `${v.freezes}${v.freezeSeconds ? ` (${v.freezeSeconds.toFixed(1)} s)` : ""}` : "—",
  );
  const g = rc.glassToGlass;
  if (g && performance.now() - g.at < 3000) {
    set("ov-delay", `${g.medianMs} ms (measured)`);
  } else if (v?.jitterBufferMs != null) {
    const rtt = s.pair?.rtt ?? 0;
    set("ov-delay", `≈ ${Math.round(v.jitterBufferMs + (rtt * 1000) / 2)} ms`);
  } else {
    set("ov-delay", "—");
  }
}

/**
 * Playing state comes from decoded frames (getStats) and the <video> events together.
 * @param {RTCPeerConnection} pc
 */
function startStats(pc) {
  clearInterval(statsTimer);
  const sampler = new RtpStatsSampler(pc, "inbound-rtp"); // display, every 500 ms
  const policySampler = new RtpStatsSampler(pc, "inbound-rtp"); // buffering, every second
  let ticks = 0;
  statsTimer = setInterval(async () => {
    if (pc !== rc.pc) {
      clearInterval(statsTimer);
      return;
    }
    let s;
    try {
      s = await sampler.sample();
    } catch {
      return;
    }
    rc.stats = s;
    const frames = s.video?.frames ?? 0;
    const now = performance.now();
    if (frames > rc.framesDecoded) {
      rc.framesDecoded = frames;
      lastFrameAt = now;
      if (rc.state !== "live" && pc.connectionState === "connected") setState("live");
    } else if (rc.state === "live" && now - lastFrameAt > STALL_MS) {
      setState("waiting");
    }
    // every other tick (500 ms sampling): one decision a second
    ticks += 1;
    if (ticks % 2 === 0) {
      const p = await policySampler.sample().catch(() => null);
      if (p) adaptBuffer(p);
    }
    showOverlay(s);
  }, 500);
}

// -- controls --------------------------------------------------------------------------------

function updateMuteUi() {
  unmute.hidden = !video.muted;
  els.mute.dataset.muted = String(video.muted || video.volume === 0);
  els.volume.value = String(video.muted ? 0 : video.volume);
}

function setupControls() {
  unmute.addEventListener("click", () => {
    video.muted = false;
    if (video.volume === 0) video.volume = 1;
    video.play().catch(() => {});
  });
  els.mute.addEventListener("click", () => {
    video.muted = !video.muted;
    if (!video.muted && video.volume === 0) video.volume = 1;
  });
  els.volume.addEventListener("input", () => {
    video.volume = Number(els.volume.value);
    video.muted = video.volume === 0;
  });
  video.addEventListener("volumechange", updateMuteUi);

  const showStats = (/** @type {boolean} */ on) => {
    els.overlay.hidden = !on;
    els.statsToggle.setAttribute("aria-pressed", String(on));
    localStorage.setItem("relaycast.watchStats", on ? "1" : "0");
  };
  const saved = localStorage.getItem("relaycast.watchStats");
  showStats(params.get("stats") ? params.get("stats") === "1" : saved ? saved === "1" : !matchMedia("(max-width: 600px)").matches);
  els.statsToggle.addEventListener("click", () => showStats(els.overlay.hidden));

  if (!document.pictureInPictureEnabled) els.pip.hidden = true;
  els.pip.addEventListener("click", async () => {
    try {
      if (document.pictureInPictureElement) await document.exitPictureInPicture();
      else await video.requestPictureInPicture();
    } catch {
      // not allowed now
    }
  });
  if (!els.wrap.requestFullscreen) els.fullscreen.hidden = true;
  els.fullscreen.addEventListener("click", async () => {
    try {
      if (document.fullscreenElement) await document.exitFullscreen();
      else await els.wrap.requestFullscreen();
    } catch {
      // not allowed now
    }
  });
  video.addEventListener("dblclick", () => els.fullscreen.click());

  els.auto.addEventListener("change", () => setAutoBuffering(els.auto.checked));
  els.quality.addEventListener("change", () => {
    const v = els.quality.value;
    setLayer(v === "auto" ? null : v);
    els.quality.blur();
  });
  els.qualityButtons.addEventListener("click", (ev) => {
    const b = ev.target instanceof HTMLElement ? ev.target.closest("button") : null;
    if (!b || !b.dataset.layer) return;
    setLayer(b.dataset.layer === "auto" ? null : b.dataset.layer);
  });
  for (const btn of document.querySelectorAll("button[data-buffer]")) {
    if (!(btn instanceof HTMLElement)) continue;
    btn.addEventListener("click", () => {
      setAutoBuffering(false);
      setBufferTarget(Number(btn.dataset.buffer), "set by hand");
    });
  }
}

video.addEventListener("playing", () => {
  lastFrameAt = performance.now();
  if (rc.pc?.connectionState === "connected") setState("live");
});
window.addEventListener("pagehide", () => {
  layerControl?.stop();
  runner.stop();
});

setText("stream-name", streamName);
document.title = `${streamName} · relaycast`;
setupControls();
updateMuteUi();
showBuffer();
