import { test } from "node:test";
import assert from "node:assert/strict";
import { clip, drawChart, extent, formatTick, innerBox, integerTicks, layout, legendAt, levelsText, logTicks, nearestPoint, niceTicks,
  pulseChart, scale, scheduleChart, sigmaCMark, wrapText } from "../lib/plot.js";
import { fakeContext } from "./fake_ctx.mjs";

const BOX = { x: 10, y: 20, w: 300, h: 160 };

test("niceTicks are round, ascending and cover the range", () => {
  assert.deepEqual(niceTicks(0, 1, 5), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.deepEqual(niceTicks(1, 2.5, 3), [1, 1.5, 2, 2.5]);
  const t = niceTicks(-3.7, 12.2, 5);
  assert.ok(t[0] >= -3.7 && t.at(-1) <= 12.2 && t.length >= 3);
  assert.deepEqual(niceTicks(5, 5), [5]);
  assert.deepEqual(niceTicks(NaN, 1), []);
});

test("integerTicks never have a fractional step (a step axis of 2, 3, or 200 steps)", () => {
  for (const n of [1, 2, 3, 7, 20, 200]) {
    const t = integerTicks(0, n);
    assert.ok(t.length >= 1, `steps ${n}`);
    assert.ok(t.every(Number.isInteger), `fractional tick for ${n}: ${t}`);
    assert.ok(t.every((v) => v >= 0 && v <= n));
  }
  assert.deepEqual(integerTicks(0, 3), [0, 1, 2, 3]);
});

test("logTicks are decades when the range spans them, positive otherwise", () => {
  assert.deepEqual(logTicks(0.03, 14.6), [0.1, 1, 10]);
  assert.deepEqual(logTicks(4, 64), [5, 10, 20, 50]); // model calls of a sweep: 1-2-5 steps, not 20, 40, 60
  const t = logTicks(2.5, 4.5);
  assert.ok(t.length >= 2 && t.every((v) => v >= 2.5 && v <= 4.5));
  assert.deepEqual(logTicks(0, 5), []);
});

test("formatTick is short", () => {
  assert.equal(formatTick(0), "0");
  assert.equal(formatTick(0.001), "1e-3");
  assert.equal(formatTick(20000), "2e4");
  assert.equal(formatTick(14.6146), "14.6");
});

test("scale maps the domain onto the range, log or linear, NaN outside a log domain", () => {
  const s = scale([1, 100], [0, 200], true);
  assert.equal(s(1), 0);
  assert.equal(s(100), 200);
  assert.ok(Math.abs(s(10) - 100) < 1e-9);
  assert.ok(Number.isNaN(s(0)));
  assert.equal(scale([0, 10], [100, 0])(5), 50);
});

test("extent skips non-finite values and non-positive ones on a log axis, and pads a flat range", () => {
  assert.deepEqual(extent([[1, NaN, 3], [Infinity, 2]]), [1, 3]);
  assert.deepEqual(extent([[0, 4, 2]], true), [2, 4]);
  assert.equal(extent([[NaN]]), null);
  const [lo, hi] = extent([[2, 2]]);
  assert.ok(lo < 2 && hi > 2);
});

test("a schedule chart: steps on whole-number ticks, every level inside the plot, the final 0 left out", () => {
  const sigmas = [14.6, 6.1, 2.3, 0.8, 0.2, 0.03, 0];
  const chart = scheduleChart(sigmas, { model: { sigma_min: 0.03, sigma_max: 14.6 } });
  assert.equal(chart.series[0].xs.length, 6);
  const ctx = fakeContext();
  const L = drawChart(ctx, BOX, chart);
  assert.ok(L.xticks.every(Number.isInteger));
  const { inner } = L;
  for (const [i, v] of chart.series[0].ys.entries()) {
    const x = L.sx(i), y = L.sy(v);
    assert.ok(x >= inner.x - 1e-9 && x <= inner.x + inner.w + 1e-9 && y >= inner.y && y <= inner.y + inner.h, `level ${v}`);
  }
  // sigma_min and sigma_max are marked (dashed lines with labels)
  const labels = ctx.calls.filter((c) => c[0] === "fillText").map((c) => c[1]);
  assert.ok(labels.some((t) => t.startsWith("σmax")) && labels.some((t) => t.startsWith("σmin")));
});

test("everything drawn stays inside the box, also at a small size", () => {
  for (const box of [BOX, { x: 0, y: 0, w: 120, h: 90 }]) {
    const ctx = fakeContext();
    drawChart(ctx, box, scheduleChart([10, 1, 0.1, 0], { caption: "a caption much longer than the node is wide, to be clipped" }));
    for (const [name, ...a] of ctx.calls) {
      if (name === "moveTo" || name === "lineTo" || name === "fillRect") {
        assert.ok(a[0] >= box.x - 2 && a[0] <= box.x + box.w + 2 && a[1] >= box.y - 2 && a[1] <= box.y + box.h + 2, `${name} ${a}`);
      }
      if (name === "fillText") assert.ok(ctx.measureText(a[0]).width <= box.w + 1, `text too wide: ${a[0]}`);
    }
  }
});

test("a pulse chart spans 0-100 % with the weight axis from 0, and marks the centre", () => {
  const percent = Array.from({ length: 65 }, (_, i) => (i + 0.5) / 65);
  const weight = percent.map((p) => 1 + 6 * Math.exp(-(((p - 0.5) / 0.1) ** 2)));
  const chart = pulseChart({ percent, weight, caption: "guidance 1 .. 7" }, { center: { percent: 0.5, label: "centre" } });
  assert.deepEqual(chart.x.domain, [0, 100]);
  assert.ok(chart.y.domain[0] === 0 && chart.y.domain[1] > 7);
  const ctx = fakeContext();
  drawChart(ctx, BOX, chart);
  assert.ok(ctx.calls.some((c) => c[0] === "fillText" && c[1] === "centre"));
  const auto = pulseChart({ caption: "centre auto: sigma_c is measured during sampling" });
  assert.equal(auto.series.length, 0);
  const ctx2 = fakeContext();
  assert.equal(drawChart(ctx2, BOX, auto), null);
  assert.ok(ctx2.calls.some((c) => c[0] === "fillText" && String(c[1]).includes("measured")));
});

test("an error message is drawn instead of a chart", () => {
  const ctx = fakeContext();
  assert.equal(drawChart(ctx, BOX, { series: [], message: "steps must be in [1, 10000], got 0", error: true }), null);
  assert.ok(ctx.calls.some((c) => c[0] === "fillText" && String(c[1]).includes("steps")));
});

test("nearestPoint and legendAt find what is under the pointer", () => {
  const chart = { series: [{ xs: [1, 10, 100], ys: [1, 0.1, 0.01], label: "a" }, { xs: [1, 10], ys: [2, 1], label: "b", hidden: true }],
    x: { log: true }, y: { log: true }, legend: true };
  const L = layout(chart, BOX);
  const hit = nearestPoint(chart, L, L.sx(10) + 2, L.sy(0.1) - 1);
  assert.deepEqual(hit, { series: 0, index: 1, x: 10, y: 0.1 });
  assert.equal(nearestPoint(chart, L, L.sx(10), L.sy(1)), null); // only the hidden series is there
  const inner = innerBox(BOX);
  assert.equal(legendAt(chart, inner, inner.x + inner.w - 100, inner.y + 4 + 12 + 5), 1);
  assert.equal(legendAt(chart, inner, inner.x + 2, inner.y + 2), -1);
});

test("clip and wrapText keep text within a width", () => {
  const ctx = fakeContext();
  assert.equal(clip(ctx, "short", 100), "short");
  const c = clip(ctx, "a rather long caption", 60);
  assert.ok(c.endsWith("…") && c.length * 6 <= 60);
  const lines = wrapText(ctx, "one two three four five six", 0, 0, 50, 12);
  assert.ok(lines.length > 1 && lines.every((l) => l.length * 6 <= 50 || !l.includes(" ")));
});

test("a pulse chart marks the sigma_c a run detected: a labelled vertical line at its percent, inside the box", () => {
  const percent = Array.from({ length: 65 }, (_, i) => (i + 0.5) / 65);
  const weight = percent.map((p) => 1 + 6 * Math.exp(-(((p - 0.331) / 0.1) ** 2)));
  const detected = { host: 2.94, ve: 2.94, percent: 0.331, samples: [2.94, 2.94] };
  for (const box of [BOX, { x: 0, y: 0, w: 160, h: 100 }]) {
    const chart = pulseChart({ percent, weight, caption: "guidance 1 .. cfg" }, { detected });
    assert.deepEqual(chart.marks, [sigmaCMark(detected)]);
    const ctx = fakeContext();
    const L = drawChart(ctx, box, chart);
    const x = L.sx(33.1);
    const i = ctx.calls.findIndex((c) => c[0] === "moveTo" && Math.abs(c[1] - x) < 1e-9 && c[2] === L.inner.y);
    assert.ok(i >= 0, "no vertical line at sigma_c");
    assert.deepEqual(ctx.calls[i + 1], ["lineTo", x, L.inner.y + L.inner.h]);
    const label = ctx.calls.find((c) => c[0] === "fillText" && String(c[1]).startsWith("σc 2.94"));
    assert.ok(label, "no sigma_c label");
    assert.ok(label[2] >= box.x && label[2] + ctx.measureText(label[1]).width <= box.x + box.w + 1, "label outside the box");
  }
  // with a centre of its own as well (center = percent after an auto run): both marked
  const both = pulseChart({ percent, weight }, { detected, center: { percent: 0.6, label: "centre" } });
  assert.deepEqual(both.marks.map((m) => m.x), [60, 33.1]);
  assert.equal(pulseChart({ percent, weight }).marks.length, 0);  // nothing detected, nothing marked
});

test("levelsText ends a caption at the last nonzero level, then → 0, never → 0.00", () => {
  assert.equal(levelsText([14.6146, 2.5, 0.3, 0.0292, 0]), "4 steps, σ 14.6 → 0.0292 → 0");
  assert.equal(levelsText([80, 1, 0.002]), "2 steps, σ 80.0 → 0.00200");  // ends above zero: no → 0
  assert.ok(!levelsText([1, 0.5, 0]).includes("0.00"));
});
