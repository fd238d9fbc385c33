// WHEP client: receive a stream with one HTTP POST of a recvonly SDP offer.

import { endSession, postOffer, resolveLocation } from "./http-util.js";

export class WhepClient {
  /**
   * @param {string} url  the WHEP endpoint, e.g. "/whep/live"
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

  /** Connect; resolves with `{pc, stream}`. Tracks play once the streamer is live. */
  async view() {
    if (this.pc) throw new Error("already viewing; call stop() first");
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: "max-bundle" });
    this.pc = pc;
    const stream = new MediaStream();
    pc.addEventListener("track", (ev) => {
      if (!stream.getTracks().includes(ev.track)) stream.addTrack(ev.track);
    });
    try {
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
      await pc.setLocalDescription(await pc.createOffer());

      const resp = await postOffer(this.url, pc.localDescription.sdp, this.token, "watch");
      this.resourceUrl = resolveLocation(resp, this.url);
      this.etag = resp.headers.get("ETag");
      await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
      return { pc, stream };
    } catch (err) {
      pc.close();
      this.pc = null;
      throw err;
    }
  }

  /** Leave: DELETE the WHEP resource and close the connection. */
  async stop() {
    const pc = this.pc;
    const resource = this.resourceUrl;
    this.pc = null;
    this.resourceUrl = null;
    await endSession(pc, resource, this.token);
  }
}
