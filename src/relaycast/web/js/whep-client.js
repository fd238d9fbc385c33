// @ts-check
// WHEP client: receive a stream with one HTTP POST of a recvonly SDP offer.

import { checkAnswer } from "./http-util.js";
import { layerUrlFromLinks } from "./layers.js";
import { WebRtcClient } from "./webrtc-client.js";

/**
 * A WHEP session the viewer page began before its modules arrived (the inline script at the
 * top of watch.html's body): the connection with its two recvonly transceivers, the stream of
 * their tracks, the fetch of the offer's POST to `url` with `token`, and `applied`: true once
 * a 201's answer is set on the connection, false when the POST was not answered with a 201
 * (its body is then unread).
 * @typedef {object} WhepHeadStart
 * @property {RTCPeerConnection} pc
 * @property {string} url
 * @property {string} token
 * @property {MediaStream} stream
 * @property {Promise<Response>} response
 * @property {Promise<boolean>} applied
 */

export class WhepClient extends WebRtcClient {
  /**
   * @param {string} url  the WHEP endpoint, e.g. "/whep/live"
   * @param {import("./webrtc-client.js").ClientOptions} [options]  token: a viewer token
   */
  constructor(url, options = {}) {
    super(url, "watch", options);
    /** The received tracks; they play once the streamer is live. */
    this.stream = new MediaStream();
    /** @type {WhepHeadStart | null} */
    this.headStart = null;
    /** Whether this client's session is the one the page began early. */
    this.adopted = false;
    /** @type {WhepHeadStart | null} */
    this.early = null;
  }

  /**
   * Take over a session the page began early (once; it must be for this endpoint and token).
   * @param {WhepHeadStart | null | undefined} headStart
   * @returns {boolean} whether it will be used
   */
  adopt(headStart) {
    const state = headStart?.pc.signalingState;
    if (!headStart || (state !== "have-local-offer" && state !== "stable")) return false;
    if (new URL(headStart.url, location.href).href !== this.url || headStart.token !== this.token) return false;
    this.headStart = headStart;
    return true;
  }

  begin() {
    const early = this.headStart;
    this.headStart = null;
    if (!early) return super.begin();
    this.adopted = true;
    this.early = early;
    this.stream = early.stream;
    const pc = early.pc;
    this.listen(pc);
    return { pc, answer: checkAnswer(early.response, this.what) };
  }

  /**
   * @param {RTCPeerConnection} pc
   * @param {Response} resp
   */
  async applyAnswer(pc, resp) {
    if (this.early?.pc === pc) {
      if (!(await this.early.applied)) throw new Error("the early session's answer was not applied");
      return;
    }
    await super.applyAnswer(pc, resp);
  }

  /** @param {RTCPeerConnection} pc */
  prepare(pc) {
    this.listen(pc);
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
  }

  /**
   * Collect the connection's incoming tracks into this.stream.
   * @param {RTCPeerConnection} pc
   */
  listen(pc) {
    const stream = this.stream;
    pc.addEventListener("track", (ev) => {
      if (!stream.getTracks().includes(ev.track)) stream.addTrack(ev.track);
    });
  }

  /**
   * The session's layer resource (the WHEP layer extension): the URL the 201's Link
   * rel="urn:ietf:params:whep:ext:core:layer" names, else `{session URL}/layer` (relaycast's);
   * null before the answer.
   * @returns {{url: string, announced: boolean} | null}
   */
  layerResource() {
    if (!this.resourceUrl) return null;
    const linked = layerUrlFromLinks(this.linkHeader, this.resourceUrl);
    if (linked) return { url: linked, announced: true };
    return { url: `${this.resourceUrl.replace(/\/+$/, "")}/layer`, announced: false };
  }

  /**
   * The mid of the connection's video transceiver (the WHEP layer extension's mediaId).
   * @returns {string | null}
   */
  videoMid() {
    const t = this.pc?.getTransceivers().find((x) => x.receiver.track.kind === "video");
    return t?.mid ?? null;
  }

  /**
   * Connect; resolves with `{pc, stream}`.
   * @returns {Promise<{pc: RTCPeerConnection, stream: MediaStream}>}
   */
  async view() {
    const pc = await this.connect();
    return { pc, stream: this.stream };
  }
}
