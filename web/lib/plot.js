// Pure drawing and maths for samplerlab's node plots: axis ticks, scales, a line chart drawn on any 2-D canvas
// context, and hit-testing. No DOM, no ComfyUI: web/tests/ runs these under `node --test`.

export const COLORS = ["#4af", "#fa4", "#7d5", "#e7c", "#fd4", "#5dd", "#f86"];

/** Nice round ticks (1, 2, 5 x 10^k) covering [lo, hi], about `count` of them. */
export function niceTicks(lo, hi, count = 5) {
  if (!(Number.isFinite(lo) && Number.isFinite(hi))) return [];
  if (lo > hi) [lo, hi] = [hi, lo];
  if (lo === hi) return [lo];
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) {
    ticks.push(Math.abs(v) < step * 1e-9 ? 0 : Number(v.toPrecision(12)));
  }
  return ticks;
}

/** Whole-number ticks (a step axis): nice ticks whose step is at least 1. */
export function integerTicks(lo, hi, count = 5) {
  const a = Math.ceil(Math.min(lo, hi)), b = Math.floor(Math.max(lo, hi));
  if (!(Number.isFinite(a) && Number.isFinite(b)) || b < a) return [];
  const ticks = niceTicks(a, b, count);
  const step = ticks.length > 1 ? Math.max(1, Math.round(ticks[1] - ticks[0])) : 1;
  const out = [];
  for (let v = Math.ceil(a / step) * step; v <= b; v += step) out.push(v);
  return out;
}

/** Ticks for a log axis over [lo, hi] (both > 0): the decades inside, or nice ticks when fewer than two. */
export function logTicks(lo, hi, count = 5) {
  if (!(lo > 0 && hi > 0)) return [];
  if (lo > hi) [lo, hi] = [hi, lo];
  const decades = [];
  for (let k = Math.ceil(Math.log10(lo) - 1e-9); k <= Math.floor(Math.log10(hi) + 1e-9); k++) decades.push(10 ** k);
  if (decades.length >= 2) {
    const every = Math.ceil(decades.length / count);
    return decades.filter((_, i) => i % every === 0);
  }
  const steps = [];  // 1, 2, 5 x 10^k inside the range (evenly spaced on a log axis)
  for (let k = Math.floor(Math.log10(lo)) - 1; k <= Math.ceil(Math.log10(hi)); k++) {
    for (const m of [1, 2, 5]) {
      const v = Number((m * 10 ** k).toPrecision(12));
      if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) steps.push(v);
    }
  }
  return steps.length >= 2 ? steps : niceTicks(lo, hi, Math.min(count, 4)).filter((v) => v > 0);
}

/** A schedule's levels in a caption: "N steps, σ first → last nonzero", then "→ 0" when it ends at zero (the
 *  plotted curve's last point: its log axis leaves the final 0 out; "0" as nodes/schedules.py's picture titles it). */
export function levelsText(sigmas) {
  const s = sigmas.map(Number);
  const positive = s.filter((v) => v > 0);
  const last = positive.length ? positive[positive.length - 1] : s[s.length - 1];
  return `${s.length - 1} steps, σ ${s[0].toPrecision(3)} → ${last.toPrecision(3)}${s[s.length - 1] === 0 && positive.length ? " → 0" : ""}`;
}

/** A short label for a tick value. */
export function formatTick(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-2) {
    const [m, e] = v.toExponential(0).split("e");
    return `${m}e${Number(e)}`;
  }
  return String(Number(v.toPrecision(3)));
}

/** A mapping from `domain` [lo, hi] to pixels [a, b], linear or logarithmic (log: values <= 0 are NaN). */
export function scale([lo, hi], [a, b], log = false) {
  const f = log ? Math.log : (v) => v;
  const flo = f(lo), span = f(hi) - flo || 1;
  return (v) => {
    const fv = f(v);
    return Number.isFinite(fv) ? a + ((fv - flo) / span) * (b - a) : NaN;
  };
}

