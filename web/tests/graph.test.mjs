import { test } from "node:test";
import assert from "node:assert/strict";
import { nodeByExecutionId, plotKind } from "../lib/graph.js";

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
