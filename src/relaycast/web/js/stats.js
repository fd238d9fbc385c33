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
 * @typedef {object} RtpSample
 * @property {KindSample | null} video
 * @property {KindSample | null} audio
 * @property {{fractionLost: number | null, packetsLost: number | null, rtt: number | null, jitter: number | null} | null} remote
 * @property {{availableOutgoingBitrate: number | null, rtt: number | null} | null} pair
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
    const out = { video: null, audio: null, remote: null, pair: null, at: performance.now() };
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
      out[kind] = {
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
    });
    return out;
  }
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
