// samplerlab front end. Plots on the nodes, drawn from the widget values before anything runs and redrawn as a
// widget changes: the schedule nodes, Calibrated schedule and Calibrated sampler (sigma against step; the calibrated
// ones Karras at their step count until a run reports their levels), Plot sigmas (its input's
// sigmas) and both pulse nodes (guidance weight over the schedule). The numbers come from the pack's route
// POST /samplerlab/plot (nodes/routes.py: the Python registries, never a JavaScript copy of the formulas), for
// ComfyUI's default SD1/SDXL sampling until a run reports the model's own range, which is then marked. A pulse
// with centre auto is told the sigma_c its run detected (the server's "samplerlab.sigma_c" message, sent by
// nodes/guidance.py), drawn centred there and marked until the next run tells another.
// Compare samplers gets an image comparer (slider or side by side, any two of the reference and the contenders,
// calls / time / error under each) and Convergence sweep an error-vs-calls plot (hover a point, click the legend);
// their view state is a widget value, saved with the workflow and never sent to the server.
// No network beyond this ComfyUI server, no eval, no HTML: text is drawn on the canvas. Where the front end lacks
// an API used here the node stays the plain node.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { drawChart, layout, legendAt, levelsText, nearestPoint, pulseChart, scheduleChart, clip } from "./lib/plot.js";
import { calibrationStands, nodeByExecutionId, plotKind } from "./lib/graph.js";
import { buttonAt, comparerLayout, parseState, press, splitAt, statsText, sweepChart, slope } from "./lib/compare.js";

const ROUTE = "/samplerlab/plot";
const SIGMA_C_EVENT = "samplerlab.sigma_c";
const PLOT_HEIGHT = 170;
const COMPARER_HEIGHT = 320;
const SWEEP_HEIGHT = 260;
const PULSE_FIELDS = ["shape", "center", "center_percent", "width", "base", "start_percent", "end_percent"];
const OWN = new Set(["sl_plot", "sl_view"]);

const snake = (camel) => camel.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toLowerCase();
const widgetValues = (node) => Object.fromEntries((node.widgets ?? []).filter((w) => !OWN.has(w.name)).map((w) => [w.name, w.value]));

/** Grow (never shrink) the node to what its widgets need. */
function fit(node) {
  if (typeof node.computeSize !== "function" || typeof node.setSize !== "function") return;
  const [w, h] = node.computeSize();
  if (w > node.size[0] || h > node.size[1]) node.setSize([Math.max(node.size[0], w), Math.max(node.size[1], h)]);
}

/** A canvas widget of fixed height at the end of the node; `view` draws into its box and takes the pointer. */
function addCanvasWidget(node, name, height, view, value) {
  const widget = {
    name, type: `samplerlab_${name}`, value, options: { serialize: false }, box: null,
    computeSize: (width) => [width, height],
    draw(ctx, _node, width, y) {
      this.box = { x: 10, y: y + 2, w: width - 20, h: height - 4 };
      try { view.draw(ctx, this.box, this); } catch (e) { console.warn("samplerlab: plot not drawn", e); }
    },
    mouse(event, pos) {
      return this.box && view.mouse ? view.mouse(event, pos, this.box, this) : false;
    },
  };
  if (name === "sl_plot") widget.serialize = false;
  node.addCustomWidget(widget);
  fit(node);
  return widget;
}

// ---- live plots -------------------------------------------------------------------------------------------

/** What to ask the route for, from a node's widgets (null: nothing to ask). */
const REQUESTS = {
  schedule: (node, v, model) => {
    const params = { ...v };
    delete params.steps; delete params.denoise;
    return { kind: "schedule", name: snake(node.slType.slice("SamplerLabSchedule".length)), steps: v.steps,
      denoise: v.denoise, params, model };
  },
  calibrated: (node, v, model) => ({ kind: "schedule", name: "karras", steps: v.steps, denoise: 1, params: {}, model }),
  pulse: (node, v, model) => {
    const fields = Object.fromEntries(PULSE_FIELDS.map((k) => [k, v[k]]));
    // centre auto after a run: drawn at the sigma_c that run detected (its percent of the schedule)
    if (autoCentre(v) && node.slPlot?.detected) Object.assign(fields, { center: "percent", center_percent: node.slPlot.detected.sigma_c.percent });
    return { kind: "pulse", fields, peak: "cfg" in v ? v.cfg : null, model };
  },
};

const spaceName = (model) => (model.space === "flow" ? "flow" : "VE");

