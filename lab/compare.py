"""Paired A/B comparison of sampler runs against one reference run, shared by `python -m samplerlab
compare` and the ComfyUI nodes (nodes/compare.py adapts ComfyUI objects to `Entry`).

Every contender and the reference run once per seed from the same start (paired), seed-major
(seed 1: reference, A, B, ...; seed 2: ...), so machine drift hits all alike. Per contender: model calls
as counted by the host, wall time, RMSE and PSNR against the reference in latent space, SSIM in pixel
space when a decoder is given; mean and Student-t 95% interval over samples, and the paired difference
against the first contender. A contender that raises is reported as failed and the others go on; one
whose output holds NaN or inf is a flagged "non-finite" column (its figures null in the strict JSON of
`to_json`, flagged by path) and the others are reported as usual.
"""
import json
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from PIL import Image, ImageDraw

from . import charts, images
from .metrics import band_energies, mean_ci_t, paired, psnr, rmse, same_shape, ssim, x0_speed
from .runner import Record, order_slope

TILE = 256


@dataclass
class Outcome:
    """One run's result: final samples [B, ...], denoiser evaluations the sampler asked for, and (where
    the host can count them) network forward passes."""

    x: torch.Tensor
    calls: int
    passes: Optional[int] = None


@dataclass
class Entry:
    """A run to compare: `run(seed, step)` returns an Outcome and calls step(i) after step i.
    steps None marks an exact reference (no step count)."""

    label: str
    steps: Optional[int]
    run: Callable
    meta: dict = field(default_factory=dict)


@dataclass
class Result:
    label: str
    steps: Optional[int]
    meta: dict
    error: Optional[str] = None
    calls: list = field(default_factory=list)
    passes: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    rmse: list = field(default_factory=list)
    psnr: list = field(default_factory=list)
    ssim: list = field(default_factory=list)
    finals: list = field(default_factory=list)
    pictures: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    nonfinite: int = 0
    values: int = 0

    @property
    def ok(self):
        return self.error is None

    @property
    def finite(self):
        return self.nonfinite == 0

    @property
    def status(self):
        return "failed" if not self.ok else "ok" if self.finite else "non-finite"

    @property
    def problem(self):
        """Why this run has no usable figures (None when it has): its exception, or its non-finite output."""
        if not self.ok:
            return self.error
        return None if self.finite else f"non-finite output ({self.nonfinite} of {self.values} values NaN or inf)"


def count_nonfinite(r, x):
    """Record how many of x's values are NaN or inf in Result r."""
    r.nonfinite += int((~torch.isfinite(x)).sum())
    r.values += x.numel()


def unique_labels(labels):
    """Labels made unique by appending ' #2', ' #3', ... to repeats."""
    seen, out = {}, []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out


def check_entries(entries, reference, seeds, minimum=2):
    """ValueErrors for too few contenders, no seeds, or a reference coarser than a contender."""
    if len(entries) < minimum:
        raise ValueError(f"contenders: need at least {minimum}, got {len(entries)}")
    if len(seeds) < 1:
        raise ValueError("seeds: need at least 1")
    if reference.steps is not None:
        for e in entries:
            if e.steps is not None and e.steps > reference.steps:
                raise ValueError(f"reference: {reference.steps} steps is fewer than contender {e.label!r} ({e.steps} steps); "
                                 "the reference must be the finest solve")


def _units(e):
    return e.steps or 1


def preview(x, ref):
    """A latent sample [C, H, W] (or [C, T, H, W]: first frame) as an [H, W, 3] picture in [0, 1]: its
    first three channels, scaled by the reference sample's range so all columns share one scale."""
    if x.ndim == 4:
        x, ref = x[:, 0], ref[:, 0]
    x, ref = x.detach().to("cpu", torch.float64), ref.detach().to("cpu", torch.float64)
    lo, hi = float(ref.min()), float(ref.max())
    x = ((x - lo) / (hi - lo if hi > lo else 1.0)).clamp(0, 1).nan_to_num(0.0)
    x = x[:3] if x.shape[0] >= 3 else x[:1].expand(3, *x.shape[1:])
    return x.permute(1, 2, 0)


