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

/**
 * One simulcast layer of the streamer page: its RID (RFC 8851), how much smaller than the
 * top layer, and its share of the preset's bitrate.
 * @typedef {{rid: string, scaleResolutionDownBy: number, share: number}} LayerSpec
 */

/**
 * The three layers published for presets of SIMULCAST_MIN_HEIGHT and up: full, 1/2 and 1/4
 * size; their bitrates sum to 1.3x the preset's (the top layer gets the preset's own).
 * @type {readonly Readonly<LayerSpec>[]}
 */
export const SIMULCAST_LAYERS = Object.freeze([
  Object.freeze({ rid: "f", scaleResolutionDownBy: 1, share: 1 }),
  Object.freeze({ rid: "h", scaleResolutionDownBy: 2, share: 0.22 }),
  Object.freeze({ rid: "q", scaleResolutionDownBy: 4, share: 0.08 }),
]);
export const SIMULCAST_MIN_HEIGHT = 720;

/**
 * Whether `preset` is published as three layers (when simulcast is on).
 * @param {PresetValues} preset
 * @returns {boolean}
 */
export function simulcastFits(preset) {
  return preset.height >= SIMULCAST_MIN_HEIGHT;
}

/**
 * The sender's encodings for `preset`: one, or the three simulcast layers (top first, so
 * encodings[0] is always the top layer). `baseScale` shrinks every layer further (a capture
 * larger than the preset).
 * @param {PresetValues} preset
 * @param {{simulcast?: boolean, baseScale?: number}} [options]
 * @returns {RTCRtpEncodingParameters[]}
 */
export function presetEncodings(preset, { simulcast = false, baseScale = 1 } = {}) {
  if (!simulcast) {
    return [{ maxBitrate: preset.bitrate, maxFramerate: preset.fps, scaleResolutionDownBy: baseScale }];
  }
  return SIMULCAST_LAYERS.map((l) => ({
    rid: l.rid,
    active: true,
    maxBitrate: Math.round(preset.bitrate * l.share),
    maxFramerate: preset.fps,
    scaleResolutionDownBy: baseScale * l.scaleResolutionDownBy,
  }));
}
