// Pure parts of the Compare samplers image comparer and of the sweep plot: the saved view state (checked, since
// it comes from a workflow file), layout, hit-testing and the text under each image. No DOM, no ComfyUI.

import { COLORS, formatTick } from "./plot.js";

export const MODES = ["slide", "side"];
export const BAR = 20; // height of the button row
export const STATS = 30; // height of the two stats lines

/** The comparer's state from a widget value (anything: it may come from an edited workflow), with `count`
 *  entries (0 = the reference): {a, b, mode, split}; defaults where a field is missing or wrong. */
export function parseState(value, count) {
  const v = value && typeof value === "object" ? value : {};
  const index = (x, fallback) => (Number.isInteger(x) && x >= 0 && (count === undefined || x < count) ? x : fallback);
  const b = index(v.b, 0);
  const a = index(v.a, count === undefined || count > 1 ? 1 : 0);
  const split = Number.isFinite(v.split) ? Math.min(1, Math.max(0, v.split)) : 0.5;
  return { a, b, mode: MODES.includes(v.mode) ? v.mode : "slide", split };
}

/** `index` moved by `delta` among `count` entries, wrapping around. */
export function cycle(index, delta, count) {
  return count > 0 ? (((index + delta) % count) + count) % count : 0;
}

/** The largest rectangle of aspect w/h = `aspect` centred in `rect`. */
export function fitRect(rect, aspect) {
  if (!(aspect > 0)) return { ...rect };
  let w = rect.w, h = w / aspect;
  if (h > rect.h) { h = rect.h; w = h * aspect; }
  return { x: rect.x + (rect.w - w) / 2, y: rect.y + (rect.h - h) / 2, w, h };
}

/** Regions of the comparer inside `box`: buttons (mode, A-, A+, B-, B+), the image rectangles (one for slide,
 *  two for side by side) fitted to `aspect`, and the stats area under them. */
export function comparerLayout(box, aspect, mode) {
  const bw = Math.max(24, (box.w - 8) / 5);
  const ids = ["mode", "a-", "a+", "b-", "b+"];
  const buttons = ids.map((id, i) => ({ id, x: box.x + 4 + i * bw, y: box.y + 2, w: bw - 4, h: BAR - 4 }));
  const area = { x: box.x + 4, y: box.y + BAR, w: box.w - 8, h: Math.max(1, box.h - BAR - STATS) };
  let images;
  if (mode === "side") {
    const half = { ...area, w: (area.w - 4) / 2 };
    images = [fitRect(half, aspect), fitRect({ ...half, x: area.x + half.w + 4 }, aspect)];
  } else images = [fitRect(area, aspect)];
  return { buttons, images, stats: { x: box.x + 4, y: area.y + area.h + 2, w: box.w - 8, h: STATS - 2 } };
}

/** The button id at (px, py), or null. */
export function buttonAt(buttons, px, py) {
  return buttons.find((b) => px >= b.x && px <= b.x + b.w && py >= b.y && py <= b.y + b.h)?.id ?? null;
}

/** The slider position (0 = all B, 1 = all A) for a pointer at px over image rectangle r. */
export function splitAt(px, r) {
  return r.w > 0 ? Math.min(1, Math.max(0, (px - r.x) / r.w)) : 0.5;
}

/** The state after a click on button `id`. */
export function press(state, id, count) {
  switch (id) {
    case "mode": return { ...state, mode: state.mode === "slide" ? "side" : "slide" };
    case "a-": return { ...state, a: cycle(state.a, -1, count) };
    case "a+": return { ...state, a: cycle(state.a, 1, count) };
    case "b-": return { ...state, b: cycle(state.b, -1, count) };
    case "b+": return { ...state, b: cycle(state.b, 1, count) };
    default: return state;
  }
}

/** One entry's line under the images: "label: 20 calls · 0.41 s · RMSE 1.2e-3", or its error. */
export function statsText(entry) {
  if (!entry) return "";
  if (entry.error) return `${entry.label}: failed: ${entry.error}`;
  const parts = [];
  if (Number.isFinite(entry.calls)) parts.push(`${formatTick(entry.calls)} calls`);
  if (Number.isFinite(entry.seconds)) parts.push(`${entry.seconds.toFixed(entry.seconds < 10 ? 2 : 1)} s`);
  if (Number.isFinite(entry.rmse)) parts.push(`RMSE ${entry.rmse.toExponential(2)}`);
  return `${entry.label}: ${parts.join(" · ") || "no figures"}`;
}

/** The sweep's points grouped into one series per contender (sorted by calls) for drawChart, on log-log axes;
 *  `hidden` lists contenders switched off in the legend. */
export function sweepChart(sweep, hidden = []) {
  const by = new Map();
  for (const p of sweep?.points ?? []) {
    if (!(p.calls > 0 && p.error > 0)) continue;
    if (!by.has(p.contender)) by.set(p.contender, []);
    by.get(p.contender).push(p);
  }
  const series = [...by.entries()].map(([label, ps], i) => {
    ps.sort((a, b) => a.calls - b.calls);
    return { label, xs: ps.map((p) => p.calls), ys: ps.map((p) => p.error), points: true, steps: ps.map((p) => p.steps),
      color: COLORS[i % COLORS.length], hidden: hidden.includes(label) };
  });
  const failed = Object.keys(sweep?.failed ?? {});
  return {
    series, legend: true,
    x: { log: true, label: "model calls (counted)" }, y: { log: true },
    caption: `RMSE vs ${sweep?.reference ?? "the reference"}`,
    message: series.length ? (failed.length ? `${failed.length} run(s) failed` : undefined) : "run the graph to see error against calls",
    error: failed.length > 0,
  };
}

/** The least-squares slope of log error against log calls (the observed order is minus it); NaN under 2 points. */
export function slope(xs, ys) {
  const pts = xs.map((x, i) => [Math.log(x), Math.log(ys[i])]).filter(([a, b]) => Number.isFinite(a) && Number.isFinite(b));
  if (pts.length < 2) return NaN;
  const mx = pts.reduce((s, p) => s + p[0], 0) / pts.length, my = pts.reduce((s, p) => s + p[1], 0) / pts.length;
  const sxx = pts.reduce((s, p) => s + (p[0] - mx) ** 2, 0);
  return sxx > 0 ? pts.reduce((s, p) => s + (p[0] - mx) * (p[1] - my), 0) / sxx : NaN;
}
