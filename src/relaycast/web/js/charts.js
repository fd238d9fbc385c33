// @ts-check
// Small line charts on a <canvas>: no library, no build step.
//
// drawChart(canvas, {series, span, left, right}) draws time series that share a time axis
// ending "now": each series is {label, color, points: [[tSeconds, value], ...], axis}.
// `axis` is "left" (default) or "right", each with its own scale and formatter.

const GRID = "rgba(139, 152, 165, 0.18)";
const TEXT = "#8b98a5";

/** @param {number} v */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const exp = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * exp >= v) return m * exp;
  return 10 * exp;
}

/**
 * Resize the canvas backing store to its CSS size times devicePixelRatio; returns the 2D context.
 * @param {HTMLCanvasElement} canvas
 */
function fit(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
  const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const ctx = canvas.getContext("2d");
  if (!ctx) throw new Error("no 2D canvas");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return { ctx, width: canvas.clientWidth, height: canvas.clientHeight };
}

/**
 * @param {HTMLCanvasElement} canvas
 * @param {{series: {label:string,color:string,points:number[][],axis?:string,fill?:boolean,step?:boolean}[],
 *          span?: number, now?: number, left?: (v:number)=>string, right?: (v:number)=>string,
 *          leftMin?: number, rightMin?: number}} opts
 */
export function drawChart(canvas, opts) {
  const { ctx, width, height } = fit(canvas);
  const span = opts.span ?? 60;
  const now = opts.now ?? Date.now() / 1000;
  const fmtL = opts.left ?? ((v) => String(Math.round(v)));
  const fmtR = opts.right ?? ((v) => String(Math.round(v)));
  const hasRight = opts.series.some((s) => s.axis === "right");
  const pad = { l: 46, r: hasRight ? 34 : 10, t: 18, b: 16 };
  const plotW = Math.max(10, width - pad.l - pad.r);
  const plotH = Math.max(10, height - pad.t - pad.b);
  ctx.clearRect(0, 0, width, height);

  const maxOf = (/** @type {string} */ axis, /** @type {number | undefined} */ min) => {
    let m = min ?? 0;
    for (const s of opts.series) {
      if ((s.axis ?? "left") !== axis) continue;
      for (const [t, v] of s.points) if (t >= now - span && v > m) m = v;
    }
    return niceMax(m);
  };
  const maxL = maxOf("left", opts.leftMin);
  const maxR = hasRight ? Math.max(1, Math.ceil(maxOf("right", opts.rightMin ?? 1))) : 1;

  ctx.font = "11px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + plotH - (plotH * i) / 4;
    ctx.strokeStyle = GRID;
    ctx.beginPath();
    ctx.moveTo(pad.l, Math.round(y) + 0.5);
    ctx.lineTo(pad.l + plotW, Math.round(y) + 0.5);
    ctx.stroke();
    ctx.fillStyle = TEXT;
    ctx.textAlign = "right";
    ctx.fillText(fmtL((maxL * i) / 4), pad.l - 6, y);
    if (hasRight && (maxR * i) % 4 === 0) {
      ctx.textAlign = "left";
      ctx.fillText(fmtR((maxR * i) / 4), pad.l + plotW + 6, y);
    }
  }
  ctx.textAlign = "right";
  ctx.textBaseline = "top";
  ctx.fillText(span >= 120 ? `last ${Math.round(span / 60)} min` : `last ${span} s`, pad.l + plotW, pad.t + plotH + 3);

  const x = (/** @type {number} */ t) => pad.l + plotW - ((now - t) / span) * plotW;
  for (const s of opts.series) {
    const max = s.axis === "right" ? maxR : maxL;
    const y = (/** @type {number} */ v) => pad.t + plotH - (Math.min(v, max) / max) * plotH;
    const pts = s.points.filter(([t]) => t >= now - span - 2);
    if (!pts.length) continue;
    ctx.save();
    ctx.beginPath();
    ctx.rect(pad.l, pad.t - 2, plotW, plotH + 4);
    ctx.clip();
    ctx.beginPath();
    pts.forEach(([t, v], i) => {
      if (s.step && i > 0) ctx.lineTo(x(t), y(pts[i - 1][1]));
      if (i === 0) ctx.moveTo(x(t), y(v));
      else ctx.lineTo(x(t), y(v));
    });
    ctx.strokeStyle = s.color;
    ctx.lineWidth = 2;
    ctx.lineJoin = "round";
    ctx.stroke();
    if (s.fill) {
      ctx.lineTo(x(pts[pts.length - 1][0]), pad.t + plotH);
      ctx.lineTo(x(pts[0][0]), pad.t + plotH);
      ctx.closePath();
      ctx.globalAlpha = 0.15;
      ctx.fillStyle = s.color;
      ctx.fill();
    }
    ctx.restore();
  }

  // legend
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  let lx = pad.l;
  for (const s of opts.series) {
    ctx.fillStyle = s.color;
    ctx.fillRect(lx, 4, 10, 3);
    ctx.fillStyle = TEXT;
    ctx.fillText(s.label, lx + 14, 0);
    lx += 22 + ctx.measureText(s.label).width;
  }
}

/**
 * @param {number | null | undefined} bps
 * @returns {string}
 */
export function formatBps(bps) {
  if (bps == null || Number.isNaN(bps)) return "—";
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(bps >= 1e7 ? 0 : 1)} Mbit/s`;
  if (bps >= 1e3) return `${Math.round(bps / 1e3)} kbit/s`;
  return `${Math.round(bps)} bit/s`;
}

/**
 * @param {number} bps
 * @returns {string}
 */
export function shortBps(bps) {
  if (bps >= 1e6) return `${+(bps / 1e6).toFixed(1)}M`;
  if (bps >= 1e3) return `${Math.round(bps / 1e3)}k`;
  return String(Math.round(bps));
}

/**
 * @param {number | null | undefined} seconds
 * @returns {string}
 */
export function formatDuration(seconds) {
  if (seconds == null) return "—";
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}
