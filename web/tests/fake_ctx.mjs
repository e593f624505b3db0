// A 2-D canvas context that records what is drawn (enough of the API for web/lib/plot.js).
export function fakeContext() {
  const calls = [];
  const state = { fillStyle: "", strokeStyle: "", font: "", textAlign: "", textBaseline: "", lineWidth: 1, globalAlpha: 1 };
  const ctx = { calls, ...state };
  for (const name of ["save", "restore", "beginPath", "moveTo", "lineTo", "stroke", "fillRect", "strokeRect", "fillText", "setLineDash", "rect", "clip", "drawImage"]) {
    ctx[name] = (...args) => { calls.push([name, ...args]); };
  }
  ctx.measureText = (t) => ({ width: String(t).length * 6 });
  return ctx;
}
