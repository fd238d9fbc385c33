// @ts-check
// getStats() sampling with bitrates computed from deltas between two samples
// (bytes over the time between the two reports, not over the epoch timestamp as in the
// design notes' snippet).

/**
 * One media kind of a sample (numbers from the RTP stats entry; null when the browser has none).
 * @typedef {object} KindSample
 * @property {number | null} kbps  since the previous sample
 * @property {number} bytes
 * @property {number} packets
 * @property {number} packetsLost
 * @property {number | null} lossPercent  inbound, since the previous sample
 * @property {number | null} width
 * @property {number | null} height
 * @property {number | null} fps
 * @property {number | null} frames  decoded (inbound) or sent (outbound)
 * @property {number | null} jitter  seconds
 * @property {number | null} jitterBufferMs  average jitter-buffer delay since the previous sample
 * @property {number | null} jitterBufferTarget
 * @property {number | null} freezes
 * @property {number | null} freezeSeconds
 * @property {string | null} codec  e.g. "video/VP8"
 * @property {string | null} qualityLimitationReason
 * @property {number | null} targetBitrate
 */

/**
 * One simulcast layer of an outbound video (an outbound-rtp entry with a `rid`).
 * @typedef {object} LayerSample
 * @property {string} rid
 * @property {number | null} width
 * @property {number | null} height
 * @property {number | null} fps
 * @property {number | null} kbps  since the previous sample
 * @property {number} bytes
 * @property {number | null} frames
 * @property {number | null} newFrames  frames sent since the previous sample (null: first sample)
 * @property {string | null} qualityLimitationReason  none | cpu | bandwidth | other
 * @property {boolean} active  the sender's encoding is on (RTCRtpEncodingParameters.active)
 * @property {number | null} targetBitrate
 * @property {string | null} encoderImplementation
 */

/**
 * @typedef {object} RtpSample
 * @property {KindSample | null} video
 * @property {KindSample | null} audio
 * @property {{fractionLost: number | null, packetsLost: number | null, rtt: number | null, jitter: number | null} | null} remote
 * @property {{availableOutgoingBitrate: number | null, rtt: number | null} | null} pair
 * @property {LayerSample[]} layers  outbound video: one per rid (simulcast), top first; else empty
 * @property {number} videoStreams  outbound: how many video RTP streams are sent (1 without simulcast)
 * @property {number} at  performance.now() of the sample
 */

/** Tracks one direction ("outbound-rtp" or "inbound-rtp") of a peer connection. */
export class RtpStatsSampler {
  /**
   * @param {RTCPeerConnection} pc
   * @param {"outbound-rtp" | "inbound-rtp"} type
   */
  constructor(pc, type = "outbound-rtp") {
    this.pc = pc;
    this.type = type;
    /** @type {Map<string, any>} report id -> previous raw stats */
    this.prev = new Map();
  }