/** The caption's word on the model a plot is drawn for (kept short: a caption is one clipped line). */
function modelNote(model) {
  if (!model || model.default) return "SD1/SDXL until a run";
  return `last run's ${spaceName(model)} model`;
}

const autoCentre = (v) => v.shape !== "interval" && v.center === "auto";

/** The chart of a route answer or of a run's output. */
function chartOf(kind, data, node, fromRun) {
  if (data.error) return { series: [], message: data.error, error: true, caption: "cannot plot these values" };
  const v = widgetValues(node);
  if (kind === "pulse") {
    const center = v.shape !== "interval" && v.center === "percent" ? { percent: v.center_percent, label: "centre" } : undefined;
    const detected = node.slPlot?.detected?.sigma_c;
    // centred at the last run's sigma_c: drawn for that run's model, which the caption need not say
    const note = detected && autoCentre(v) ? ", at last run's σc" : ` · ${modelNote(data.model)}`;
    const caption = data.percent?.length ? `${data.caption}${note}` : modelNote(data.model);
    const chart = pulseChart(data, { caption, center, detected });
    if (!("cfg" in v) && data.weight?.length) chart.marks.push({ y: Math.max(...data.weight), label: "peak = the KSampler's cfg", color: "#9cf" });
    return chart;
  }
  const s = data.sigmas;
  const model = data.model && !data.model.default ? data.model : null;
  // a calibrated node's levels after a run are that run's, for its model: said once
  const caption = kind !== "calibrated" ? `${levelsText(s)} · ${modelNote(data.model)}`
    : fromRun ? `last run: ${levelsText(s)}${model ? ` · ${spaceName(model)} model` : ""}`
    : `before a run: Karras ${s.length - 1} steps (a candidate); run to calibrate · ${modelNote(data.model)}`;
  return scheduleChart(s, { caption, model });
}

/** Ask the route for the node's plot when its widget values (or the model they are drawn for) changed; a calibrated
 *  node keeps its last run's levels while the widgets of that run's calibration key keep their values. */
function refresh(node, kind) {
  const state = node.slPlot;
  const values = widgetValues(node);
  const run = kind === "calibrated" && calibrationStands(state.run?.key, values) ? state.run : null;
  const request = REQUESTS[kind](node, values, state.model ?? null);
  const key = run ? "last run" : JSON.stringify(request);
  if (key === state.key) return;
  state.key = key;
  if (run) {
    state.chart = chartOf(kind, { sigmas: run.sigmas, model: run.model }, node, true);
    state.sigmas = run.sigmas;
    node.setDirtyCanvas?.(true, true);
    return;
  }
  if (typeof api?.fetchApi !== "function") {
    state.chart = { series: [], message: "this front end has no api.fetchApi: plots appear after a run" };
    return;
  }
  clearTimeout(state.timer);
  state.timer = setTimeout(async () => {
    const asked = key;
    let data;
    try {
      const response = await api.fetchApi(ROUTE, { method: "POST", headers: { "Content-Type": "application/json" }, body: key });
      data = await response.json();
      if (!response.ok && !data?.error) data = { error: `the plot route answered ${response.status}` };
    } catch (e) {
      data = { error: `plot route unreachable (${e?.message ?? e})` };
    }
    if (state.key !== asked) return;
    state.chart = chartOf(kind, data, node, false);
    if (data.sigmas) state.sigmas = data.sigmas;
    node.setDirtyCanvas?.(true, true);
  }, 120);
}

function plotView(node, kind) {
  node.slPlot = { chart: { series: [], message: "drawing…" }, key: null, model: null, sigmas: null, detected: null, run: null };
  return {
    draw(ctx, box) {
      const state = node.slPlot;
      if (kind === "plot_sigmas") {
        const source = node.getInputNode?.(0);
        const sigmas = source?.slPlot?.sigmas ?? state.sigmas;
        const chart = sigmas ? scheduleChart(sigmas, { caption: `${sigmas.length - 1} steps${source?.slPlot?.sigmas ? " (live from its input)" : " (last run)"}`,
          model: source?.slPlot?.model ?? null }) : { series: [], message: "connect a schedule: samplerlab schedules plot live, others after a run" };
        drawChart(ctx, box, chart);
        return;
      }
      refresh(node, kind);
      drawChart(ctx, box, state.chart);
    },
  };
}

