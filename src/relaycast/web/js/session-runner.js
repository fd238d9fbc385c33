// @ts-check
// One reconnecting session, for the streamer page (WHIP) and the viewer page (WHEP) alike.
//
// start() opens a session with a fresh client; the runner then keeps it up:
//   - a refusal the page calls retryable (isRetryable), an unreachable server, an ICE/DTLS
//     failure, or a connection "disconnected" for longer than disconnectGraceMs: a new session
//     after a back-off of baseDelayMs * 2^attempt (at most maxDelayMs, plus up to 20 % jitter,
//     and never sooner than the server's Retry-After);
//   - "connected" resets the back-off;
//   - any other refusal (a wrong key, a bad token) ends the run: onFailed, no retry loop.
// Each new session uses the STUN/TURN servers of the last 201's Link headers (fresh TURN
// credentials), else those the page started with.
// Every callback belongs to one session; a late answer of a session that was replaced or
// stopped is dropped (a generation number), so callbacks never mix two sessions.

import { HttpError } from "./http-util.js";
import { WebRtcClient } from "./webrtc-client.js";

/**
 * Statuses worth another try: unreachable (0), timeout, conflict (a stream still live from a
 * session that is ending), too many requests, server errors. 401/403/404/4xx are final.
 * @param {unknown} err
 * @returns {boolean}
 */
export function defaultRetryable(err) {
  if (!(err instanceof HttpError)) return true; // the connection itself failed
  const s = err.status;
  return s === 0 || s === 408 || s === 409 || s === 429 || s >= 500;
}

/**
 * The back-off before attempt number `attempt` (0-based) in ms.
 * @param {number} attempt
 * @param {{baseDelayMs?: number, maxDelayMs?: number, retryAfterMs?: number | null, jitter?: number}} [options]
 * @returns {number}
 */
export function backoffDelay(attempt, { baseDelayMs = 500, maxDelayMs = 10000, retryAfterMs = null, jitter = 0 } = {}) {
  const exp = Math.min(maxDelayMs, baseDelayMs * 2 ** attempt);
  const delay = exp * (1 + jitter);
  return retryAfterMs != null ? Math.max(delay, Math.min(retryAfterMs, 60000)) : delay;
}

/**
 * @template {WebRtcClient} C
 * @typedef {object} RunnerOptions
 * @property {(iceServers: RTCIceServer[]) => C} createClient  a fresh client for one session
 * @property {(client: C) => Promise<RTCPeerConnection>} [open]  opens it (default: connect())
 * @property {RTCIceServer[]} [iceServers]  for the first session (the page's config)
 * @property {(err: unknown) => boolean} [isRetryable]
 * @property {number} [baseDelayMs]
 * @property {number} [maxDelayMs]
 * @property {number} [disconnectGraceMs]
 * @property {(info: {attempt: number}) => void} [onAttempt]  a session is being opened
 * @property {(pc: RTCPeerConnection, client: C) => void} [onSession]  answered (201) and applied
 * @property {(pc: RTCPeerConnection, state: RTCPeerConnectionState) => void} [onConnectionState]
 * @property {(info: {reason: string, error: unknown, delayMs: number, attempt: number}) => void} [onRetry]
 * @property {(error: unknown) => void} [onFailed]  refused for good; the runner has stopped
 */

/** @template {WebRtcClient} C */
export class SessionRunner {
  /** @param {RunnerOptions<C>} options */
  constructor(options) {
    this.options = options;
    /** STUN/TURN servers for the next session. */
    this.iceServers = options.iceServers ?? [];
    /** Consecutive failed attempts (the back-off exponent). */
    this.attempts = 0;
    this.running = false;
    /** @type {C | null} */
    this.client = null;
    /** @type {RTCPeerConnection | null} */
    this.pc = null;
    /** @type {unknown} */
    this.lastError = null;
    this.generation = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.retryTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.graceTimer = undefined;
  }

