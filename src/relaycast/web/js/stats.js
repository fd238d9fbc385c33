// getStats() sampling with bitrates computed from deltas between two samples
// (bytes over elapsed time between reports, not over the epoch timestamp).

/** Tracks one direction ("outbound-rtp" or "inbound-rtp") of a peer connection. */
export class RtpStatsSampler {
  constructor(pc, type = "outbound-rtp") {
    this.pc = pc;
    this.type = type;
    this.prev = new Map(); // report id -> {bytes, timestamp}
  }

  /** One sample: {video: {...}, audio: {...}} with kbps from the previous sample. */
  async sample() {
    const out = { video: null, audio: null };
    const report = await this.pc.getStats();
    report.forEach((s) => {
      if (s.type !== this.type) return;
      const kind = s.kind || s.mediaType;
      if (kind !== "video" && kind !== "audio") return;
      const bytes = this.type === "outbound-rtp" ? s.bytesSent : s.bytesReceived;
      const prev = this.prev.get(s.id);
      this.prev.set(s.id, { bytes, timestamp: s.timestamp });
      let kbps = null;
      if (prev && s.timestamp > prev.timestamp) {
        kbps = ((bytes - prev.bytes) * 8) / (s.timestamp - prev.timestamp); // bits/ms = kbit/s
      }
      out[kind] = {
        kbps,
        bytes,
        packets: this.type === "outbound-rtp" ? s.packetsSent : s.packetsReceived,
        packetsLost: s.packetsLost ?? 0,
        width: s.frameWidth ?? null,
        height: s.frameHeight ?? null,
        fps: s.framesPerSecond ?? null,
        frames: s.framesSent ?? s.framesDecoded ?? null,
        jitter: s.jitter ?? null,
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