function setupPlot(nodeType, kind, name) {
  const onNodeCreated = nodeType.prototype.onNodeCreated;
  nodeType.prototype.onNodeCreated = function () {
    const r = onNodeCreated?.apply(this, arguments);
    this.slType = name;
    if (typeof this.addCustomWidget === "function") {
      addCanvasWidget(this, "sl_plot", PLOT_HEIGHT, plotView(this, kind));
      if (REQUESTS[kind]) {
        // asked now and on each widget change, also when off screen; a draw asks again if anything else changed
        for (const w of this.widgets ?? []) {
          if (OWN.has(w.name)) continue;
          const callback = w.callback;
          w.callback = (...args) => { const out = callback?.apply(w, args); setTimeout(() => refresh(this, kind)); return out; };
        }
        setTimeout(() => refresh(this, kind));
      }
    }
    return r;
  };
  const onConfigure = nodeType.prototype.onConfigure;
  nodeType.prototype.onConfigure = function () {
    const r = onConfigure?.apply(this, arguments);
    if (this.slPlot) fit(this);
    return r;
  };
  const onExecuted = nodeType.prototype.onExecuted;
  nodeType.prototype.onExecuted = function (message) {
    onExecuted?.apply(this, arguments);
    showRun(this, kind, message);
  };
}

const sameModel = (a, b) => a?.space === b?.space && a?.sigma_min === b?.sigma_min && a?.sigma_max === b?.sigma_max;

/** A run's output on a plot node: the node's own (onExecuted) or, for a pulse, what its run detected
 *  ({sl_pulse: [the "samplerlab.sigma_c" message]}: the pulse centred at sigma_c, and sigma_c). A detection stands,
 *  drawn and marked, until the next one, or until the node reports a fixed centre or another model. */
function showRun(node, kind, message) {
  const state = node.slPlot;
  if (!state) return;
  let pulse = message?.sl_pulse?.[0];
  if (pulse?.sigma_c) state.detected = pulse;
  else if (pulse && state.detected) {
    if (pulse.percent?.length || !sameModel(pulse.model, state.detected.model)) state.detected = null;
    else pulse = state.detected; // centre auto on the same model: the last detection is the news until the next
  }
  const model = message?.sl_model?.[0] ?? pulse?.model;
  if (model) state.model = model;
  if (message?.sl_sigmas) {
    state.sigmas = message.sl_sigmas;
    if (kind !== "plot_sigmas") state.chart = chartOf(kind, { sigmas: message.sl_sigmas, model: state.model }, node, true);
    // a calibrated node's levels, with the key they were calibrated for: drawn again while its widgets match it
    if (kind === "calibrated") state.run = { sigmas: message.sl_sigmas, model: state.model, key: message.sl_key?.[0] ?? null };
  } else if (pulse) state.chart = chartOf(kind, { ...pulse, model: state.model }, node, true);
  // later widget changes are drawn for this model (the route gets its view); the run's own plot stays until then
  if (kind === "calibrated") state.key = calibrationStands(state.run?.key, widgetValues(node)) ? "last run" : null;
  else if (REQUESTS[kind]) state.key = JSON.stringify(REQUESTS[kind](node, widgetValues(node), state.model ?? null));
  node.setDirtyCanvas?.(true, true);
}

/** The server's word that a pulse's run detected sigma_c: to that node's plot (nothing without the API). */
function listenForSigmaC() {
  if (typeof api?.addEventListener !== "function") return;
  api.addEventListener(SIGMA_C_EVENT, ({ detail }) => {
    const node = nodeByExecutionId(app.rootGraph ?? app.graph, detail?.node);
    if (node?.slPlot && plotKind(node.slType ?? "") === "pulse") showRun(node, "pulse", { sl_pulse: [detail] });
  });
}

// ---- Compare samplers: image comparer -----------------------------------------------------------------------

function viewURL(image) {
  const query = new URLSearchParams({ filename: String(image.filename ?? ""), subfolder: String(image.subfolder ?? ""), type: String(image.type ?? "temp") });
  return api.apiURL(`/view?${query}`);
}

