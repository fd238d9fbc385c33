// @ts-check
// Connection speed: the Network Information API where the browser has one (the design notes'
// detectConnectionSpeed(), fixed) and a real upload measurement against the server.

import { PRESETS } from "./presets.js";

/**
 * Downlink estimate in Mbps from the Network Information API (Chromium), else 4.
 * The notes' version read an undefined variable `effectiveType` in its second branch; this
 * one reads navigator.connection.effectiveType.
 * @param {{connection?: {downlink?: number, effectiveType?: string}}} [nav]
 * @returns {number}
 */
export function detectConnectionSpeed(nav = /** @type {any} */ (globalThis.navigator)) {
  // 1. Network Information API (Chrome, Edge): downlink in Mbps
  if (nav?.connection?.downlink) {
    return nav.connection.downlink;
  }
  // 2. effectiveType, mapped to Mbps
  if (nav?.connection?.effectiveType) {
    /** @type {Record<string, number>} */
    const speedMap = { "slow-2g": 0.5, "2g": 1, "3g": 3, "4g": 10 };
    return speedMap[nav.connection.effectiveType] || 5;
  }
  // 3. Fallback: 4 Mbps (Safari, Firefox, others)
  return 4;
}

/** @param {number} size */
function randomBytes(size) {
  const buf = new Uint8Array(size);
  for (let off = 0; off < size; off += 65536) {
    crypto.getRandomValues(buf.subarray(off, Math.min(size, off + 65536)));
  }
  return buf;
}

// The server runs one speed test per address at a time (a few in all) and answers 429/503 with
// Retry-After when busy (another tab, or the check started on load): wait and try again.
const BUSY_RETRIES = 8;

/** @param {number} bytes */
async function uploadOnce(bytes) {
  const body = randomBytes(bytes);
  for (let attempt = 0; ; attempt++) {
    const t0 = performance.now();
    // application/octet-stream is required: the server refuses the CORS "simple" types
    const resp = await fetch("/api/speedtest", {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body,
      cache: "no-store",
    });
    if ((resp.status === 429 || resp.status === 503) && attempt < BUSY_RETRIES) {
      const wait = Math.min(Number(resp.headers.get("Retry-After")) || 1, 5);
      await new Promise((resolve) => setTimeout(resolve, wait * 1000 * (0.5 + Math.random())));
      continue;
    }
    if (!resp.ok) throw new Error(`speed test refused: ${resp.status}`);
    return await measured(resp, t0);
  }
}

/**
 * @param {Response} resp
 * @param {number} t0
 */
async function measured(resp, t0) {
  const server = await resp.json();
  const seconds = (performance.now() - t0) / 1000;
  return {
    bytes: server.bytes,
    seconds,
    clientMbps: (server.bytes * 8) / seconds / 1e6,
    serverMbps: server.mbps,
  };
}

/**
 * Upload a few MB to POST /api/speedtest: a 256 KiB warm-up, then up to 8 MiB sized to take
 * about a second. The rate is the lower of the server's and the page's measurement.
 */
export async function measureUploadSpeed({ maxBytes = 8 * 1024 * 1024 } = {}) {
  const warm = await uploadOnce(256 * 1024);
  const guess = Math.max(warm.clientMbps, 0.5);
  const size = Math.min(maxBytes, Math.max(512 * 1024, Math.round((guess * 1e6) / 8)));
  const run = await uploadOnce(size);
  const mbps = Math.min(run.clientMbps, run.serverMbps || Infinity);
  return { mbps, bytes: run.bytes, seconds: run.seconds, serverMbps: run.serverMbps, clientMbps: run.clientMbps };
}

/** The largest preset whose bitrate fits in 70 % of `mbps`, with the reason in words. */
/**
 * @param {number} mbps
 * @param {string} [source]
 * @returns {{preset: string, reason: string}}
 */
export function recommendPreset(mbps, source = "upload") {
  const budget = mbps * 0.7;
  let best = null;
  for (const [name, p] of Object.entries(PRESETS)) if (p.bitrate / 1e6 <= budget) best = name;
  const shown = mbps >= 100 ? Math.round(mbps) : mbps.toFixed(1);
  if (!best) {
    const p = PRESETS["360p"];
    return {
      preset: "360p",
      reason: `${source} ${shown} Mbit/s is below what 360p needs (${p.bitrate / 1e6} Mbit/s + 30 % headroom); expect stalls`,
    };
  }
  const p = PRESETS[best];
  const top = best === Object.keys(PRESETS).at(-1);
  return {
    preset: best,
    reason:
      `${source} ${shown} Mbit/s: ${best} sends ${p.bitrate / 1e6} Mbit/s, ` +
      (top ? "the best preset, with room to spare" : "the largest that leaves 30 % headroom"),
  };
}

/** Both measurements and a recommendation (the upload measurement wins when it works). */
export async function checkConnectionSpeed() {
  const networkInfo = detectConnectionSpeed();
  const hasApi = Boolean(/** @type {any} */ (globalThis.navigator)?.connection);
  let upload = null;
  let error = null;
  try {
    upload = await measureUploadSpeed();
  } catch (err) {
    error = err instanceof Error ? err.message : String(err);
  }
  const rec = upload
    ? recommendPreset(upload.mbps, "measured upload to this server")
    : recommendPreset(networkInfo, hasApi ? "browser's downlink estimate" : "default guess");
  return { networkInfoMbps: networkInfo, networkInfoApi: hasApi, upload, error, ...rec };
}
