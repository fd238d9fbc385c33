// @ts-check
// A synthetic camera + microphone for tests and demos: no devices needed.
//
// Video: moving shapes, a clock and a frame counter over coarse random noise, so the
// encoder has real work to do and actually spends the configured bitrate.
// Audio: a 440 Hz tone with a short 880 Hz beep every second (WebAudio).
// A machine-readable clock (timecode.js) at the top of each frame lets the viewer page
// measure glass-to-glass delay; `clock` gives the time to draw (the server's clock).

import { drawTimecode } from "./timecode.js";

/**
 * xorshift32: cheap noise without allocating per pixel.
 * @param {number} [seed]
 * @returns {() => number}
 */
function makeRng(seed = 0x9e3779b9) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

/**
 * @param {HTMLCanvasElement} canvas
 * @param {CanvasRenderingContext2DSettings} [settings]
 * @returns {CanvasRenderingContext2D}
 */
function context2d(canvas, settings) {
  const ctx = canvas.getContext("2d", settings);
  if (!ctx) throw new Error("no 2D canvas for the test pattern");
  return ctx;
}

/**
 * @param {{width?: number, height?: number, fps?: number, audio?: boolean, clock?: () => number}} [options]
 * @returns {{stream: MediaStream, canvas: HTMLCanvasElement, resize: (w: number, h: number, fps?: number) => void, stop: () => void}}
 */
export function createTestSource({
  width = 1280,
  height = 720,
  fps = 30,
  audio = true,
  clock = () => Date.now(),
} = {}) {
  const canvas = document.createElement("canvas");
  const ctx = context2d(canvas, { alpha: false });
  const noise = document.createElement("canvas");
  const nctx = context2d(noise);
  /** @type {ImageData} */
  let img;
  /** @type {Uint32Array} */
  let px;
  const rand = makeRng();

  // Noise is drawn from a small tile scaled up (blocks of ~8 px): cheap to make, hard to encode.
  /**
   * @param {number} w
   * @param {number} h
   */
  function setSize(w, h) {
    width = w;
    height = h;
    canvas.width = width;
    canvas.height = height;
    noise.width = Math.max(16, Math.round(width / 8));
    noise.height = Math.max(9, Math.round(height / 8));
    img = nctx.createImageData(noise.width, noise.height);
    px = new Uint32Array(img.data.buffer);
  }
  setSize(width, height);

  let frame = 0;
  const start = performance.now();
  function draw() {
    const t = (performance.now() - start) / 1000;
    for (let i = 0; i < px.length; i++) px[i] = rand() | 0xff000000;
    nctx.putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.globalAlpha = 1;
    ctx.drawImage(noise, 0, 0, width, height);

    ctx.globalAlpha = 0.75;
    ctx.fillStyle = "#1d3557";
    ctx.fillRect(0, height * 0.72, width, height * 0.28);
    const hue = (t * 40) % 360;
    for (let i = 0; i < 4; i++) {
      const phase = t * (0.6 + i * 0.25) + i;
      const x = (Math.sin(phase) * 0.4 + 0.5) * width;
      const y = (Math.cos(phase * 1.3) * 0.3 + 0.4) * height;
      ctx.fillStyle = `hsl(${(hue + i * 90) % 360} 80% 55%)`;
      ctx.beginPath();
      ctx.arc(x, y, height * (0.06 + 0.02 * i), 0, Math.PI * 2);
      ctx.fill();
    }
    ctx.globalAlpha = 1;
    ctx.fillStyle = "#ffffff";
    ctx.font = `bold ${Math.round(height / 12)}px monospace`;
    ctx.textBaseline = "middle";
    const wallClock = new Date(clock()).toISOString().slice(11, 23);
    ctx.fillText(`relaycast ${wallClock}`, width * 0.04, height * 0.8);
    ctx.font = `${Math.round(height / 20)}px monospace`;
    ctx.fillText(`frame ${frame}  ${width}x${height}@${fps}`, width * 0.04, height * 0.92);
    drawTimecode(ctx, width, height, clock());
    frame++;
  }
  draw();
  let timer = setInterval(draw, 1000 / fps);
  const stream = canvas.captureStream(fps);

  /** @type {AudioContext | null} */
  let audioCtx = null;
  if (audio && typeof AudioContext !== "undefined") {
    const actx = new AudioContext();
    audioCtx = actx;
    const osc = audioCtx.createOscillator();
    osc.frequency.value = 440;
    const gain = audioCtx.createGain();
    gain.gain.value = 0.1;
    const dest = audioCtx.createMediaStreamDestination();
    osc.connect(gain).connect(dest);
    osc.start();
    // A beep each second makes audio/video sync visible.
    const beep = setInterval(() => {
      const now = actx.currentTime;
      osc.frequency.setValueAtTime(880, now);
      osc.frequency.setValueAtTime(440, now + 0.1);
    }, 1000);
    audioCtx.addEventListener("statechange", () => {
      if (actx.state === "closed") clearInterval(beep);
    });
    audioCtx.resume().catch(() => {});
    for (const track of dest.stream.getAudioTracks()) stream.addTrack(track);
  }

  return {
    stream,
    canvas,
    /** Switch size and frame rate in place: the same track, so a live sender keeps going. */
    resize(w, h, newFps = fps) {
      setSize(w, h);
      fps = newFps;
      clearInterval(timer);
      timer = setInterval(draw, 1000 / fps);
      draw();
    },
    stop() {
      clearInterval(timer);
      for (const track of stream.getTracks()) track.stop();
      if (audioCtx) audioCtx.close().catch(() => {});
    },
  };
}
