// WHIP client (RFC 9725): publish a MediaStream with one HTTP POST of an SDP offer.
//
// relaycast is ICE-lite with host candidates in its answer, so the offer is sent at once
// without waiting for ICE gathering (RFC 9725 §4.1 allows it; no trickle needed).

import { endSession, parseIceServerLinks, postOffer, resolveLocation } from "./http-util.js";

/** Reorder the transceiver's codecs so `codec` (vp8|vp9|h264|av1) comes first. */
export function preferCodec(transceiver, kind, codec) {
  if (!codec || typeof transceiver.setCodecPreferences !== "function") return false;
  const caps = RTCRtpSender.getCapabilities?.(kind);
  if (!caps) return false;
  const mime = `${kind}/${codec}`.toLowerCase();
  const wanted = caps.codecs.filter((c) => c.mimeType.toLowerCase() === mime);
  if (wanted.length === 0) return false;
  if (mime === "video/h264") {
    // Constrained baseline, packetization-mode=1 first: what every decoder plays.
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

export class WhipClient {
  /**
   * @param {string} url  the WHIP endpoint, e.g. "/whip/live"
   * @param {{token?: string, iceServers?: RTCIceServer[]}} options
   */
  constructor(url, { token = "", iceServers = [] } = {}) {
    this.url = new URL(url, location.href).href;
    this.token = token;
    this.iceServers = iceServers;
    this.pc = null;
    this.resourceUrl = null;
    this.etag = null;
  }

  /**
   * Publish `stream`; resolves with the RTCPeerConnection once the answer is applied.
   * Throws an HttpError (with .status and .detail from the problem document) on refusal.
   * @param {MediaStream} stream
   * @param {{videoCodec?: string, maxBitrate?: number, maxFramerate?: number}} options
   */
  async publish(stream, { videoCodec = "", maxBitrate = 0, maxFramerate = 0 } = {}) {
    if (this.pc) throw new Error("already publishing; call stop() first");
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: "max-bundle" });
    this.pc = pc;
    try {
      for (const track of stream.getTracks()) {
        const init = { direction: "sendonly", streams: [stream] };
        if (track.kind === "video" && (maxBitrate || maxFramerate)) {
          const enc = {};
          if (maxBitrate) enc.maxBitrate = maxBitrate;
          if (maxFramerate) enc.maxFramerate = maxFramerate;
          init.sendEncodings = [enc];
        }
        const transceiver = pc.addTransceiver(track, init);
        if (track.kind === "video") preferCodec(transceiver, "video", videoCodec);
        if (track.kind === "audio") preferCodec(transceiver, "audio", "opus");
      }
      await pc.setLocalDescription(await pc.createOffer());

      const resp = await postOffer(this.url, pc.localDescription.sdp, this.token, "publish");
      this.resourceUrl = resolveLocation(resp, this.url);
      this.etag = resp.headers.get("ETag");
      const linked = parseIceServerLinks(resp.headers.get("Link"));
      if (linked.length && !this.iceServers.length) {
        try {
          pc.setConfiguration({ ...pc.getConfiguration(), iceServers: linked });
        } catch {
          // not fatal: relaycast answers with reachable host candidates
        }
      }
      await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
      await this.#keepQualityFixed(pc, maxBitrate);
      return pc;
    } catch (err) {
      pc.close();
      this.pc = null;
      throw err;
    }
  }

  // The streamer chose the quality up front: hold resolution, cap the bitrate.
  async #keepQualityFixed(pc, maxBitrate) {
    for (const sender of pc.getSenders()) {
      if (!sender.track || sender.track.kind !== "video") continue;
      try {
        const params = sender.getParameters();
        if (!params.encodings || params.encodings.length === 0) params.encodings = [{}];
        if (maxBitrate) params.encodings[0].maxBitrate = maxBitrate;
        params.degradationPreference = "maintain-resolution";
        await sender.setParameters(params);
      } catch {
        // older browsers: the sendEncodings given at addTransceiver still apply
      }
    }
  }

  /** End the session: DELETE the WHIP resource (RFC 9725 §4.3) and close the connection. */
  async stop() {
    const pc = this.pc;
    const resource = this.resourceUrl;
    this.pc = null;
    this.resourceUrl = null;
    await endSession(pc, resource, this.token);
  }
}
