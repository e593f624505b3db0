// The pack's nodes in the graph: which live plot a node type gets, and finding a node from what the server names
// it by. No DOM, no ComfyUI: tested under `node --test`.

/** Both calibrated nodes: their SIGMAS drawn the same way (Karras at `steps` until a run reports their levels). */
const CALIBRATED = new Set(["SamplerLabCalibratedSchedule", "SamplerLabCalibratedSampler"]);

/** The live plot a node type gets ("schedule", "calibrated", "pulse", "plot_sigmas"), or null for none. */
export function plotKind(name) {
  if (name.startsWith("SamplerLabSchedule")) return "schedule";
  if (CALIBRATED.has(name)) return "calibrated";
  if (name === "SamplerLabGuidancePulse" || name === "SamplerLabPulseGuider") return "pulse";
  if (name === "SamplerLabPlotSigmas") return "plot_sigmas";
  return null;
}

/** The node a server message names by its execution id: "12" on the root graph, "7:12" node 12 inside the
 *  subgraph of node 7 (any depth); null when a step of the path is not there. */
export function nodeByExecutionId(graph, id) {
  if (id === undefined || id === null) return null;
  let node = null;
  for (const part of String(id).split(":")) {
    if (typeof graph?.getNodeById !== "function") return null;
    node = graph.getNodeById(part) ?? null;
    if (!node) return null;
    graph = node.subgraph;
  }
  return node;
}

/** Whether a calibrated node's plot keeps the levels of its last run: `runKey` is that run's calibration key (its
 *  scalar entries, the node's `sl_key`: steps, cfg, seeds, ... and names no widget holds, such as the conditioning's
 *  digest), `values` the node's widget values now. True when there was a run and every key entry that names a
 *  widget still has the run's value (seed, cfg, steps, ... as the node keys its cache; mode and cache_dir are not
 *  in the key, so changing them keeps the levels); false sends the plot back to the candidate. */
export function calibrationStands(runKey, values) {
  if (!runKey || typeof runKey !== "object") return false;
  return Object.entries(runKey).every(([name, value]) => !(name in values) || values[name] === value);
}