function comparerView(node) {
  node.slCompare = { entries: [], images: [] };
  const entriesCount = () => node.slCompare.entries.length;
  return {
    draw(ctx, box, widget) {
      const { entries, images } = node.slCompare;
      const state = parseState(widget.value, entries.length || undefined);
      ctx.save();
      ctx.font = "10px sans-serif";
      if (!entries.length) {
        ctx.fillStyle = "#bbb";
        ctx.fillText("run the graph: compare any two of the reference and the contenders here", box.x + 6, box.y + 16);
        ctx.fillText(`view: ${state.mode === "slide" ? "slider" : "side by side"} (saved with the workflow)`, box.x + 6, box.y + 30);
        ctx.restore();
        return;
      }
      const A = entries[state.a], B = entries[state.b];
      const imgA = images[state.a], imgB = images[state.b];
      const any = imgA?.naturalWidth ? imgA : imgB;
      const aspect = any?.naturalWidth ? any.naturalWidth / any.naturalHeight : 1;
      const L = comparerLayout(box, aspect, state.mode);
      widget.slLayout = L;
      const labels = { mode: state.mode === "slide" ? "side by side" : "slider", "a-": "◀ A", "a+": "A ▶", "b-": "◀ B", "b+": "B ▶" };
      for (const b of L.buttons) {
        ctx.fillStyle = "#333"; ctx.fillRect(b.x, b.y, b.w, b.h);
        ctx.strokeStyle = "#666"; ctx.strokeRect(b.x, b.y, b.w, b.h);
        ctx.fillStyle = "#ddd"; ctx.textAlign = "center"; ctx.fillText(labels[b.id], b.x + b.w / 2, b.y + b.h - 5);
      }
      ctx.textAlign = "left";
      const picture = (img, r) => {
        if (img?.complete && img.naturalWidth) {
          ctx.imageSmoothingEnabled = img.naturalWidth >= r.w; // small latents stay crisp pixels
          ctx.drawImage(img, r.x, r.y, r.w, r.h);
        }
        else { ctx.fillStyle = "#444"; ctx.fillRect(r.x, r.y, r.w, r.h); ctx.fillStyle = "#bbb"; ctx.fillText(img ? "loading…" : "no picture", r.x + 4, r.y + 24); }
      };
      const tag = (r, label, right) => {  // a label on a dark band at the top left (or right) of r
        const w = Math.min(r.w / (right === undefined ? 1 : 2) - 2, ctx.measureText(label).width + 6);
        const x = right ? r.x + r.w - w : r.x;
        ctx.fillStyle = "rgba(0,0,0,0.6)"; ctx.fillRect(x, r.y, w, 14);
        ctx.fillStyle = "#fff"; ctx.fillText(clip(ctx, label, w - 4), x + 3, r.y + 10);
      };
      if (state.mode === "side") {
        picture(imgA, L.images[0]); tag(L.images[0], `A: ${A.label}`);
        picture(imgB, L.images[1]); tag(L.images[1], `B: ${B.label}`);
      } else {
        const r = L.images[0];
        picture(imgB, r);
        const cut = r.w * state.split;
        ctx.save();
        ctx.beginPath(); ctx.rect(r.x, r.y, cut, r.h); ctx.clip();
        picture(imgA, r);
        ctx.restore();
        ctx.fillStyle = "#fc6"; ctx.fillRect(r.x + cut - 1, r.y, 2, r.h);
        tag(r, `A: ${A.label}`, false);
        tag(r, `B: ${B.label}`, true);
      }
      ctx.fillStyle = "#ccc";
      ctx.fillText(clip(ctx, `A ${statsText(A)}`, L.stats.w), L.stats.x, L.stats.y + 11);
      ctx.fillText(clip(ctx, `B ${statsText(B)}`, L.stats.w), L.stats.x, L.stats.y + 24);
      ctx.restore();
    },
    mouse(event, pos, box, widget) {
      const L = widget.slLayout, n = entriesCount();
      if (!L || !n) return false;
      const state = parseState(widget.value, n);
      const type = event.type;
      if (type === "pointerdown" || type === "mousedown") {
        const id = buttonAt(L.buttons, pos[0], pos[1]);
        if (id) { widget.value = press(state, id, n); node.setDirtyCanvas?.(true, true); return true; }
      }
      if (state.mode === "slide" && (type === "pointerdown" || type === "pointermove" || type === "mousedown" || type === "mousemove")) {
        const r = L.images[0];
        if (pos[1] >= r.y && pos[1] <= r.y + r.h) { widget.value = { ...state, split: splitAt(pos[0], r) }; node.setDirtyCanvas?.(true, true); return true; }
      }
      return false;
    },
  };
}

