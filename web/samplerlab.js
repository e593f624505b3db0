// samplerlab front end: after a samplerlab node runs, draw what it computed on the node, so it can be seen
// instead of read: a schedule node's sigmas (log sigma against step), a guidance pulse's weight over the
// model's schedule (guidance against percent of the schedule).
import { app } from "../../scripts/app.js";

const PLOT_HEIGHT = 120;

function drawCurve(ctx, node, xs, ys, caption) {
  const w = node.size[0] - 20, h = PLOT_HEIGHT - 20, x0 = 10, y0 = node.size[1] - PLOT_HEIGHT + 10;
  ctx.save();
  ctx.strokeStyle = "#888";
  ctx.strokeRect(x0, y0, w, h);
  if (ys.length > 0) {
    const lo = Math.min(...ys), hi = Math.max(...ys), span = hi - lo || 1;
    const xlo = Math.min(...xs), xspan = Math.max(...xs) - xlo || 1;
    ctx.strokeStyle = "#4af";
    ctx.fillStyle = "#4af";
    ctx.beginPath();
    ys.forEach((v, i) => {
      const x = x0 + (xs.length > 1 ? ((xs[i] - xlo) / xspan) * w : w / 2);
      const y = y0 + h - 4 - ((v - lo) / span) * (h - 20);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      if (ys.length <= 40) ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
    });
    ctx.stroke();
  }
  ctx.fillStyle = "#aaa";
  ctx.font = "10px sans-serif";
  ctx.fillText(caption, x0 + 4, y0 + 12);
  ctx.restore();
}

const PLOTS = [
  {
    // SamplerLabSchedule*: message.sl_sigmas = the sigmas, ending at 0 (not drawn: log 0).
    matches: (name) => name.startsWith("SamplerLabSchedule"),
    key: "sl_sigmas",
    draw: (ctx, node, sigmas) => {
      const ys = sigmas.slice(0, -1).map((s) => Math.log(s));
      const caption = ys.length
        ? `log σ: ${Math.max(...ys).toFixed(2)} … ${Math.min(...ys).toFixed(2)}  (${sigmas.length - 1} steps)` : "";
      drawCurve(ctx, node, ys.map((_, i) => i), ys, caption);
    },
  },
  {
    // Guidance pulse / Pulse guider: message.sl_pulse = [{percent, weight, caption}] (no curve for centre auto).
    matches: (name) => name === "SamplerLabGuidancePulse" || name === "SamplerLabPulseGuider",
    key: "sl_pulse",
    draw: (ctx, node, [pulse]) => drawCurve(ctx, node, pulse.percent ?? [], pulse.weight ?? [], pulse.caption),
  },
];

app.registerExtension({
  name: "samplerlab.plots",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const plot = PLOTS.find((p) => p.matches(nodeData.name));
    if (!plot) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (message?.[plot.key]) {
        this.slPlot = message[plot.key];
        if (this.size[1] < 200) this.setSize([this.size[0], this.size[1] + PLOT_HEIGHT]);
        this.setDirtyCanvas(true, true);
      }
    };
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      if (this.slPlot && !this.flags?.collapsed) plot.draw(ctx, this, this.slPlot);
    };
  },
});
