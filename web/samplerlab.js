// samplerlab front end: after a samplerlab schedule node runs, draw its sigmas (log sigma against step)
// on the node, so a schedule can be seen instead of read.
import { app } from "../../scripts/app.js";

const PLOT_HEIGHT = 120;

function drawSchedule(ctx, node, sigmas) {
  const w = node.size[0] - 20, h = PLOT_HEIGHT - 20, x0 = 10, y0 = node.size[1] - PLOT_HEIGHT + 10;
  const pts = sigmas.slice(0, -1).map((s) => Math.log(s));
  if (pts.length < 1) return;
  const lo = Math.min(...pts), hi = Math.max(...pts), span = hi - lo || 1;
  ctx.save();
  ctx.strokeStyle = "#888";
  ctx.strokeRect(x0, y0, w, h);
  ctx.strokeStyle = "#4af";
  ctx.fillStyle = "#4af";
  ctx.beginPath();
  pts.forEach((p, i) => {
    const x = x0 + (pts.length > 1 ? (i / (pts.length - 1)) * w : w / 2);
    const y = y0 + h - ((p - lo) / span) * h;
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
  });
  ctx.stroke();
  ctx.fillStyle = "#aaa";
  ctx.font = "10px sans-serif";
  ctx.fillText(`log σ: ${hi.toFixed(2)} … ${lo.toFixed(2)}  (${sigmas.length - 1} steps)`, x0 + 4, y0 + 12);
  ctx.restore();
}

app.registerExtension({
  name: "samplerlab.schedulePlot",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith("SamplerLabSchedule")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (message?.sl_sigmas) {
        this.slSigmas = message.sl_sigmas;
        if (this.size[1] < 200) this.setSize([this.size[0], this.size[1] + PLOT_HEIGHT]);
        this.setDirtyCanvas(true, true);
      }
    };
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      if (this.slSigmas && !this.flags?.collapsed) drawSchedule(ctx, this, this.slSigmas);
    };
  },
});
