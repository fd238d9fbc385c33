// Quality presets the streamer picks before going live (the quality is fixed for the session).

export const PRESETS = Object.freeze({
  "360p": Object.freeze({ width: 640, height: 360, fps: 30, bitrate: 800_000 }),
  "480p": Object.freeze({ width: 854, height: 480, fps: 30, bitrate: 1_200_000 }),
  "720p": Object.freeze({ width: 1280, height: 720, fps: 30, bitrate: 2_500_000 }),
  "1080p": Object.freeze({ width: 1920, height: 1080, fps: 30, bitrate: 4_500_000 }),
});

export const DEFAULT_PRESET = "720p";
export const CODECS = ["vp8", "h264", "vp9", "av1"];

export function presetByName(name) {
  return PRESETS[name] ? { name, ...PRESETS[name] } : { name: DEFAULT_PRESET, ...PRESETS[DEFAULT_PRESET] };
}

/**
 * Downlink estimate in Mbps from the Network Information API (Chromium only), else 4.
 * (The design notes' version read an undefined variable in its effectiveType branch.)
 */
export function detectConnectionSpeed(nav = globalThis.navigator) {
  const conn = nav?.connection;
  if (conn && typeof conn.downlink === "number" && conn.downlink > 0) return conn.downlink;
  const byType = { "slow-2g": 0.5, "2g": 1, "3g": 3, "4g": 10 };
  if (conn?.effectiveType && byType[conn.effectiveType] !== undefined) return byType[conn.effectiveType];
  return 4;
}

/** The largest preset whose bitrate fits in ~70 % of `mbps` of upload. */
export function suggestPreset(mbps) {
  const budget = mbps * 1e6 * 0.7;
  let best = "360p";
  for (const [name, p] of Object.entries(PRESETS)) if (p.bitrate <= budget) best = name;
  return best;
}