def run_paired(entries, reference, seeds, decode=None, progress=None, fatal=(), keep=4):
    """Run the reference and every entry for every seed (seed-major; repeated labels get ' #2', ...). decode(x [B, ...]) -> images
    [B, H, W, C] in [0, 1] enables SSIM and decoded pictures. progress(done, total) after every step;
    exceptions of the `fatal` types (cancellation) propagate, others mark that entry failed.
    Returns (reference Result, [Result])."""
    total = sum(_units(e) for e in [reference, *entries]) * len(seeds)
    done = 0

    def stepper(base, units):
        return lambda i: progress(base + min(int(i) + 1, units), total) if progress else None

    def timed(e, seed):
        t0 = time.perf_counter()
        out = e.run(seed, stepper(done, _units(e)))
        return out, time.perf_counter() - t0

    ref = Result(reference.label, reference.steps, dict(reference.meta))
    results = [Result(label, e.steps, dict(e.meta)) for e, label in zip(entries, unique_labels([e.label for e in entries]))]
    kept = 0
    for seed in seeds:
        out, secs = timed(reference, seed)
        ref_x = out.x.detach().to("cpu", torch.float32)
        count_nonfinite(ref, ref_x)
        ref_img = decode(ref_x) if decode is not None else None
        ref.calls.append(out.calls), ref.passes.append(out.passes), ref.seconds.append(secs)
        show = list(range(min(keep - kept, len(ref_x))))
        ref.finals += [ref_x[j] for j in show]
        ref.rows += [f"seed {seed}" + (f" #{j}" if len(ref_x) > 1 else "") for j in show]
        ref.pictures += [ref_img[j] if ref_img is not None else preview(ref_x[j], ref_x[j]) for j in show] if ref_x.ndim >= 3 else []
        done += _units(reference)
        for e, r in zip(entries, results):
            if r.ok:
                try:
                    out, secs = timed(e, seed)
                    x = out.x.detach().to("cpu", torch.float32)
                    same_shape(x, ref_x, "latent")
                    count_nonfinite(r, x)
                    img = decode(x) if decode is not None else None
                    r.rmse.append(rmse(x, ref_x)), r.psnr.append(psnr(x, ref_x))
                    if img is not None:
                        r.ssim.append(ssim(img.float(), ref_img.float()))
                    r.calls.append(out.calls), r.passes.append(out.passes), r.seconds.append(secs)
                    r.finals += [x[j] for j in show]
                    r.pictures += [img[j] if img is not None else preview(x[j], ref_x[j]) for j in show] if x.ndim >= 3 else []
                except fatal:
                    raise
                except Exception as exc:  # one contender failing must not stop the others: reported, not hidden
                    r.error = f"{type(exc).__name__}: {exc}"
            done += _units(e)
            if progress is not None:
                progress(done, total)
        kept += len(show)
    return ref, results


def compare(entries, reference, seeds, decode=None, progress=None, fatal=(), keep=4):
    """run_paired after the checks (at least two contenders, reference at least as fine as each)."""
    check_entries(entries, reference, seeds)
    return run_paired(entries, reference, seeds, decode, progress, fatal, keep)


def _stat(values):
    v = torch.cat([torch.as_tensor(t, dtype=torch.float64).flatten() for t in values])
    mean, ci = mean_ci_t(v)
    return {"mean": mean, "ci95": ci, "n": int(v.numel())}


def _per_sample(values):
    return {**_stat(values), "per_sample": torch.cat(values).tolist()}


def summary(ref, results, seeds, pixel_space):
    """The JSON-ready report: settings, the reference's cost, and per contender its status, counted
    model calls, time, RMSE / PSNR (latent) and SSIM (pixel) with 95% t-intervals, and the paired
    differences against the first contender that ran ("lower": samples where this one is lower)."""
    base = next((r for r in results if r.ok and r.finite), None)
    rows = []
    for r in results:
        row = {"label": r.label, "steps": r.steps, **r.meta, "status": r.status, "error": r.error}
        if r.ok and not r.finite:
            row.update(nonfinite_values=r.nonfinite, values=r.values)
        if r.ok:
            row.update(model_calls={**_stat(r.calls), "per_seed": r.calls}, seconds={**_stat(r.seconds), "per_seed": r.seconds},
                       rmse=_per_sample(r.rmse), psnr_db=_per_sample(r.psnr), ssim=_per_sample(r.ssim) if r.ssim else None)
            if None not in r.passes:
                row["network_passes"] = {**_stat(r.passes), "per_seed": r.passes}
            if base is not None and r is not base and r.finite:
                cat = lambda v: torch.cat(v)
                row["paired_vs"] = {"baseline": base.label, "rmse": paired(cat(r.rmse), cat(base.rmse)),
                                    "psnr_db": paired(cat(r.psnr), cat(base.psnr)),
                                    "ssim": paired(cat(r.ssim), cat(base.ssim)) if r.ssim and base.ssim else None}
        rows.append(row)
    ref_row = {"label": ref.label, "steps": ref.steps, **ref.meta, "model_calls": {**_stat(ref.calls), "per_seed": ref.calls},
               "seconds": {**_stat(ref.seconds), "per_seed": ref.seconds}}
    if not ref.finite:
        ref_row.update(status="non-finite", nonfinite_values=ref.nonfinite, values=ref.values)
    return {"kind": "samplerlab.compare", "version": 1, "seeds": list(seeds), "pixel_space": pixel_space,
            "interval": "95% Student t over samples (seeds x batch)", "reference": ref_row, "contenders": rows}