  /** Start (or restart) the run with a new session at once. */
  start() {
    this.running = true;
    this.attempts = 0;
    return this.#attempt();
  }

  /** Stop: no more retries; DELETE the session and close its connection. */
  async stop() {
    this.running = false;
    this.generation++;
    clearTimeout(this.retryTimer);
    clearTimeout(this.graceTimer);
    const client = this.client;
    this.client = null;
    this.pc = null;
    if (client) await client.stop();
  }

  /**
   * Give up on the current session and retry after the back-off (e.g. the page saw the
   * media stall for good).
   * @param {string} reason
   * @param {unknown} [error]
   */
  retry(reason, error = null) {
    if (this.running) this.#scheduleRetry(reason, error);
  }

  async #attempt() {
    clearTimeout(this.retryTimer);
    clearTimeout(this.graceTimer);
    if (!this.running) return;
    const gen = ++this.generation;
    const old = this.client;
    this.client = null;
    this.pc = null;
    if (old) await old.stop();
    if (gen !== this.generation) return;
    const o = this.options;
    o.onAttempt?.({ attempt: this.attempts });
    const client = o.createClient(this.iceServers);
    this.client = client;
    let pc;
    try {
      pc = await (o.open ? o.open(client) : client.connect());
    } catch (err) {
      if (gen !== this.generation) return;
      this.lastError = err;
      if ((o.isRetryable ?? defaultRetryable)(err)) {
        this.#scheduleRetry(reasonOf(err), err);
      } else {
        this.running = false;
        this.client = null;
        o.onFailed?.(err);
      }
      return;
    }
    if (gen !== this.generation) {
      client.stop();
      return;
    }
    if (client.linkedIceServers.length) this.iceServers = client.linkedIceServers;
    this.pc = pc;
    pc.addEventListener("connectionstatechange", () => this.#onConnectionState(gen, pc));
    o.onSession?.(pc, client);
    this.#onConnectionState(gen, pc);
  }

  /**
   * @param {number} gen
   * @param {RTCPeerConnection} pc
   */
  #onConnectionState(gen, pc) {
    if (gen !== this.generation || !this.running) return;
    const state = pc.connectionState;
    switch (state) {
      case "connected":
        clearTimeout(this.graceTimer);
        this.attempts = 0;
        this.lastError = null;
        break;
      case "disconnected":
        clearTimeout(this.graceTimer);
        this.graceTimer = setTimeout(() => {
          if (gen === this.generation && pc.connectionState === "disconnected") {
            this.#scheduleRetry("Connection lost", null);
          }
        }, this.options.disconnectGraceMs ?? 3000);
        break;
      case "failed":
        this.#scheduleRetry("Connection lost", null);
        break;
      default:
        break;
    }
    this.options.onConnectionState?.(pc, state);
  }

  /**
   * @param {string} reason
   * @param {unknown} error
   */
  #scheduleRetry(reason, error) {
    clearTimeout(this.retryTimer);
    clearTimeout(this.graceTimer);
    this.generation++; // the current session's callbacks are over
    const delayMs = backoffDelay(this.attempts, {
      baseDelayMs: this.options.baseDelayMs,
      maxDelayMs: this.options.maxDelayMs,
      retryAfterMs: error instanceof HttpError ? error.retryAfterMs : null,
      jitter: Math.random() * 0.2,
    });
    const attempt = this.attempts;
    this.attempts += 1;
    this.options.onRetry?.({ reason, error, delayMs, attempt });
    this.retryTimer = setTimeout(() => this.#attempt(), delayMs);
  }
}

/**
 * A short reason for a failed attempt, for "… — retrying in N s".
 * @param {unknown} err
 * @returns {string}
 */
function reasonOf(err) {
  if (err instanceof HttpError) return err.status === 0 ? "Server unreachable" : err.detail || err.message;
  return err instanceof Error ? err.message : String(err);
}
