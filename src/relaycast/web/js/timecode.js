// @ts-check
// A machine-readable clock in the video, for glass-to-glass latency.
//
// The test-pattern source draws, in a band at the top of each frame, a row of 56 black or
// white cells: a sync pattern (white, black, white, black), the 48 low bits of the server
// clock in ms (most significant first), and a 4-bit check (XOR of the twelve data nibbles).
// The viewer draws the decoded <video> frame onto a canvas, samples each cell's centre and
// decodes the time; delay = server clock now - time in the frame.
// Positions are relative to the frame size, so a scaled frame still decodes.

export const CELLS = 56;
const SYNC = [1, 0, 1, 0];
const DATA_BITS = 48;
const BAND = { x0: 0.02, x1: 0.98, y0: 0.012, y1: 0.062 };

/**
 * @param {number[]} bits
 * @returns {number[]}
 */
function checksum(bits) {
  let c = 0;
  for (let i = 0; i < DATA_BITS; i += 4) {
    c ^= (bits[i] << 3) | (bits[i + 1] << 2) | (bits[i + 2] << 1) | bits[i + 3];
  }
  return [(c >> 3) & 1, (c >> 2) & 1, (c >> 1) & 1, c & 1];
}

/**
 * @param {number} ms
 * @returns {number[]}
 */
export function encodeBits(ms) {
  const bits = [];
  let v = BigInt(Math.floor(ms)) & ((1n << 48n) - 1n);
  for (let i = DATA_BITS - 1; i >= 0; i--) bits.push(Number((v >> BigInt(i)) & 1n));
  return [...SYNC, ...bits, ...checksum(bits)];
}

/**
 * Draw the code for `ms` into a 2D context of a width x height frame.
 * @param {CanvasRenderingContext2D} ctx
 * @param {number} width
 * @param {number} height
 * @param {number} ms
 */
export function drawTimecode(ctx, width, height, ms) {
  const bits = encodeBits(ms);
  const x0 = BAND.x0 * width;
  const cw = ((BAND.x1 - BAND.x0) * width) / CELLS;
  const y0 = BAND.y0 * height;
  const h = (BAND.y1 - BAND.y0) * height;
  ctx.fillStyle = "#808080";
  ctx.fillRect(x0 - cw, y0 - h * 0.3, cw * (CELLS + 2), h * 1.6);
  for (let i = 0; i < CELLS; i++) {
    ctx.fillStyle = bits[i] ? "#ffffff" : "#000000";
    ctx.fillRect(Math.round(x0 + i * cw), Math.round(y0), Math.ceil(cw), Math.ceil(h));
  }
}

/**
 * The band's pixel rectangle in a width x height frame: [x, y, w, h].
 * @param {number} width
 * @param {number} height
 * @returns {[number, number, number, number]}
 */
export function bandRect(width, height) {
  const x = Math.floor(BAND.x0 * width);
  const y = Math.floor(BAND.y0 * height);
  return [x, y, Math.ceil(BAND.x1 * width) - x, Math.ceil(BAND.y1 * height) - y];
}

/**
 * Decode from ImageData of the band (as returned for bandRect); returns the ms value
 * (48 low bits, restored to the full epoch near `nearMs`) or null if unreadable.
 * @param {ImageData} image
 * @param {number} width
 * @param {number} height
 * @param {number} [nearMs]
 * @returns {number | null}
 */
export function decodeTimecode(image, width, height, nearMs = Date.now()) {
  const [bx, by, bw, bh] = bandRect(width, height);
  const cw = ((BAND.x1 - BAND.x0) * width) / CELLS;
  const cy = Math.round((BAND.y0 + BAND.y1) * 0.5 * height) - by;
  const bits = [];
  for (let i = 0; i < CELLS; i++) {
    const cx = Math.round(BAND.x0 * width + (i + 0.5) * cw) - bx;
    let sum = 0;
    let n = 0;
    for (let dy = -1; dy <= 1; dy++) {
      for (let dx = -1; dx <= 1; dx++) {
        const x = cx + dx;
        const y = cy + dy;
        if (x < 0 || y < 0 || x >= bw || y >= bh) continue;
        const o = (y * image.width + x) * 4;
        sum += 0.299 * image.data[o] + 0.587 * image.data[o + 1] + 0.114 * image.data[o + 2];
        n++;
      }
    }
    if (!n) return null;
    bits.push(sum / n >= 128 ? 1 : 0);
  }
  for (let i = 0; i < SYNC.length; i++) if (bits[i] !== SYNC[i]) return null;
  const data = bits.slice(SYNC.length, SYNC.length + DATA_BITS);
  const check = bits.slice(SYNC.length + DATA_BITS);
  const want = checksum(data);
  for (let i = 0; i < 4; i++) if (check[i] !== want[i]) return null;
  let low = 0n;
  for (const b of data) low = (low << 1n) | BigInt(b);
  const mod = 1n << 48n;
  const near = BigInt(Math.floor(nearMs));
  let full = (near - (near % mod)) + low;
  if (full - near > mod / 2n) full -= mod;
  if (near - full > mod / 2n) full += mod;
  return Number(full);
}

/**
 * Reads the timecode of the frames a <video> presents (requestVideoFrameCallback, at most
 * `maxPerSecond` reads), calling onDelay(ms) with now(server clock) - time in the frame.
 */
export class TimecodeReader {
  /**
   * @param {HTMLVideoElement} video
   * @param {{now?: () => number, onDelay?: (ms: number) => void, maxPerSecond?: number}} [options]
   */
  constructor(video, { now = () => Date.now(), onDelay = () => {}, maxPerSecond = 5 } = {}) {
    this.video = video;
    this.now = now;
    this.onDelay = onDelay;
    this.minGap = 1000 / maxPerSecond;
    this.canvas = document.createElement("canvas");
    const ctx = this.canvas.getContext("2d", { willReadFrequently: true });
    if (!ctx) throw new Error("no 2D canvas");
    this.ctx = ctx;
    this.last = 0;
    this.stopped = false;
    this.reads = 0;
    this.misses = 0;
    this.streak = 0; // consecutive frames without a readable timecode
    this.#schedule();
  }

  #schedule() {
    if (this.stopped) return;
    if (this.video.requestVideoFrameCallback) {
      this.video.requestVideoFrameCallback(() => this.#onFrame());
    } else {
      setTimeout(() => this.#onFrame(), this.minGap);
    }
  }

  #onFrame() {
    const presented = this.now();
    const t = performance.now();
    // no timecode in this video (a camera): look once a second instead of maxPerSecond
    const gap = this.streak >= 10 ? 1000 : this.minGap;
    if (t - this.last >= gap) {
      this.last = t;
      const v = this.video;
      const w = v.videoWidth;
      const h = v.videoHeight;
      if (w && h) {
        const [x, y, bw, bh] = bandRect(w, h);
        if (this.canvas.width !== bw || this.canvas.height !== bh) {
          this.canvas.width = bw;
          this.canvas.height = bh;
        }
        try {
          this.ctx.drawImage(v, x, y, bw, bh, 0, 0, bw, bh);
          const image = this.ctx.getImageData(0, 0, bw, bh);
          const stamp = decodeTimecode(image, w, h, presented);
          if (stamp != null) {
            this.reads++;
            this.streak = 0;
            this.onDelay(presented - stamp);
          } else {
            this.misses++;
            this.streak++;
          }
        } catch {
          this.misses++;
          this.streak++;
        }
      }
    }
    this.#schedule();
  }

  stop() {
    this.stopped = true;
  }
}