  /**
   * One sample: {video, audio, remote, pair, codecs} with kbps and per-interval loss from
   * the previous sample. `remote` is the remote-inbound-rtp of the video (the server's
   * receiver reports), `pair` the selected candidate pair.
   * @returns {Promise<RtpSample>}
   */
  async sample() {
    /** @type {RtpSample} */
    const out = { video: null, audio: null, remote: null, pair: null, layers: [], videoStreams: 0, at: performance.now() };
    /** @type {{sample: KindSample, rid: string | null, active: boolean, encoder: string | null, newFrames: number | null}[]} */
    const videos = [];
    const report = await this.pc.getStats();
    /** @type {Map<string, string>} */
    const codecs = new Map();
    report.forEach((/** @type {any} */ s) => {
      if (s.type === "codec") codecs.set(s.id, s.mimeType);
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
        out.pair = {
          availableOutgoingBitrate: s.availableOutgoingBitrate ?? null,
          rtt: s.currentRoundTripTime ?? null,
        };
      }
    });
    report.forEach((/** @type {any} */ s) => {
      /** @type {"video" | "audio"} */
      const kind = s.kind || s.mediaType;
      if (s.type === "remote-inbound-rtp" && kind === "video") {
        out.remote = {
          fractionLost: s.fractionLost ?? null,
          packetsLost: s.packetsLost ?? null,
          rtt: s.roundTripTime ?? null,
          jitter: s.jitter ?? null,
        };
      }
      if (s.type !== this.type) return;
      if (kind !== "video" && kind !== "audio") return;
      const inbound = this.type === "inbound-rtp";
      const bytes = inbound ? s.bytesReceived : s.bytesSent;
      const packets = inbound ? s.packetsReceived : s.packetsSent;
      const prev = this.prev.get(s.id);
      const newFrames = prev && !inbound ? (s.framesSent ?? 0) - (prev.framesSent ?? 0) : null;
      this.prev.set(s.id, s);
      let kbps = null;
      let lossPercent = null;
      let jitterBufferMs = null;
      if (prev && s.timestamp > prev.timestamp) {
        kbps = ((bytes - (inbound ? prev.bytesReceived : prev.bytesSent)) * 8) / (s.timestamp - prev.timestamp);
        if (inbound) {
          const lost = Math.max(0, (s.packetsLost ?? 0) - (prev.packetsLost ?? 0));
          const got = Math.max(0, packets - prev.packetsReceived);
          lossPercent = lost + got > 0 ? (100 * lost) / (lost + got) : 0;
          const emitted = (s.jitterBufferEmittedCount ?? 0) - (prev.jitterBufferEmittedCount ?? 0);
          if (emitted > 0) {
            jitterBufferMs = (1000 * ((s.jitterBufferDelay ?? 0) - (prev.jitterBufferDelay ?? 0))) / emitted;
          }
        }
      }
      /** @type {KindSample} */
      const sample = {
        kbps,
        bytes,
        packets,
        packetsLost: s.packetsLost ?? 0,
        lossPercent,
        width: s.frameWidth ?? null,
        height: s.frameHeight ?? null,
        fps: s.framesPerSecond ?? null,
        frames: (inbound ? s.framesDecoded : s.framesSent) ?? null,
        jitter: s.jitter ?? null,
        jitterBufferMs,
        jitterBufferTarget: s.jitterBufferTargetDelay ?? null,
        freezes: s.freezeCount ?? null,
        freezeSeconds: s.totalFreezesDuration ?? null,
        codec: codecs.get(s.codecId) ?? null,
        qualityLimitationReason: s.qualityLimitationReason ?? null,
        targetBitrate: s.targetBitrate ?? null,
      };
      if (kind === "video" && !inbound) {
        videos.push({ sample, rid: s.rid ?? null, active: s.active ?? true, encoder: s.encoderImplementation ?? null, newFrames });
      } else {
        out[kind] = sample;
      }
    });
    if (videos.length) {
      out.videoStreams = videos.length;
      out.video = combineLayers(videos.map((v) => v.sample));
      out.layers = videos
        .filter((v) => v.rid != null)
        .map((v) => ({
          rid: /** @type {string} */ (v.rid),
          width: v.sample.width,
          height: v.sample.height,
          fps: v.sample.fps,
          kbps: v.sample.kbps,
          bytes: v.sample.bytes,
          frames: v.sample.frames,
          newFrames: v.newFrames,
          qualityLimitationReason: v.sample.qualityLimitationReason,
          active: v.active,
          targetBitrate: v.sample.targetBitrate,
          encoderImplementation: v.encoder,
        }))
        .sort((a, b) => (b.width ?? 0) * (b.height ?? 0) - (a.width ?? 0) * (a.height ?? 0) || a.rid.localeCompare(b.rid));
    }
    return out;
  }
}

/**
 * The outbound video as one: the largest layer being sent (resolution, frame rate, frames,
 * codec, limitation) with the bytes, packets and bitrate of all layers summed (the upload).
 * @param {KindSample[]} samples
 * @returns {KindSample}
 */
export function combineLayers(samples) {
  if (samples.length === 1) return samples[0];
  const size = (/** @type {KindSample} */ v) => (v.fps ? 1 : 0) * 1e9 + (v.width ?? 0) * (v.height ?? 0);
  const top = samples.reduce((a, b) => (size(b) > size(a) ? b : a));
  const sum = (/** @type {(v: KindSample) => number | null} */ f) =>
    samples.some((v) => f(v) != null) ? samples.reduce((acc, v) => acc + (f(v) ?? 0), 0) : null;
  return {
    ...top,
    kbps: sum((v) => v.kbps),
    bytes: sum((v) => v.bytes) ?? 0,
    packets: sum((v) => v.packets) ?? 0,
    targetBitrate: sum((v) => v.targetBitrate),
  };
}

/**
 * What the encoder does to each layer, in a few words: "sending", "limited by cpu",
 * "dropped (bandwidth)", "off".
 * @param {LayerSample} layer
 * @returns {{state: "ok" | "limited" | "dropped" | "off", text: string}}
 */
export function layerCondition(layer) {
  const why = layer.qualityLimitationReason && layer.qualityLimitationReason !== "none" ? layer.qualityLimitationReason : "";
  if (!layer.active) return { state: "off", text: "off" };
  // no new frame since the last sample (framesPerSecond alone flickers to 0 at low rates)
  const idle = layer.newFrames != null ? layer.newFrames === 0 : !layer.fps;
  if (idle) return { state: "dropped", text: why ? `dropped (${why})` : "dropped: 0 frames/s" };
  if (why) return { state: "limited", text: `limited by ${why}` };
  return { state: "ok", text: "sending" };
}

/**
 * @param {KindSample | null} v
 * @returns {string}
 */
export function formatVideoStats(v) {
  if (!v) return "no video yet";
  const parts = [];
  if (v.width && v.height) parts.push(`${v.width}x${v.height}`);
  if (v.fps != null) parts.push(`${Math.round(v.fps)} fps`);
  if (v.kbps != null) parts.push(`${Math.round(v.kbps)} kbit/s`);
  if (v.frames != null) parts.push(`${v.frames} frames`);
  return parts.join(" · ") || "no video yet";
}
