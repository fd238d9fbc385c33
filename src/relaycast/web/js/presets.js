// @ts-check
// Quality presets the streamer picks before going live, and may switch while live
// (capture constraints + the sender's encoding parameters, no reconnection).

/** @typedef {{width: number, height: number, fps: number, bitrate: number}} PresetValues */
/** @typedef {PresetValues & {name: string}} Preset */

/** @type {Readonly<Record<string, Readonly<PresetValues>>>} */
export const PRESETS = Object.freeze({
  "360p": Object.freeze({ width: 640, height: 360, fps: 30, bitrate: 800_000 }),
  "480p": Object.freeze({ width: 854, height: 480, fps: 30, bitrate: 1_200_000 }),
  "720p": Object.freeze({ width: 1280, height: 720, fps: 30, bitrate: 2_500_000 }),
  "1080p": Object.freeze({ width: 1920, height: 1080, fps: 30, bitrate: 4_500_000 }),
});

export const DEFAULT_PRESET = "720p";
export const CODECS = ["vp8", "h264", "vp9", "av1"];

/**
 * The preset called `name` (the default one for an unknown name).
 * @param {string} name
 * @returns {Preset}
 */
export function presetByName(name) {
  return PRESETS[name] ? { name, ...PRESETS[name] } : { name: DEFAULT_PRESET, ...PRESETS[DEFAULT_PRESET] };
}

/**
 * @param {string} name
 * @returns {string}
 */
export function presetLabel(name) {
  const p = PRESETS[name];
  return `${name} · ${p.fps} fps · ${p.bitrate / 1e6} Mbit/s`;
}
