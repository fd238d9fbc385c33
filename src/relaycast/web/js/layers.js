// @ts-check
// The WHEP layer extension, client side: which simulcast layer a viewer receives, why, and
// pinning one.
//
// The WHEP 201 names the session's layer resource in
//   Link: <URL>; rel="urn:ietf:params:whep:ext:core:layer"
// (relaycast: `{session URL}/layer`, which is also tried when the header is missing).
//   GET  -> {"mode": "auto"|"pinned", "current": rid|null, "target": rid|null, "reason": str,
//            "estimate_bps": int|null, "layers": [{"rid", "width", "height", "fps",
//            "bitrate_bps", "active"}]}
//   POST {"mediaId": mid, "encodingId": rid} pins a layer (204); {} returns to automatic.
// A server without the extension answers 404 (or 405/501): the control reports itself
// unavailable and the page hides its menu.

import { bearer, parseLinkHeader } from "./http-util.js";

export const LAYER_REL = "urn:ietf:params:whep:ext:core:layer";

/**
 * @typedef {object} LayerInfo
 * @property {string} rid
 * @property {number | null} width
 * @property {number | null} height
 * @property {number | null} fps
 * @property {number | null} bitrate_bps
 * @property {boolean} active
 */

/**
 * @typedef {object} LayerStatus
 * @property {"auto" | "pinned"} mode
 * @property {string | null} current  the rid being forwarded (null: none, e.g. video paused)
 * @property {string | null} target  the rid being switched to
 * @property {string} reason
 * @property {number | null} estimate_bps
 * @property {LayerInfo[]} layers  highest first
 */

/**
 * The layer URL of a WHEP 201's Link header, resolved against `base` (the session URL), or null.
 * @param {string | null} linkHeader
 * @param {string} base
 * @returns {string | null}
 */
export function layerUrlFromLinks(linkHeader, base) {
  for (const { url, params } of parseLinkHeader(linkHeader)) {
    const rels = (params.rel || "").toLowerCase().split(/\s+/);
    if (!rels.includes(LAYER_REL)) continue;
    try {
      return new URL(url, base).href;
    } catch {
      return null;
    }
  }
  return null;
}

/**
 * @param {unknown} v
 * @returns {number | null}
 */