def strict(value, path="", flagged=None):
    """(value with every NaN / inf float replaced by None, [paths of the replaced ones]) for strict JSON."""
    flagged = [] if flagged is None else flagged
    if isinstance(value, float) and not math.isfinite(value):
        flagged.append(path or ".")
        return None, flagged
    if isinstance(value, dict):
        return {k: strict(v, f"{path}.{k}" if path else str(k), flagged)[0] for k, v in value.items()}, flagged
    if isinstance(value, (list, tuple)):
        return [strict(v, f"{path}[{i}]", flagged)[0] for i, v in enumerate(value)], flagged
    return value, flagged


def to_json(report, **kw):
    """The report as strict JSON (allow_nan=False): non-finite numbers are null and listed under "nonfinite"."""
    clean, flagged = strict(report)
    if flagged:
        clean["nonfinite"] = flagged
    return json.dumps(clean, allow_nan=False, **kw)


def markdown(report):
    """A Markdown table of a summary() report."""
    ssim_col = report["pixel_space"]
    lines = ["| contender | steps | model calls | seconds | RMSE | PSNR dB | " + ("SSIM | " if ssim_col else "") + "paired dRMSE vs first |",
             "|---|---|---|---|---|---|" + ("---|" if ssim_col else "") + "---|"]
    for row in report["contenders"]:
        if row["status"] == "failed":
            lines.append(f"| {row['label']} | {row['steps']} | failed: {row['error']} |")
            continue
        if row["status"] == "non-finite":
            lines.append(f"| {row['label']} | {row['steps']} | {row['model_calls']['mean']:g} | non-finite output: "
                         f"{row['nonfinite_values']} of {row['values']} values NaN or inf |")
            continue
        ci = lambda s, f: f"{s['mean']:{f}} ± {s['ci95']:{f}}"
        pv = row.get("paired_vs")
        diff = f"{pv['rmse']['mean_diff']:+.2e} ± {pv['rmse']['ci']:.1e} ({pv['rmse']['lower']}/{pv['rmse']['n']} lower)" if pv else "(baseline)"
        cells = [row["label"], row["steps"], f"{row['model_calls']['mean']:g}", ci(row["seconds"], ".3f"),
                 ci(row["rmse"], ".2e"), ci(row["psnr_db"], ".1f")] + ([ci(row["ssim"], ".4f")] if ssim_col else []) + [diff]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _pil(pic):
    """An [H, W, C] picture in [0, 1] as a PIL tile, fitted into TILE x TILE pixels."""
    im = images.to_image(pic.detach().to("cpu", torch.float64).nan_to_num(0.0, 1.0, 0.0).permute(2, 0, 1) * 2 - 1)
    scale = TILE / max(im.size)
    return im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.NEAREST)


