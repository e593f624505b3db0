import { test } from "node:test";
import assert from "node:assert/strict";
import { buttonAt, comparerLayout, cycle, fitRect, parseState, press, slope, splitAt, statsText, sweepChart } from "../lib/compare.js";

test("parseState keeps a valid saved view and repairs anything else", () => {
  assert.deepEqual(parseState({ a: 2, b: 0, mode: "side", split: 0.3 }, 4), { a: 2, b: 0, mode: "side", split: 0.3 });
  assert.deepEqual(parseState(null, 4), { a: 1, b: 0, mode: "slide", split: 0.5 });
  assert.deepEqual(parseState({ a: 9, b: -1, mode: "<b>x</b>", split: 7 }, 3), { a: 1, b: 0, mode: "slide", split: 1 });
  assert.deepEqual(parseState("{\"a\": 1}", 3), { a: 1, b: 0, mode: "slide", split: 0.5 });
  assert.equal(parseState({ a: 5 }).a, 5); // before a run the number of entries is unknown: kept
  assert.deepEqual(parseState(null), { a: 1, b: 0, mode: "slide", split: 0.5 }); // first contender against the reference
  assert.equal(parseState(null, 1).a, 0);
});

test("buttons cycle A and B through the entries and switch the mode", () => {
  let s = parseState(null, 3);
  s = press(s, "a+", 3); assert.equal(s.a, 2);
  s = press(s, "a+", 3); assert.equal(s.a, 0);
  s = press(s, "b-", 3); assert.equal(s.b, 2);
  s = press(s, "mode", 3); assert.equal(s.mode, "side");
  assert.equal(cycle(0, -1, 4), 3);
  assert.equal(cycle(0, 1, 0), 0);
});

test("the layout fits the images to their aspect and hit-tests buttons and the slider", () => {
  const box = { x: 10, y: 0, w: 300, h: 320 };
  const slide = comparerLayout(box, 1, "slide");
  const [r] = slide.images;
  assert.ok(Math.abs(r.w - r.h) < 1e-9 && r.y >= box.y + 20 && r.y + r.h <= slide.stats.y);
  const side = comparerLayout(box, 1, "side");
  assert.equal(side.images.length, 2);
  assert.ok(side.images[0].x + side.images[0].w <= side.images[1].x);
  const b = slide.buttons[0];
  assert.equal(buttonAt(slide.buttons, b.x + 1, b.y + 1), "mode");
  assert.equal(buttonAt(slide.buttons, r.x + 5, r.y + 50), null);
  assert.equal(splitAt(r.x + r.w / 4, r), 0.25);
  assert.equal(splitAt(r.x - 50, r), 0);
  const wide = fitRect({ x: 0, y: 0, w: 100, h: 100 }, 2);
  assert.deepEqual(wide, { x: 0, y: 25, w: 100, h: 50 });
});

test("statsText gives calls, time and error, or the failure", () => {
  assert.equal(statsText({ label: "euler 20", calls: 20, seconds: 0.4123, rmse: 0.00123 }), "euler 20: 20 calls · 0.41 s · RMSE 1.23e-3");
  assert.equal(statsText({ label: "x", error: "ValueError: bad" }), "x: failed: ValueError: bad");
  assert.equal(statsText({ label: "ref", calls: 120, seconds: null, rmse: null }), "ref: 120 calls");
});

test("sweepChart groups points per contender, sorted by calls, and hides what the legend switched off", () => {
  const sweep = { reference: "heun 64", failed: {}, points: [
    { contender: "euler", steps: 8, calls: 8, error: 0.1 }, { contender: "euler", steps: 4, calls: 4, error: 0.2 },
    { contender: "heun", steps: 4, calls: 7, error: 0.05 }, { contender: "heun", steps: 8, calls: 15, error: null }] };
  const chart = sweepChart(sweep, ["heun"]);
  assert.deepEqual(chart.series.map((s) => s.label), ["euler", "heun"]);
  assert.deepEqual(chart.series[0].xs, [4, 8]);
  assert.deepEqual(chart.series[1].xs, [7]); // the point without a finite error is left out
  assert.equal(chart.series[1].hidden, true);
  assert.ok(chart.x.log && chart.y.log);
  assert.equal(sweepChart(null).series.length, 0);
});

test("slope of log error against log calls is the order with a minus sign", () => {
  const xs = [4, 8, 16, 32];
  assert.ok(Math.abs(slope(xs, xs.map((x) => 3 / x ** 2)) + 2) < 1e-12);
  assert.ok(Number.isNaN(slope([4], [1])));
});
