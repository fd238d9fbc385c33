// @ts-check
// WHIP client (RFC 9725): publish a MediaStream with one HTTP POST of an SDP offer.

import { HttpError } from "./http-util.js";
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
 * @property {RTCRtpEncodingParameters[]} [encodings]  the video's sendEncodings; several with
 *   a `rid` each: simulcast (they win over maxBitrate / maxFramerate)
 */

/**
 * Whether a refused offer was refused for its simulcast (a server that takes one encoding
 * only answers 422 and names it).
 * @param {unknown} err
 * @returns {boolean}
 */
export function isSimulcastRefusal(err) {
  if (!(err instanceof HttpError) || (err.status !== 422 && err.status !== 400 && err.status !== 501)) return false;
  return /simulcast|\brids?\b/i.test(`${err.detail} ${err.title} ${err.message}`);
}

export class WhipClient extends WebRtcClient {
  /**
   * @param {string} url  the WHIP endpoint, e.g. "/whip/live"
   * @param {MediaStream} stream  what to publish
   * @param {import("./webrtc-client.js").ClientOptions & PublishOptions} [options]  token: the publish key
   */
  constructor(url, stream, { videoCodec = "", maxBitrate = 0, maxFramerate = 0, encodings = [], ...options } = {}) {
    super(url, "publish", options);
    this.stream = stream;
    this.videoCodec = videoCodec;
    this.maxBitrate = maxBitrate;
    this.maxFramerate = maxFramerate;
    /** @type {RTCRtpEncodingParameters[]} */
    this.encodings = encodings;
    /** How many video encodings were asked for (several: simulcast). */
    this.wantedLayers = Math.max(1, encodings.length);
    /** Why fewer layers than asked for are sent ("" when none are missing). */
    this.simulcastNote = "";
  }

  /** The video encodings for addTransceiver, or null for the browser's default. */
  videoEncodings() {
    if (this.encodings.length > 1 && /^(vp9|av1)$/i.test(this.videoCodec)) {
      // Chromium encodes several VP9/AV1 encodings without a scalabilityMode as one SVC
      // stream; one spatial layer each makes them real simulcast
      return this.encodings.map((e) => ({ scalabilityMode: "L1T1", ...e }));
    }
    if (this.encodings.length) return this.encodings.map((e) => ({ ...e }));
    if (!this.maxBitrate && !this.maxFramerate) return null;
    /** @type {RTCRtpEncodingParameters} */
    const enc = {};
    if (this.maxBitrate) enc.maxBitrate = this.maxBitrate;
    if (this.maxFramerate) enc.maxFramerate = this.maxFramerate;
    return [enc];
  }

  /** Give up simulcast for this client: one encoding, the top layer's. */
  /** @param {string} why */
  singleEncoding(why) {
    const top = this.encodings[0];
    if (top) {
      const { rid, ...rest } = top;
      void rid;
      this.encodings = [{ ...rest, active: true }];
    }
    this.simulcastNote = why;
  }

  /** @param {RTCPeerConnection} pc */
  prepare(pc) {
    const stream = this.stream;
    for (const track of stream.getTracks()) {
      /** @type {RTCRtpTransceiverInit} */
      const init = { direction: "sendonly", streams: [stream] };
      const encodings = track.kind === "video" ? this.videoEncodings() : null;
      if (encodings) init.sendEncodings = encodings;
      let transceiver;
      try {
        transceiver = pc.addTransceiver(track, init);
      } catch (err) {
        if (!encodings || encodings.length < 2) throw err;
        // a browser without simulcast (or without it for this source): one encoding
        this.singleEncoding(`this browser refused ${encodings.length} encodings (${err instanceof Error ? err.message : err})`);
        transceiver = pc.addTransceiver(track, { ...init, sendEncodings: this.videoEncodings() ?? undefined });
      }
      if (track.kind === "video") preferCodec(transceiver, "video", this.videoCodec);
      if (track.kind === "audio") preferCodec(transceiver, "audio", "opus");
    }
  }

  /**
   * Publish; resolves with the connection once the answer is applied. A server that refuses
   * simulcast gets the offer again with one encoding (simulcastNote says so).
   * @returns {Promise<RTCPeerConnection>}
   */
  async publish() {
    let pc;
    try {
      pc = await this.connect();
    } catch (err) {
      if (this.encodings.length < 2 || !isSimulcastRefusal(err)) throw err;
      this.singleEncoding(`the server takes one encoding only (${err instanceof HttpError ? err.detail || err.status : err})`);
      pc = await this.connect();
    }
    const sent = videoSender(pc)?.getParameters().encodings?.length ?? 1;
    if (this.encodings.length > 1 && sent < this.encodings.length) {
      this.simulcastNote = `the server's answer accepted ${sent} of ${this.encodings.length} encodings`;
    }
    await keepResolution(pc, this.encodings.length > 1 ? 0 : this.encodings[0]?.maxBitrate ?? this.maxBitrate);
    return pc;
  }
}

/**
 * The connection's video sender.
 * @param {RTCPeerConnection} pc
 * @returns {RTCRtpSender | undefined}
 */
export function videoSender(pc) {
  return pc.getSenders().find((s) => s.track?.kind === "video");
}

/**
 * Hold the resolution and cap the bitrate of the video sender (the quality the streamer chose).
 * @param {RTCPeerConnection} pc
 * @param {number} maxBitrate  for a single encoding; 0 leaves the encodings as they are
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
