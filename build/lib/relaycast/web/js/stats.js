// getStats() sampling with bitrates computed from deltas between two samples
// (bytes over the time between the two reports, not over the epoch timestamp as in the
// design notes' snippet).

/** Tracks one direction ("outbound-rtp" or "inbound-rtp") of a peer connection. */
export class RtpStatsSampler {
  constructor(pc, type = "outbound-rtp") {
    this.pc = pc;
    this.type = type;
    this.prev = new Map(); // report id -> previous raw stats
  }

  /**
   * One sample: {video, audio, remote, pair, codecs} with kbps and per-interval loss from
   * the previous sample. `remote` is the remote-inbound-rtp of the video (the server's
   * receiver reports), `pair` the selected candidate pair.
   */
  async sample() {
    const out = { video: null, audio: null, remote: null, pair: null, at: performance.now() };
    const report = await this.pc.getStats();
    const codecs = new Map();
    report.forEach((s) => {
      if (s.type === "codec") codecs.set(s.id, s.mimeType);
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
        out.pair = {
          availableOutgoingBitrate: s.availableOutgoingBitrate ?? null,
          rtt: s.currentRoundTripTime ?? null,
        };
      }
    });
    report.forEach((s) => {
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

export function formatVideoStats(v) {
  if (!v) return "no video yet";
  const parts = [];
  if (v.width && v.height) parts.push(`${v.width}x${v.height}`);
  if (v.fps != null) parts.push(`${Math.round(v.fps)} fps`);
  if (v.kbps != null) parts.push(`${Math.round(v.kbps)} kbit/s`);
  if (v.frames != null) parts.push(`${v.frames} frames`);
  return parts.join(" · ") || "no video yet";
}
