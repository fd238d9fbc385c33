// The viewer page: WHEP in, play, and reconnect by itself when the connection drops.
//
// relaycast accepts viewers before the streamer is live (201) and starts sending when the
// stream goes live, so "waiting for the streamer" is a state of a connected viewer.
//
// Test hooks: window.relaycast = {state, pc, stats, ...}
//   state: connecting | waiting | live | reconnecting | error

import { streamNameFromPath } from "./http-util.js";
import { RtpStatsSampler, formatVideoStats } from "./stats.js";
import { WhepClient } from "./whep-client.js";

const DISCONNECT_GRACE_MS = 3000;
const RETRY_MAX_MS = 10000;
const STALL_MS = 2500; // no new frame for this long: the streamer is away

const streamName = streamNameFromPath();
const params = new URLSearchParams(location.search);

const rc = {
  state: "connecting",
  pc: null,
  error: null,
  stream: streamName,
  attempts: 0,
  stats: null,
  framesDecoded: 0,
  /** Ask the browser to keep `ms` of media buffered (adaptive buffering hook). */
  setBufferTarget: (ms) => setBufferTarget(ms),
};
window.relaycast = rc;

const video = document.getElementById("video");
const statusEl = document.getElementById("status");
const statsEl = document.getElementById("stats");
const unmute = document.getElementById("unmute");

let client = null;
let retryTimer = null;
let disconnectTimer = null;
let statsTimer = null;
let lastFrameAt = 0;
let bufferTargetMs = null;

const MESSAGES = {
  connecting: "Connecting…",
  waiting: "Waiting for the streamer…",
  live: "Live",
  reconnecting: "Connection lost — reconnecting…",
  error: "Cannot watch this stream.",
};

function setState(state, message) {
  rc.state = state;
  statusEl.dataset.state = state;
  statusEl.textContent = message ?? MESSAGES[state];
}

function isRetryable(err) {
  const s = err?.status ?? 0;
  return s === 0 || s === 404 || s === 408 || s === 409 || s === 429 || s >= 500;
}

function scheduleRetry(reason) {
  clearTimeout(retryTimer);
  const delay = Math.min(RETRY_MAX_MS, 500 * 2 ** rc.attempts);
  rc.attempts += 1;
  setState("reconnecting", `${reason} — retrying in ${Math.round(delay / 1000)} s…`);
  retryTimer = setTimeout(connect, delay);
}

async function connect() {
  clearTimeout(retryTimer);
  clearTimeout(disconnectTimer);
  if (client) await client.stop();
  rc.pc = null;
  if (rc.attempts === 0) setState("connecting");
  client = new WhepClient(`/whep/${encodeURIComponent(streamName)}`, {
    token: params.get("token") || "",
  });
  const thisClient = client;
  let result;
  try {
    result = await client.view();
  } catch (err) {
    if (thisClient !== client) return;
    rc.error = err.message || String(err);
    if (isRetryable(err)) scheduleRetry(err.detail || "Server unreachable");
    else setState("error", err.detail ? `${err.title || "Refused"}: ${err.detail}` : rc.error);
    return;
  }
  if (thisClient !== client) return;
  const { pc, stream } = result;
  rc.pc = pc;
  rc.framesDecoded = 0;
  lastFrameAt = 0;
  video.srcObject = stream;
  video.play().catch(() => {}); // muted autoplay is allowed; ignore if not yet
  if (bufferTargetMs != null) setBufferTarget(bufferTargetMs);
  pc.addEventListener("connectionstatechange", () => onConnectionState(pc));
  onConnectionState(pc);
  startStats(pc);
}

function onConnectionState(pc) {
  if (pc !== rc.pc) return;
  switch (pc.connectionState) {
    case "connected":
      clearTimeout(disconnectTimer);
      rc.attempts = 0;
      rc.error = null;
      if (rc.state !== "live") setState("waiting");
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
    default:
      break;
  }
}

// Playing state comes from decoded frames (getStats) and the <video> events together.
function startStats(pc) {
  clearInterval(statsTimer);
  const sampler = new RtpStatsSampler(pc, "inbound-rtp");
  statsTimer = setInterval(async () => {
    if (pc !== rc.pc) return clearInterval(statsTimer);
    let s;
    try {
      s = await sampler.sample();
    } catch {
      return;
    }
    rc.stats = s;
    statsEl.textContent = formatVideoStats(s.video);
    const frames = s.video?.frames ?? 0;
    const now = performance.now();
    if (frames > rc.framesDecoded) {
      rc.framesDecoded = frames;
      lastFrameAt = now;
      if (rc.state !== "live" && pc.connectionState === "connected") setState("live");
    } else if (rc.state === "live" && now - lastFrameAt > STALL_MS) {
      setState("waiting");
    }
  }, 500);
}

function setBufferTarget(ms) {
  bufferTargetMs = ms;
  if (!rc.pc) return;
  for (const receiver of rc.pc.getReceivers()) {
    if ("jitterBufferTarget" in receiver) receiver.jitterBufferTarget = ms;
    else if ("playoutDelayHint" in receiver) receiver.playoutDelayHint = ms / 1000;
  }
}

video.addEventListener("playing", () => {
  lastFrameAt = performance.now();
  if (rc.pc?.connectionState === "connected") setState("live");
});

function updateUnmute() {
  unmute.hidden = !video.muted;
}
unmute.addEventListener("click", () => {
  video.muted = false;
  video.play().catch(() => {});
  updateUnmute();
});
video.addEventListener("volumechange", updateUnmute);
window.addEventListener("pagehide", () => {
  if (client) client.stop();
});

document.getElementById("stream-name").textContent = streamName;
document.title = `${streamName} · relaycast`;
updateUnmute();
connect();