/** [min, max] of the finite values (and > 0 on a log axis) in arrays, padded when flat; null when none. */
export function extent(arrays, log = false) {
  let lo = Infinity, hi = -Infinity;
  for (const xs of arrays) for (const v of xs) {
    if (Number.isFinite(v) && (!log || v > 0)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  }
  if (lo > hi) return null;
  if (lo === hi) return log ? [lo / 2, hi * 2] : [lo - (Math.abs(lo) || 1) * 0.1, hi + (Math.abs(hi) || 1) * 0.1];
  return [lo, hi];
}

export const MARGIN = { left: 38, right: 8, top: 16, bottom: 26 };

/** The plotting area inside a box {x, y, w, h} once room is kept for tick labels and the caption. */
export function innerBox(box) {
  return { x: box.x + MARGIN.left, y: box.y + MARGIN.top, w: Math.max(1, box.w - MARGIN.left - MARGIN.right),
    h: Math.max(1, box.h - MARGIN.top - MARGIN.bottom) };
}

/** Scales and ticks of a chart {series: [{xs, ys}], x: {log, integer, domain}, y: {...}} in `box`; null if empty. */
export function layout(chart, box) {
  const inner = innerBox(box);
  const xd = chart.x?.domain ?? extent(chart.series.map((s) => s.xs), chart.x?.log);
  const yd = chart.y?.domain ?? extent(chart.series.map((s) => s.ys), chart.y?.log);
  if (!xd || !yd) return null;
  const ticks = (axis, d) => axis?.log ? logTicks(d[0], d[1]) : axis?.integer ? integerTicks(d[0], d[1]) : niceTicks(d[0], d[1]);
  return {
    inner,
    sx: scale(xd, [inner.x, inner.x + inner.w], chart.x?.log),
    sy: scale(yd, [inner.y + inner.h, inner.y], chart.y?.log),
    xticks: ticks(chart.x, xd),
    yticks: ticks(chart.y, yd),
    xd, yd,
  };
}

const THEME = { frame: "#666", grid: "rgba(255,255,255,0.08)", text: "#bbb", error: "#f77", font: "10px sans-serif" };

/** Draw `chart` in `box` on ctx: frame, ticks with labels, each series as a polyline (points marked when few),
 *  marks (vertical lines at x, horizontal at y, dashed, labelled), a caption above and an optional message. */
export function drawChart(ctx, box, chart) {
  ctx.save();
  ctx.font = THEME.font;
  ctx.fillStyle = THEME.text;
  ctx.textAlign = "left";
  ctx.textBaseline = "alphabetic";
  if (chart.caption) ctx.fillText(clip(ctx, chart.caption, box.w - 4), box.x + 2, box.y + 11);
  const L = layout(chart, box);
  if (!L) {
    ctx.fillStyle = chart.error ? THEME.error : THEME.text;
    wrapText(ctx, chart.message ?? "nothing to plot yet", box.x + 6, box.y + 30, box.w - 12, 13);
    ctx.restore();
    return null;
  }
  const { inner, sx, sy } = L;
  ctx.strokeStyle = THEME.frame;
  ctx.lineWidth = 1;
  ctx.strokeRect(inner.x, inner.y, inner.w, inner.h);
  ctx.fillStyle = THEME.text;
  ctx.textAlign = "center";
  for (const t of L.xticks) {
    const x = sx(t);
    if (!(x >= inner.x - 0.5 && x <= inner.x + inner.w + 0.5)) continue;
    line(ctx, x, inner.y + inner.h, x, inner.y + inner.h + 3, THEME.frame);
    ctx.fillText(formatTick(t), x, inner.y + inner.h + 13);
  }
  ctx.textAlign = "right";
  for (const t of L.yticks) {
    const y = sy(t);
    if (!(y >= inner.y - 0.5 && y <= inner.y + inner.h + 0.5)) continue;
    line(ctx, inner.x, y, inner.x + inner.w, y, THEME.grid);
    ctx.fillText(formatTick(t), inner.x - 3, y + 3);
  }
  ctx.textAlign = "center";
  if (chart.x?.label) ctx.fillText(chart.x.label, inner.x + inner.w / 2, box.y + box.h - 2);
  for (const [i, s] of chart.series.entries()) {
    if (s.hidden) continue;
    ctx.strokeStyle = ctx.fillStyle = s.color ?? COLORS[i % COLORS.length];
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let pen = false;
    s.xs.forEach((xv, j) => {
      const x = sx(xv), y = sy(s.ys[j]);
      if (!(Number.isFinite(x) && Number.isFinite(y))) { pen = false; return; }
      if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      pen = true;
    });
    ctx.stroke();
    if (s.points ?? s.xs.length <= 40) s.xs.forEach((xv, j) => {
      const x = sx(xv), y = sy(s.ys[j]);
      if (Number.isFinite(x) && Number.isFinite(y)) ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
    });
  }
  for (const m of chart.marks ?? []) drawMark(ctx, L, m);
  if (chart.legend) drawLegend(ctx, chart, inner);
  if (chart.message) {
    ctx.fillStyle = chart.error ? THEME.error : THEME.text;
    ctx.textAlign = "left";
    ctx.fillText(clip(ctx, chart.message, inner.w - 8), inner.x + 4, inner.y + 12);
  }
  ctx.restore();
  return L;
}

function drawMark(ctx, { inner, sx, sy }, m) {
  const vertical = m.x !== undefined;
  const p = vertical ? sx(m.x) : sy(m.y);
  const [lo, hi] = vertical ? [inner.x, inner.x + inner.w] : [inner.y, inner.y + inner.h];
  if (!(p >= lo - 0.5 && p <= hi + 0.5)) return;
  ctx.save();
  ctx.setLineDash?.([4, 3]);
  const color = m.color ?? "#fc6";
  if (vertical) line(ctx, p, inner.y, p, inner.y + inner.h, color); else line(ctx, inner.x, p, inner.x + inner.w, p, color);
  ctx.restore();
  if (!m.label) return;
  ctx.fillStyle = color;
  ctx.textAlign = "left";
  if (!vertical) {
    ctx.fillText(clip(ctx, m.label, inner.w - 6), inner.x + 3, p - 3);
    return;
  }
  // beside the line, on the side away from the nearer edge unless the label fits only on the other; clipped to its side
  const right = inner.x + inner.w - p - 3, left = p - inner.x - 3;
  const width = ctx.measureText?.(m.label)?.width ?? m.label.length * 6;
  const onRight = p > inner.x + inner.w / 2 ? width > left && right > left : width <= right || right >= left;
  const text = clip(ctx, m.label, onRight ? right : left);
  const x = onRight ? p + 3 : p - 3 - (ctx.measureText?.(text)?.width ?? text.length * 6);
  ctx.fillText(text, x, inner.y + inner.h - 4);
}

/** Legend rows (one per series) at the top right of the plotting area; hit-tested by legendAt. */
export function legendRows(chart, inner) {
  return chart.series.map((s, i) => ({ index: i, label: s.label ?? `series ${i + 1}`, x: inner.x + inner.w - 110, y: inner.y + 4 + 12 * i, w: 106, h: 12 }));
}

function drawLegend(ctx, chart, inner) {
  ctx.textAlign = "left";
  for (const r of legendRows(chart, inner)) {
    const s = chart.series[r.index];
    ctx.fillStyle = s.color ?? COLORS[r.index % COLORS.length];
    ctx.globalAlpha = s.hidden ? 0.35 : 1;
    ctx.fillRect(r.x, r.y + 3, 8, 6);
    ctx.fillText(clip(ctx, r.label, r.w - 12), r.x + 11, r.y + 10);
    ctx.globalAlpha = 1;
  }
}

/** The legend row index at (px, py), or -1. */
export function legendAt(chart, inner, px, py) {
  const r = legendRows(chart, inner).find((r) => px >= r.x && px <= r.x + r.w && py >= r.y && py <= r.y + r.h);
  return r ? r.index : -1;
}

/** The visible data point nearest to pixel (px, py) within `radius` pixels: {series, index, x, y} or null. */
export function nearestPoint(chart, L, px, py, radius = 12) {
  let best = null, bestD = radius * radius;
  chart.series.forEach((s, i) => {
    if (s.hidden) return;
    s.xs.forEach((xv, j) => {
      const dx = L.sx(xv) - px, dy = L.sy(s.ys[j]) - py, d = dx * dx + dy * dy;
      if (d <= bestD) { bestD = d; best = { series: i, index: j, x: xv, y: s.ys[j] }; }
    });
  });
  return best;
}

function line(ctx, x0, y0, x1, y1, color) {
  ctx.strokeStyle = color;
  ctx.beginPath();
  ctx.moveTo(x0, y0);
  ctx.lineTo(x1, y1);
  ctx.stroke();
}

/** `text` shortened with an ellipsis to fit `width` pixels (ctx.measureText; about 6 px a character without). */
export function clip(ctx, text, width) {
  const measure = (t) => ctx.measureText?.(t)?.width ?? t.length * 6;
  if (measure(text) <= width) return text;
  let n = text.length;
  while (n > 0 && measure(text.slice(0, n) + "…") > width) n--;
  return text.slice(0, n) + "…";
}

/** fillText `text` wrapped at word boundaries into lines of at most `width` pixels; returns the lines. */
export function wrapText(ctx, text, x, y, width, lineHeight) {
  const measure = (t) => ctx.measureText?.(t)?.width ?? t.length * 6;
  const lines = [];
  let current = "";
  for (const word of String(text).split(/\s+/)) {
    const next = current ? `${current} ${word}` : word;
    if (current && measure(next) > width) { lines.push(current); current = word; } else current = next;
  }
  if (current) lines.push(current);
  lines.forEach((l, i) => ctx.fillText(l, x, y + i * lineHeight));
  return lines;
}

/** A schedule as a chart: log sigma would hide the final 0, so sigma is drawn on a log axis without it;
 *  the model's range (sigma_min, sigma_max) marked when known. */
export function scheduleChart(sigmas, { caption, model, message, error } = {}) {
  const levels = sigmas.slice(0, -1);
  const marks = [];
  if (model) {
    marks.push({ y: model.sigma_max, label: `σmax ${formatTick(model.sigma_max)}`, color: "#c96" });
    marks.push({ y: model.sigma_min, label: `σmin ${formatTick(model.sigma_min)}`, color: "#c96" });
  }
  const lo = Math.min(...levels.filter((v) => v > 0), model?.sigma_min ?? Infinity);
  const hi = Math.max(...levels, model?.sigma_max ?? -Infinity);
  return {
    series: [{ xs: levels.map((_, i) => i), ys: levels, label: "σ" }],
    x: { integer: true, label: "step", domain: levels.length > 1 ? [0, levels.length - 1] : [-0.5, 0.5] },
    y: { log: true, domain: lo > 0 && hi > lo ? [lo / 1.15, hi * 1.15] : undefined },
    marks, caption, message, error,
  };
}

/** The mark of a run's detected sigma_c {host, percent} on a pulse chart: a vertical line at its percent of the
 *  schedule, labelled with its host level. */
export function sigmaCMark(found) {
  return { x: 100 * found.percent, label: `σc ${formatTick(found.host)} (last run)`, color: "#f6c" };
}

/** A guidance pulse as a chart: weight against percent of the schedule, its centre marked when known and the
 *  sigma_c a run detected (`detected`, {host, percent}) marked until the next run tells another. */
export function pulseChart(pulse, { caption, message, error, center, detected } = {}) {
  const xs = (pulse.percent ?? []).map((p) => 100 * p), ys = pulse.weight ?? [];
  const d = extent([ys]);
  return {
    series: xs.length ? [{ xs, ys, label: "weight", points: false }] : [],
    x: { label: "% of the schedule", domain: [0, 100] },
    y: { domain: d ? [Math.min(0, d[0]), d[1] + 0.1 * (d[1] - Math.min(0, d[0]) || 1)] : undefined },
    marks: [...(center === undefined ? [] : [{ x: 100 * center.percent, label: center.label, color: "#fc6" }]),
      ...(detected ? [sigmaCMark(detected)] : [])],
    caption: caption ?? pulse.caption, message: message ?? (xs.length ? undefined : pulse.caption), error,
  };
}
