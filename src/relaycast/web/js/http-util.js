// @ts-check
// Small helpers shared by the WHIP and WHEP clients and the pages.

/**
 * @typedef {object} HttpErrorInit
 * @property {number} [status]  HTTP status; 0 when the server could not be reached
 * @property {string} [detail]  the problem document's `detail` (RFC 9457)
 * @property {string} [title]
 * @property {Record<string, unknown> | null} [problem]
 * @property {number | null} [retryAfterMs]  from a Retry-After header
 */

/** Error thrown for a non-2xx answer; carries the RFC 9457 problem document when there is one. */
export class HttpError extends Error {
  /**
   * @param {string} message
   * @param {HttpErrorInit} [init]
   */
  constructor(message, { status = 0, detail = "", title = "", problem = null, retryAfterMs = null } = {}) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.detail = detail;
    this.title = title;
    this.problem = problem;
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * A Retry-After value (delay-seconds or an HTTP date) in ms, or null.
 * @param {string | null} value
 * @param {number} [now]
 * @returns {number | null}
 */
export function parseRetryAfter(value, now = Date.now()) {
  if (!value) return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

/**
 * Build an HttpError from a failed fetch Response (reads application/problem+json).
 * @param {Response} resp
 * @param {string} what  what was tried ("publish", "watch"), for the message
 * @returns {Promise<HttpError>}
 */
export async function errorFromResponse(resp, what) {
  /** @type {Record<string, unknown> | null} */
  let problem = null;
  let detail = "";
  let title = resp.statusText || "";
  const type = resp.headers.get("Content-Type") || "";
  try {
    if (type.includes("json")) {
      problem = await resp.json();
      detail = typeof problem?.detail === "string" ? problem.detail : "";
      title = typeof problem?.title === "string" ? problem.title : title;
    } else {
      detail = (await resp.text()).slice(0, 300);
    }
  } catch {
    // body unreadable: keep the status line
  }
  const message = `${what} failed: ${resp.status} ${title}${detail ? ` — ${detail}` : ""}`;
  const retryAfterMs = parseRetryAfter(resp.headers.get("Retry-After"));
  return new HttpError(message, { status: resp.status, detail, title, problem, retryAfterMs });
}

/**
 * `Authorization: Bearer` headers for `token` (none without one).
 * @param {string} token
 * @returns {Record<string, string>}
 */
export function bearer(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/**
 * End a WHIP/WHEP session: DELETE its resource (RFC 9725 §4.3), then close the connection.
 * DELETE goes first: closing first lets the server end the session on its own (DTLS
 * close_notify) and the DELETE would then find nothing (404). A failed DELETE is harmless:
 * the server also frees the session once ICE consent expires (RFC 7675).
 * @param {RTCPeerConnection | null} pc
 * @param {string | null} resource
 * @param {string} token
 */
export async function endSession(pc, resource, token) {
  if (resource) {
    try {
      await fetch(resource, {
        method: "DELETE",
        headers: bearer(token),
        keepalive: true,
        signal: AbortSignal.timeout(2000),
      });
    } catch {
      // consent expiry frees the session anyway
    }
  }
  if (pc) pc.close();
}

/**
 * POST an SDP offer to a WHIP/WHEP endpoint (RFC 9725 §4.2); returns the 201 response or throws
 * an HttpError (status 0 when the server cannot be reached).
 * @param {string} url
 * @param {string} sdp
 * @param {string} token  sent as `Authorization: Bearer` when not empty
 * @param {string} what
 * @returns {Promise<Response>}
 */
export async function postOffer(url, sdp, token, what) {
  const headers = { "Content-Type": "application/sdp", ...bearer(token) };
  return checkAnswer(fetch(url, { method: "POST", headers, body: sdp }), what);
}

/**
 * The 201 of an offer's POST, or an HttpError (status 0 when the server cannot be reached).
 * @param {Promise<Response>} pending  the fetch of the POST
 * @param {string} what
 * @returns {Promise<Response>}
 */
export async function checkAnswer(pending, what) {
  let resp;
  try {
    resp = await pending;
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new HttpError(`${what} failed: server unreachable (${why})`, { status: 0 });
  }
  if (resp.status !== 201) throw await errorFromResponse(resp, what);
  return resp;
}

/**
 * Resolve a Location header against the endpoint URL.
 * @param {Response} resp
 * @param {string} base
 * @returns {string | null}
 */
export function resolveLocation(resp, base) {
  const loc = resp.headers.get("Location");
  return loc ? new URL(loc, base).href : null;
}

/**
 * Parse a Link header (RFC 8288; several headers arrive joined by ", ") into its links:
 * `{url, params}` with lower-case parameter names, quoted strings unquoted.
 * @param {string | null} header
 * @returns {{url: string, params: Record<string, string>}[]}
 */
export function parseLinkHeader(header) {
  /** @type {{url: string, params: Record<string, string>}[]} */
  const links = [];
  if (!header) return links;
  const s = header;
  let i = 0;
  const skip = (/** @type {RegExp} */ re) => {
    while (i < s.length && re.test(s[i])) i++;
  };
  while (i < s.length) {
    skip(/[\s,]/);
    if (s[i] !== "<") {
      // not a link-value: skip to the next comma outside quotes
      let quoted = false;
      while (i < s.length && (quoted || s[i] !== ",")) {
        if (s[i] === '"') quoted = !quoted;
        else if (s[i] === "\\" && quoted) i++;
        i++;
      }
      continue;
    }
    const end = s.indexOf(">", i);
    if (end < 0) break;
    const url = s.slice(i + 1, end).trim();
    i = end + 1;
    /** @type {Record<string, string>} */
    const params = {};
    for (;;) {
      skip(/\s/);
      if (s[i] !== ";") break;
      i++;
      skip(/\s/);
      const nameStart = i;
      while (i < s.length && !/[\s=;,]/.test(s[i])) i++;
      const name = s.slice(nameStart, i).toLowerCase();
      skip(/\s/);
      let value = "";
      if (s[i] === "=") {
        i++;
        skip(/\s/);
        if (s[i] === '"') {
          i++;
          while (i < s.length && s[i] !== '"') {
            if (s[i] === "\\" && i + 1 < s.length) i++;
            value += s[i];
            i++;
          }
          i++; // closing quote
        } else {
          const valueStart = i;
          while (i < s.length && !/[\s;,]/.test(s[i])) i++;
          value = s.slice(valueStart, i);
        }
      }
      if (name && !(name in params)) params[name] = value;
    }
    links.push({ url, params });
  }
  return links;
}

/**
 * The STUN/TURN servers of `Link: <url>; rel="ice-server"; username="u"; credential="p"`
 * values (RFC 9725 §4.6) as RTCIceServer dictionaries.
 * @param {string | null} header
 * @returns {RTCIceServer[]}
 */
export function parseIceServerLinks(header) {
  /** @type {RTCIceServer[]} */
  const servers = [];
  for (const { url, params } of parseLinkHeader(header)) {
    if (!(params.rel || "").toLowerCase().split(/\s+/).includes("ice-server")) continue;
    if (!/^(stuns?|turns?):/i.test(url)) continue;
    /** @type {RTCIceServer} */
    const server = { urls: url };
    if (params.username) server.username = params.username;
    if (params.credential) server.credential = params.credential;
    servers.push(server);
  }
  return servers;
}

/**
 * The `{stream}` part of /publish/{stream} or /watch/{stream}.
 * @param {string} [pathname]
 * @returns {string}
 */
export function streamNameFromPath(pathname = location.pathname) {
  const parts = pathname.split("/").filter(Boolean);
  return parts.length >= 2 ? decodeURIComponent(parts[1]) : "live";
}

/**
 * @param {number} ms
 * @returns {Promise<void>}
 */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The message of anything thrown.
 * @param {unknown} err
 * @returns {string}
 */
export function errorMessage(err) {
  return err instanceof Error ? err.message : String(err);
}