def _failed_tile(size, text):
    im = Image.new("RGB", size, (90, 90, 90))
    ImageDraw.Draw(im).text((6, size[1] // 2 - 6), text[:40], fill=(255, 200, 200))
    return im


def grid_picture(ref, results):
    """Decoded (or latent-preview) pictures: one row per kept sample, the reference then each contender,
    columns labelled with steps, counted calls and mean RMSE; a failed contender shows a grey tile."""
    if not ref.pictures:
        return None
    tiles_ref = [_pil(p) for p in ref.pictures]
    size = tiles_ref[0].size
    cols = [f"reference\n{ref.label}\n" + (f"{ref.steps} steps" if ref.steps else "exact")]
    columns = [tiles_ref]
    for r in results:
        if r.ok:
            figure = f"RMSE {_stat(r.rmse)['mean']:.2e}" if r.finite else f"NON-FINITE: {r.nonfinite} values"
            cols.append(f"{r.label}\n{r.steps} st, {sum(r.calls) / len(r.calls):g} calls\n{figure}")
            columns.append([_pil(p) for p in r.pictures])
        else:
            cols.append(f"{r.label}\nFAILED")
            columns.append([_failed_tile(size, r.error or "failed") for _ in tiles_ref])
    rows = [list(row) for row in zip(*columns)]
    return images.grid(rows, ref.rows, cols, scale=1, label_w=90, label_h=44)


COLORMAP = torch.tensor([[0, 0, 4], [80, 18, 123], [183, 55, 121], [251, 136, 97], [252, 253, 191]], dtype=torch.float64) / 255
NONFINITE_COLOR = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)  # bright green: NaN or inf, off the ramp


def colorize(v, vmax):
    """Values [H, W] >= 0 through a magma-like ramp (5 anchors, linear between them), 0..vmax; NaN and inf
    pixels in NONFINITE_COLOR."""
    v = v.to(torch.float64)
    finite = torch.isfinite(v)
    t = (v.nan_to_num(0.0, 0.0, 0.0) / (vmax if vmax > 0 else 1.0)).clamp(0, 1) * (len(COLORMAP) - 1)
    k = t.floor().long().clamp(max=len(COLORMAP) - 2)
    w = (t - k)[..., None]
    return torch.where(finite[..., None], COLORMAP[k] * (1 - w) + COLORMAP[k + 1] * w, NONFINITE_COLOR)


def heatmap_picture(ref, results, pixel_space):
    """|contender - reference| per pixel (mean over channels; decoded pixels, or latent values without a
    decoder), one colour scale for the whole grid (its maximum is in the title row)."""
    ok = [r for r in results if r.ok and r.pictures]
    if not ref.pictures or not ok:
        return None

    def diff(r, j):
        if pixel_space:
            return (r.pictures[j].double() - ref.pictures[j].double()).abs().mean(-1)
        a, b = r.finals[j].double(), ref.finals[j].double()
        a, b = (a[:, 0], b[:, 0]) if a.ndim == 4 else (a, b)
        return (a - b).abs().mean(0)

    diffs = {r.label: [diff(r, j) for j in range(len(ref.pictures))] for r in ok}
    vmax = max([float(d[torch.isfinite(d)].max()) for ds in diffs.values() for d in ds if bool(torch.isfinite(d).any())] or [0.0])
    size = _pil(ref.pictures[0]).size
    cols, columns = [], []
    for r in results:
        if r in ok:
            flag = f"NON-FINITE: {r.nonfinite} values" if not r.finite else f"max {vmax:.2e}"
            cols.append(f"|{r.label} - ref|\n{flag}\n{'pixels' if pixel_space else 'latent'}")
            columns.append([_pil(colorize(d, vmax)).resize(size, Image.NEAREST) for d in diffs[r.label]])
        else:
            cols.append(f"{r.label}\nFAILED")
            columns.append([_failed_tile(size, r.error or "failed") for _ in ref.pictures])
    rows = [list(row) for row in zip(*columns)]
    return images.grid(rows, ref.rows, cols, scale=1, label_w=90, label_h=44)


def resample_sigmas(sigmas, n):
    """The schedule's shape at n steps: levels interpolated linearly in log sigma at n evenly spaced
    fractions of the original (excluding a final 0, which is kept). Exact for schedules uniform in log
    sigma; for others (Karras, ...) the piecewise log-linear interpolant of the given levels."""
    if n < 1:
        raise ValueError(f"steps must be >= 1, got {n}")
    s = sigmas.detach().to("cpu", torch.float64)
    zero = bool(s[-1] == 0)
    body = s[:-1] if zero else s
    m = len(body) - 1
    if m < 1:
        raise ValueError(f"sigmas: need at least two nonzero levels to resample, got {s.tolist()}")
    count = n if zero else n + 1
    pos = torch.linspace(0, m, count, dtype=torch.float64)
    k = pos.floor().long().clamp(max=m - 1)
    w = pos - k
    out = torch.exp(body[k].log() * (1 - w) + body[k + 1].log() * w)
    if zero:
        out = torch.cat([out, out.new_zeros(1)])
    return out.to(sigmas.dtype)


def sweep_records(ref, results, context="host", space="ve"):
    """runner.Record rows of a sweep (entries carrying meta 'contender' and steps): nfe = mean counted
    calls, error = mean RMSE against the reference, with its t-interval."""
    records = []
    for r in results:
        if r.ok and r.finite:
            err = _stat(r.rmse)
            records.append(Record(context, space, r.meta.get("contender", r.label), r.meta.get("schedule", ""), r.steps,
                                  r.steps, round(sum(r.calls) / len(r.calls)), err["mean"], err["ci95"],
                                  sum(r.seconds) / len(r.seconds)))
    return records


def sweep_table(records, failures=()):
    """Markdown: contenders as rows, step counts as columns, cells 'RMSE (calls)', and the slope of
    log RMSE against log calls over the three largest counts (runner.order_slope)."""
    by = {}
    for r in records:
        by.setdefault(r.sampler, []).append(r)
    steps = sorted({r.steps for r in records})
    lines = ["| contender | " + " | ".join(f"{n} steps" for n in steps) + " | slope |", "|---|" + "---|" * (len(steps) + 1)]
    for name, rs in by.items():
        cell = {r.steps: f"{r.error:.2e} ({r.nfe})" for r in rs}
        slope = order_slope(rs)
        slope = f"{slope:.2f}" if math.isfinite(slope) else "—"
        lines.append(f"| {name} | " + " | ".join(cell.get(n, "") for n in steps) + f" | {slope} |")
    lines += [f"| {label} | failed: {err} |" for label, err in failures]
    return "\n".join(lines)


def sweep_chart(records, title="RMSE against the reference vs model calls"):
    """Log-log chart of mean RMSE against counted model calls, one line per contender."""
    by = {}
    for r in sorted(records, key=lambda r: r.nfe):
        by.setdefault(r.sampler, []).append(r)
    return charts.line_chart([(k, [r.nfe for r in rs], [r.error for r in rs]) for k, rs in by.items()],
                             title, "model calls (counted)", "RMSE", xlog=True, ylog=True)


def trajectory(x0s, levels, space="ve", bands=5):
    """Summary of one run's x0 predictions x0s [T] (each [B, ..., H, W]) at host levels[:T]: energy per
    radial frequency band per step, its fraction of the final step's, the first step where each band
    reaches half its final energy, and the x0-prediction speed with its peak (the critical-time proxy)."""
    if len(x0s) < 2:
        raise ValueError(f"x0s: need at least 2 steps, got {len(x0s)}")
    energy, edges = zip(*(band_energies(x, bands) for x in x0s))
    energy = torch.stack(energy)
    final = energy[-1]
    fraction = [[float(e / f) if f > 0 else None for e, f in zip(row, final)] for row in energy]
    half = [next((i for i, row in enumerate(fraction) if row[b] is not None and row[b] >= 0.5), None) for b in range(len(final))]
    speed = x0_speed(x0s, levels, space)
    finite = [(v, i + 1) for i, v in enumerate(speed) if v is not None]
    peak = max(finite, key=lambda t: t[0])[1] if finite else None
    names = ["DC"] + [f"{lo:.3f}-{hi:.3f} c/px" for lo, hi in zip(edges[0][:-1], edges[0][1:])]
    return {"kind": "samplerlab.trajectory", "space": str(space if isinstance(space, str) else space.name),
            "levels": [float(s) for s in levels[:len(x0s)]], "bands": names, "energy": energy.tolist(),
            "fraction_of_final": fraction, "half_energy_step": half, "x0_speed": speed,
            "peak_speed_step": peak, "peak_speed_level": float(levels[peak]) if peak is not None else None}


def trajectory_chart(t, title=""):
    """Two panels: band energy as a fraction of the final step's (coarse bands rise first), and the
    speed of the x0 prediction per step (its peak marks commitment)."""
    steps = list(range(len(t["levels"])))
    left = charts.line_chart([(name, steps, [row[b] for row in t["fraction_of_final"]]) for b, name in enumerate(t["bands"])],
                             f"{title} band energy / final", "step", "fraction")
    right = charts.line_chart([("x0 speed", steps[1:], t["x0_speed"])], f"x0 speed (peak at step {t['peak_speed_step']})",
                              "step", "speed", ylog=True)
    return charts.stack([left, right])
