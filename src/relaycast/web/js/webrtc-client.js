// @ts-check
// The part of a WHIP (RFC 9725) or WHEP client that both directions share: one
// RTCPeerConnection, one HTTP POST of the SDP offer, the answer, the session's resource URL,
// the STUN/TURN servers the answer announces, and the DELETE at the end.
//
// relaycast is ICE-lite with its candidates in the answer, so the offer is sent at once
// without waiting for ICE gathering (RFC 9725 §4.1 allows it; no trickle needed).
// Subclasses add their transceivers in prepare(pc) (WhipClient: send, WhepClient: receive).

import { endSession, parseIceServerLinks, postOffer, resolveLocation } from "./http-util.js";

/**
 * @typedef {object} ClientOptions
 * @property {string} [token]  sent as `Authorization: Bearer` (publish key or viewer token)
 * @property {RTCIceServer[]} [iceServers]  STUN/TURN servers for the RTCPeerConnection
 */

export class WebRtcClient {
  /**
   * @param {string} url  the WHIP or WHEP endpoint, e.g. "/whep/live"
   * @param {string} what  "publish" or "watch", for error messages
   * @param {ClientOptions} [options]
   */
  constructor(url, what, { token = "", iceServers = [] } = {}) {
    this.url = new URL(url, location.href).href;
    this.what = what;
    this.token = token;
    this.iceServers = iceServers;
    /** @type {RTCPeerConnection | null} */
    this.pc = null;
    /** @type {string | null} */
    this.resourceUrl = null;
    /** @type {string | null} */
    this.etag = null;
    /** The servers announced by the answer's Link headers (empty when it had none). */
    /** @type {RTCIceServer[]} */
    this.linkedIceServers = [];
    /** The 201's Link header(s), joined (null before the answer or without one). */
    /** @type {string | null} */
    this.linkHeader = null;
  }

  /**
   * Add the transceivers of this direction; called on the fresh connection before the offer.
   * @param {RTCPeerConnection} pc
   * @returns {void}
   */
  prepare(pc) {
    void pc;
  }

  /**
   * Create the connection and send the offer: `{pc, answer}`, the answer being the 201
   * (postOffer's rules). WhepClient overrides it to adopt a session the page began early.
   * @returns {{pc: RTCPeerConnection, answer: Promise<Response>}}
   */
  begin() {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: "max-bundle" });
    this.prepare(pc);
    const answer = (async () => {
      await pc.setLocalDescription(await pc.createOffer());
      return postOffer(this.url, pc.localDescription?.sdp ?? "", this.token, this.what);
    })();
    return { pc, answer };
  }

  /**
   * Open the session: offer, POST, answer. Resolves with the connection once the answer is
   * applied; throws an HttpError (.status, .detail, .retryAfterMs) when the server refuses.
   * @returns {Promise<RTCPeerConnection>}
   */
  async connect() {
    if (this.pc) throw new Error(`already connected (${this.what}); call stop() first`);
    const started = this.begin();
    const pc = started.pc;
    this.pc = pc;
    try {
      const resp = await started.answer;
      this.resourceUrl = resolveLocation(resp, this.url);
      this.etag = resp.headers.get("ETag");
      this.linkHeader = resp.headers.get("Link");
      this.linkedIceServers = parseIceServerLinks(this.linkHeader);
      if (this.linkedIceServers.length && !this.iceServers.length) {
        // The page had no servers (no config in the HTML): use the answer's for this session.
        try {
          pc.setConfiguration({ ...pc.getConfiguration(), iceServers: this.linkedIceServers });
        } catch {
          // not fatal: relaycast answers with reachable host candidates
        }
      }
      if (this.pc !== pc) throw new Error(`${this.what} stopped`);
      await this.applyAnswer(pc, resp);
      return pc;
    } catch (err) {
      if (this.pc === pc) this.pc = null;
      pc.close();
      throw err;
    }
  }

  /**
   * Set the 201's SDP answer on the connection.
   * @param {RTCPeerConnection} pc
   * @param {Response} resp
   */
  async applyAnswer(pc, resp) {
    await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
  }

  /** End the session: DELETE the resource (RFC 9725 §4.3) and close the connection. */
  async stop() {
    const pc = this.pc;
    const resource = this.resourceUrl;
    this.pc = null;
    this.resourceUrl = null;
    await endSession(pc, resource, this.token);
  }
}