function setupComparer(nodeType) {
  const onNodeCreated = nodeType.prototype.onNodeCreated;
  nodeType.prototype.onNodeCreated = function () {
    const r = onNodeCreated?.apply(this, arguments);
    if (typeof this.addCustomWidget === "function") addCanvasWidget(this, "sl_view", COMPARER_HEIGHT, comparerView(this), parseState(null));
    return r;
  };
  const onExecuted = nodeType.prototype.onExecuted;
  nodeType.prototype.onExecuted = function (message) {
    onExecuted?.apply(this, arguments);
    const data = message?.sl_compare?.[0];
    if (!this.slCompare || !data) return;
    this.slCompare.entries = data.entries ?? [];
    this.slCompare.images = this.slCompare.entries.map((e) => {
      if (!e.image || typeof Image === "undefined") return null;
      const img = new Image();
      img.onload = () => this.setDirtyCanvas?.(true, true);
      img.src = viewURL(e.image);
      return img;
    });
    const widget = this.widgets?.find((w) => w.name === "sl_view");
    if (widget) widget.value = parseState(widget.value, this.slCompare.entries.length);
    this.setDirtyCanvas?.(true, true);
  };
}

// ---- Convergence sweep: error against calls -----------------------------------------------------------------

function sweepView(node) {
  node.slSweep = { data: null, hover: null };
  const chartFor = (widget) => sweepChart(node.slSweep.data, Array.isArray(widget.value?.hidden) ? widget.value.hidden : []);
  return {
    draw(ctx, box, widget) {
      const chart = chartFor(widget);
      const h = node.slSweep.hover;
      if (h && chart.series[h.series]) {
        const s = chart.series[h.series];
        chart.caption = `${s.label}, ${s.steps[h.index]} steps: ${h.x} calls, RMSE ${h.y.toExponential(2)}`;
      } else if (chart.series.length) {
        chart.caption += " · slopes " + chart.series.map((s) => `${s.label} ${slope(s.xs, s.ys).toFixed(2)}`).join(", ");
      }
      widget.slLayout = drawChart(ctx, box, chart);
      if (h && widget.slLayout) {
        ctx.save(); ctx.strokeStyle = "#fff"; ctx.strokeRect(widget.slLayout.sx(h.x) - 4, widget.slLayout.sy(h.y) - 4, 8, 8); ctx.restore();
      }
    },
    mouse(event, pos, box, widget) {
      if (!widget.slLayout || !(event.type === "pointerdown" || event.type === "mousedown")) return false;
      const chart = chartFor(widget);
      const i = legendAt(chart, widget.slLayout.inner, pos[0], pos[1]);
      if (i < 0) return false;
      const hidden = new Set(Array.isArray(widget.value?.hidden) ? widget.value.hidden : []);
      const label = chart.series[i].label;
      if (hidden.has(label)) hidden.delete(label); else hidden.add(label);
      widget.value = { hidden: [...hidden] };
      node.setDirtyCanvas?.(true, true);
      return true;
    },
    hover(pos, widget) {
      if (!widget.slLayout) return;
      const hit = nearestPoint(chartFor(widget), widget.slLayout, pos[0], pos[1]);
      if (JSON.stringify(hit) !== JSON.stringify(node.slSweep.hover)) { node.slSweep.hover = hit; node.setDirtyCanvas?.(true, false); }
    },
  };
}

function setupSweep(nodeType) {
  const onNodeCreated = nodeType.prototype.onNodeCreated;
  nodeType.prototype.onNodeCreated = function () {
    const r = onNodeCreated?.apply(this, arguments);
    if (typeof this.addCustomWidget === "function") {
      const view = sweepView(this);
      const widget = addCanvasWidget(this, "sl_view", SWEEP_HEIGHT, view, { hidden: [] });
      const onMouseMove = this.onMouseMove;
      this.onMouseMove = function (event, pos) {
        onMouseMove?.apply(this, arguments);
        view.hover(pos, widget);
      };
    }
    return r;
  };
  const onExecuted = nodeType.prototype.onExecuted;
  nodeType.prototype.onExecuted = function (message) {
    onExecuted?.apply(this, arguments);
    if (this.slSweep && message?.sl_sweep?.[0]) { this.slSweep.data = message.sl_sweep[0]; this.setDirtyCanvas?.(true, true); }
  };
}

app.registerExtension({
  name: "samplerlab.plots",
  setup: listenForSigmaC,
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const name = nodeData?.name ?? "";
    const kind = plotKind(name);
    if (kind) setupPlot(nodeType, kind, name);
    else if (name === "SamplerLabCompare") setupComparer(nodeType);
    else if (name === "SamplerLabConvergenceSweep") setupSweep(nodeType);
  },
});