function num(v) {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

/**
 * @param {unknown} v
 * @returns {string | null}
 */
function str(v) {
  return typeof v === "string" ? v : null;
}

/**
 * A LayerStatus from untrusted JSON (null when it is not one); layers sorted highest first.
 * @param {unknown} raw
 * @returns {LayerStatus | null}
 */
export function parseLayerStatus(raw) {
  if (!raw || typeof raw !== "object") return null;
  const o = /** @type {Record<string, unknown>} */ (raw);
  const list = Array.isArray(o.layers) ? o.layers : [];
  /** @type {LayerInfo[]} */
  const layers = [];
  for (const item of list) {
    if (!item || typeof item !== "object") continue;
    const l = /** @type {Record<string, unknown>} */ (item);
    const rid = str(l.rid);
    if (!rid) continue;
    layers.push({
      rid,
      width: num(l.width),
      height: num(l.height),
      fps: num(l.fps),
      bitrate_bps: num(l.bitrate_bps),
      active: l.active !== false,
    });
  }
  layers.sort(
    (a, b) =>
      (b.height ?? -1) - (a.height ?? -1) || (b.bitrate_bps ?? -1) - (a.bitrate_bps ?? -1) || a.rid.localeCompare(b.rid),
  );
  return {
    mode: o.mode === "pinned" ? "pinned" : "auto",
    current: str(o.current),
    target: str(o.target),
    reason: str(o.reason) ?? "",
    estimate_bps: num(o.estimate_bps),
    layers,
  };
}

/**
 * A layer's name for people: its height ("720p"), with the rid when the height is unknown or
 * shared with another layer.
 * @param {LayerInfo | undefined} layer
 * @param {LayerInfo[]} [all]
 * @returns {string}
 */
export function layerLabel(layer, all = []) {
  if (!layer) return "—";
  if (!layer.height) return layer.rid;
  const shared = all.some((o) => o !== layer && o.height === layer.height);
  return shared ? `${layer.height}p (${layer.rid})` : `${layer.height}p`;
}

/**
 * @typedef {object} LayerControlOptions
 * @property {string} url  the layer resource
 * @property {boolean} [announced]  the 201's Link header named it (else it is a guess)
 * @property {() => string | null} mediaId  the mid of the viewer's video
 * @property {string} [token]  sent as `Authorization: Bearer` when not empty
 * @property {(control: LayerControl) => void} [onUpdate]  after every poll and pin
 * @property {number} [intervalMs]
 * @property {() => boolean} [shouldPoll]  false skips a poll (page hidden, not playing)
 */

/** Polls one WHEP session's layer resource and pins layers. */
export class LayerControl {
  /** @param {LayerControlOptions} options */
  constructor(options) {
    this.options = options;
    this.url = options.url;
    /** null: not known yet; false: the server has no layer extension (or the session is gone) */
    /** @type {boolean | null} */
    this.available = null;
    /** @type {LayerStatus | null} */
    this.status = null;
    /** The last failure, in words ("" when the last request worked). */
    this.error = "";
    this.running = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
    this.polls = 0;
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.#loop();
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
  }

  async #loop() {
    if (!this.running) return;
    const o = this.options;
    if (!o.shouldPoll || o.shouldPoll()) await this.refresh();
    if (!this.running) return;
    // a server without the extension: stop asking; an announced one that 404s (session being
    // replaced): ask less often
    if (this.available === false && !o.announced) return this.stop();
    const every = this.available === false ? 5000 : (o.intervalMs ?? 1000);
    this.timer = setTimeout(() => this.#loop(), every);
  }

  /** GET the layer resource once. */
  async refresh() {
    this.polls += 1;
    let resp;
    try {
      resp = await fetch(this.url, { headers: bearer(this.options.token ?? ""), cache: "no-store" });
    } catch (err) {
      this.error = `layer status unreachable (${err instanceof Error ? err.message : err})`;
      this.#updated();
      return this.status;
    }
    if (resp.status === 404 || resp.status === 405 || resp.status === 501) {
      this.available = false;
      this.status = null;
      this.error = "";
    } else if (resp.ok) {
      const status = parseLayerStatus(await resp.json().catch(() => null));
      if (status) {
        this.available = true;
        this.status = status;
        this.error = "";
      } else {
        this.error = "the layer status is not JSON the page understands";
      }
    } else {
      this.error = `layer status: HTTP ${resp.status}`;
    }
    this.#updated();
    return this.status;
  }

  /**
   * Pin the layer `rid`, or return to automatic selection with null.
   * @param {string | null} rid
   * @returns {Promise<boolean>} whether the server took it
   */
  async pin(rid) {
    const mid = this.options.mediaId();
    /** @type {Record<string, string>} */
    const body = rid == null ? {} : { mediaId: mid ?? "", encodingId: rid };
    let resp;
    try {
      resp = await fetch(this.url, {
        method: "POST",
        headers: { "Content-Type": "application/json", ...bearer(this.options.token ?? "") },
        body: JSON.stringify(body),
      });
    } catch (err) {
      this.error = `could not reach the server (${err instanceof Error ? err.message : err})`;
      this.#updated();
      return false;
    }
    if (!resp.ok) {
      let detail = "";
      try {
        const problem = await resp.json();
        detail = typeof problem?.detail === "string" ? problem.detail : "";
      } catch {
        // no problem document
      }
      this.error = `the server refused the layer (${resp.status}${detail ? `: ${detail}` : ""})`;
      this.#updated();
      return false;
    }
    this.error = "";
    if (this.status) {
      // show the choice at once; the next GET confirms it
      this.status = { ...this.status, mode: rid == null ? "auto" : "pinned", target: rid ?? this.status.target };
    }
    await this.refresh();
    return true;
  }

  #updated() {
    this.options.onUpdate?.(this);
  }
}
