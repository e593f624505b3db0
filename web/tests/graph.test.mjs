import { test } from "node:test";
import assert from "node:assert/strict";
import { calibrationStands, nodeByExecutionId, plotKind } from "../lib/graph.js";

const graph = (nodes) => ({ byId: Object.fromEntries(nodes.map((n) => [n.id, n])), getNodeById(id) { return this.byId[id] ?? null; } });

test("nodeByExecutionId finds a node on the root graph and inside subgraphs, and nothing where the path breaks", () => {
  const inner = { id: 12, title: "inner pulse" };
  const root = graph([{ id: 5, title: "pulse" }, { id: 7, subgraph: graph([inner, { id: 3, subgraph: graph([{ id: 1, title: "deep" }]) }]) }]);
  assert.equal(nodeByExecutionId(root, "5").title, "pulse");
  assert.equal(nodeByExecutionId(root, 5).title, "pulse");
  assert.equal(nodeByExecutionId(root, "7:12"), inner);
  assert.equal(nodeByExecutionId(root, "7:3:1").title, "deep");
  for (const id of ["9", "5:1", "7:99", "", null, undefined]) assert.equal(nodeByExecutionId(root, id), null, String(id));
  assert.equal(nodeByExecutionId(null, "5"), null);
});

test("plotKind gives both calibrated nodes the calibrated plot, and each plotted node its own kind", () => {
  assert.equal(plotKind("SamplerLabCalibratedSchedule"), "calibrated");
  assert.equal(plotKind("SamplerLabCalibratedSampler"), "calibrated");
  assert.equal(plotKind("SamplerLabScheduleKarras"), "schedule");
  assert.equal(plotKind("SamplerLabGuidancePulse"), "pulse");
  assert.equal(plotKind("SamplerLabPulseGuider"), "pulse");
  assert.equal(plotKind("SamplerLabPlotSigmas"), "plot_sigmas");
  for (const name of ["SamplerLabCompare", "SamplerLabExpMultistep", "KSampler", ""]) assert.equal(plotKind(name), null, name);
});

test("calibrationStands keeps a run's calibrated levels until a widget of its calibration key changes", () => {
  // a Calibrated sampler's sl_key (nodes/calibrated.py: its cache key's scalar entries) and its widgets then
  const key = { positive: "ab12", negative: "cd34", cfg: 7.5, solver: "calibrated", steps: 5, seeds: 2, seed: 3, space: "ve", format: 1 };
  const run = { steps: 5, cfg: 7.5, seed: 3, seeds: 2, mode: "reuse", cache_dir: "" };
  assert.equal(calibrationStands(key, run), true);
  for (const change of [{ mode: "recalibrate" }, { cache_dir: "/tmp/cache" }]) assert.equal(calibrationStands(key, { ...run, ...change }), true, JSON.stringify(change));
  for (const change of [{ steps: 6 }, { seed: 4 }, { cfg: 7 }, { seeds: 1 }]) assert.equal(calibrationStands(key, { ...run, ...change }), false, JSON.stringify(change));
  assert.equal(calibrationStands(key, { ...run, steps: 6, mode: "recalibrate" }), false);
  // a Calibrated schedule keys on its solver and reference_calls too
  const schedule = { cfg: 1, solver: "dpmpp_2m", steps: 8, seeds: 2, reference_calls: 200, space: "ve" };
  const widgets = { cfg: 1, solver: "dpmpp_2m", steps: 8, seeds: 2, reference_calls: 200, mode: "reuse", cache_dir: "" };
  assert.equal(calibrationStands(schedule, { ...widgets, mode: "recalibrate" }), true);
  for (const change of [{ solver: "euler" }, { reference_calls: 100 }, { steps: 4 }]) assert.equal(calibrationStands(schedule, { ...widgets, ...change }), false, JSON.stringify(change));
  // no run yet (or a server that sent no key): the candidate
  for (const none of [null, undefined]) assert.equal(calibrationStands(none, run), false);
});
