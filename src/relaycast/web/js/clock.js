// @ts-check
// The offset between this browser's clock and the server's, measured over HTTP (NTP-style):
// for each GET /api/time, offset = server - (sent + received) / 2; the sample with the
// shortest round trip wins (its error is at most half that round trip).

/** @type {{offsetMs: number, rttMs: number | null, measuredAt: number}} */
let current = { offsetMs: 0, rttMs: null, measuredAt: 0 };

/** Measure the offset with `samples` requests; resolves with {offsetMs, rttMs}. */
export async function measureClockOffset(samples = 5) {
  /** @type {{offsetMs: number, rttMs: number} | null} */
  let best = null;
  for (let i = 0; i < samples; i++) {
    try {
      const t0 = Date.now();
      const p0 = performance.now();
      const resp = await fetch("/api/time", { cache: "no-store" });
      const { now_ms: server } = await resp.json();
      const rtt = performance.now() - p0;
      const offset = server - (t0 + rtt / 2);
      if (!best || rtt < best.rttMs) best = { offsetMs: offset, rttMs: rtt };
    } catch {
      // keep what we have
    }
  }
  if (best) current = { ...best, measuredAt: Date.now() };
  return current;
}

/** The server's clock now, as best known (ms since the epoch). */
export function serverNow() {
  return Date.now() + current.offsetMs;
}

export function clockOffset() {
  return current;
}
