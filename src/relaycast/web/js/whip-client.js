// @ts-check
// WHIP client (RFC 9725): publish a MediaStream with one HTTP POST of an SDP offer.

import { WebRtcClient } from "./webrtc-client.js";

/**
 * Reorder the transceiver's codecs so `codec` (vp8|vp9|h264|av1|opus) comes first.
 * @param {RTCRtpTransceiver} transceiver
 * @param {"audio" | "video"} kind
 * @param {string} codec
 * @returns {boolean} whether the preference was set
 */
export function preferCodec(transceiver, kind, codec) {
  if (!codec || typeof transceiver.setCodecPreferences !== "function") return false;
  const caps = RTCRtpSender.getCapabilities?.(kind);
  if (!caps) return false;
  const mime = `${kind}/${codec}`.toLowerCase();
  const wanted = caps.codecs.filter((c) => c.mimeType.toLowerCase() === mime);
  if (wanted.length === 0) return false;
  if (mime === "video/h264") {
    // Constrained baseline, packetization-mode=1 first: what every decoder plays.
    /** @param {RTCRtpCodec} c */
    const score = (c) => {
      const f = c.sdpFmtpLine || "";
      return (f.includes("packetization-mode=1") ? 2 : 0) + (f.includes("42e01f") ? 1 : 0);
    };
    wanted.sort((a, b) => score(b) - score(a));
  }
  const rest = caps.codecs.filter((c) => c.mimeType.toLowerCase() !== mime);
  transceiver.setCodecPreferences([...wanted, ...rest]);
  return true;
}

/**
 * @typedef {object} PublishOptions
 * @property {string} [videoCodec]  vp8|vp9|h264|av1; empty: the browser's choice
 * @property {number} [maxBitrate]  bit/s
 * @property {number} [maxFramerate]
 */

export class WhipClient extends WebRtcClient {
  /**
   * @param {string} url  the WHIP endpoint, e.g. "/whip/live"
   * @param {MediaStream} stream  what to publish
   * @param {import("./webrtc-client.js").ClientOptions & PublishOptions} [options]  token: the publish key
   */
  constructor(url, stream, { videoCodec = "", maxBitrate = 0, maxFramerate = 0, ...options } = {}) {
    super(url, "publish", options);
    this.stream = stream;
    this.videoCodec = videoCodec;
    this.maxBitrate = maxBitrate;
    this.maxFramerate = maxFramerate;
  }

  /** @param {RTCPeerConnection} pc */
  prepare(pc) {
    const stream = this.stream;
    for (const track of stream.getTracks()) {
      /** @type {RTCRtpTransceiverInit} */
      const init = { direction: "sendonly", streams: [stream] };
      if (track.kind === "video" && (this.maxBitrate || this.maxFramerate)) {
        /** @type {RTCRtpEncodingParameters} */
        const enc = {};
        if (this.maxBitrate) enc.maxBitrate = this.maxBitrate;
        if (this.maxFramerate) enc.maxFramerate = this.maxFramerate;
        init.sendEncodings = [enc];
      }
      const transceiver = pc.addTransceiver(track, init);
      if (track.kind === "video") preferCodec(transceiver, "video", this.videoCodec);
      if (track.kind === "audio") preferCodec(transceiver, "audio", "opus");
    }
  }

  /**
   * Publish; resolves with the connection once the answer is applied.
   * @returns {Promise<RTCPeerConnection>}
   */
  async publish() {
    const pc = await this.connect();
    await keepResolution(pc, this.maxBitrate);
    return pc;
  }
}

/**
 * Hold the resolution and cap the bitrate of the video sender (the quality the streamer chose).
 * @param {RTCPeerConnection} pc
 * @param {number} maxBitrate
 */
async function keepResolution(pc, maxBitrate) {
  for (const sender of pc.getSenders()) {
    if (!sender.track || sender.track.kind !== "video") continue;
    try {
      const params = sender.getParameters();
      if (!params.encodings || params.encodings.length === 0) params.encodings = [{}];
      if (maxBitrate) params.encodings[0].maxBitrate = maxBitrate;
      /** @type {any} */ (params).degradationPreference = "maintain-resolution";
      await sender.setParameters(params);
    } catch {
      // older browsers: the sendEncodings given at addTransceiver still apply
    }
  }
}
