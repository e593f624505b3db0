// Finding a node of the graph from what the server names it by. No DOM, no ComfyUI: tested under `node --test`.

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
