// @ts-check
// The page's configuration, put in the HTML by the server (http/pages.py) so that the page
// needs no extra round trip before it connects:
//   <script id="relaycast-config" type="application/json">{"iceServers": [...], "https": false}</script>
// A server that does not write it (or writes nonsense) means: no STUN/TURN servers.

/**
 * @typedef {object} PageConfig
 * @property {RTCIceServer[]} iceServers  STUN/TURN servers for RTCPeerConnection
 * @property {boolean} https  the server serves HTTPS
 */

/**
 * One RTCIceServer dictionary from untrusted JSON, or null when it is not one.
 * @param {unknown} raw
 * @returns {RTCIceServer | null}
 */
export function toIceServer(raw) {
  if (!raw || typeof raw !== "object") return null;
  const o = /** @type {Record<string, unknown>} */ (raw);
  const urls = Array.isArray(o.urls) ? o.urls.filter((u) => typeof u === "string") : o.urls;
  if (!(typeof urls === "string" || (Array.isArray(urls) && urls.length))) return null;
  /** @type {RTCIceServer} */
  const server = { urls: /** @type {string | string[]} */ (urls) };
  if (typeof o.username === "string") server.username = o.username;
  if (typeof o.credential === "string") server.credential = o.credential;
  return server;
}

/**
 * Read the `relaycast-config` script tag of `doc`.
 * @param {Document} [doc]
 * @returns {PageConfig}
 */
export function readPageConfig(doc = document) {
  const el = doc.getElementById("relaycast-config");
  /** @type {Record<string, unknown>} */
  let raw = {};
  if (el && el.textContent) {
    try {
      const parsed = JSON.parse(el.textContent);
      if (parsed && typeof parsed === "object") raw = parsed;
    } catch {
      // a broken tag is the same as none
    }
  }
  const list = Array.isArray(raw.iceServers) ? raw.iceServers : [];
  const iceServers = /** @type {RTCIceServer[]} */ (list.map(toIceServer).filter(Boolean));
  const https = typeof raw.https === "boolean" ? raw.https : globalThis.location?.protocol === "https:";
  return { iceServers, https };
}
