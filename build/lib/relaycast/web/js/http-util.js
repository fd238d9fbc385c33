// Small helpers shared by the WHIP and WHEP clients and the pages.

/** Error thrown for a non-2xx answer; carries the RFC 9457 problem document when there is one. */
export class HttpError extends Error {
  constructor(message, { status = 0, detail = "", title = "", problem = null } = {}) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.detail = detail;
    this.title = title;
    this.problem = problem;
  }
}

/** Build an HttpError from a failed fetch Response (reads application/problem+json). */
export async function errorFromResponse(resp, what) {
  let problem = null;
  let detail = "";
  let title = resp.statusText || "";
  const type = resp.headers.get("Content-Type") || "";
  try {
    if (type.includes("json")) {
      problem = await resp.json();
      detail = problem.detail || "";
      title = problem.title || title;
    } else {
      detail = (await resp.text()).slice(0, 300);
    }
  } catch {
    // body unreadable: keep the status line
  }
  const message = `${what} failed: ${resp.status} ${title}${detail ? ` — ${detail}` : ""}`;
  return new HttpError(message, { status: resp.status, detail, title, problem });
}

/**
 * End a WHIP/WHEP session: DELETE its resource (RFC 9725 §4.3), then close the connection.
 * DELETE goes first: closing first lets the server end the session on its own (DTLS
 * close_notify) and the DELETE would then find nothing (404). A failed DELETE is harmless:
 * the server also frees the session once ICE consent expires (RFC 7675).
 */
export async function endSession(pc, resource, token) {
  if (resource) {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    try {
      await fetch(resource, {
        method: "DELETE",
        headers,
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
 */
export async function postOffer(url, sdp, token, what) {
  const headers = { "Content-Type": "application/sdp" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let resp;
  try {
    resp = await fetch(url, { method: "POST", headers, body: sdp });
  } catch (err) {
    throw new HttpError(`${what} failed: server unreachable (${err.message})`, { status: 0 });
  }
  if (resp.status !== 201) throw await errorFromResponse(resp, what);
  return resp;
}

/** Resolve a Location header against the endpoint URL. */
export function resolveLocation(resp, base) {
  const loc = resp.headers.get("Location");
  return loc ? new URL(loc, base).href : null;
}

/**
 * Parse `Link: <url>; rel="ice-server"; username="u"; credential="p"` values (RFC 9725 §4.6)
 * into RTCIceServer dictionaries.
 */
export function parseIceServerLinks(header) {
  if (!header) return [];
  const servers = [];
  const re = /<([^>]+)>([^,]*)/g;
  let m;
  while ((m = re.exec(header)) !== null) {
    const params = {};
    for (const part of m[2].split(";")) {
      const [k, ...rest] = part.trim().split("=");
      if (!k) continue;
      params[k.trim().toLowerCase()] = rest.join("=").trim().replace(/^"|"$/g, "");
    }
    if (params.rel !== "ice-server") continue;
    const server = { urls: m[1] };
    if (params.username) server.username = params.username;
    if (params.credential) server.credential = params.credential;
    servers.push(server);
  }
  return servers;
}

/** The `{stream}` part of /publish/{stream} or /watch/{stream}. */
export function streamNameFromPath(pathname = location.pathname) {
  const parts = pathname.split("/").filter(Boolean);
  return parts.length >= 2 ? decodeURIComponent(parts[1]) : "live";
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
