"""`python -m samplerlab study coarse`: coarse to fine along the trained digits network's reverse process, and
whether the critical level of `study critical` is where the coarse bands settle (issue 14, item 5).

The trajectory inspector: probability-flow ODE trajectories (critical.trajectories: Heun on a geometric grid of
VE levels, from 80 to 0), unconditional and class-conditional at the default CFG. At each grid level sigma, the
energy per radial frequency band of the x0 prediction D(x_sigma) (lab/metrics.py band_energies: DC, then octave
bands up to the corner frequency), relative to the final sample's. A band's settling level per trajectory: the
level below which its energy stays within TOL of the final value, interpolated in log sigma between grid levels
(0 when it has not settled by the lowest level). Intervals: percentile bootstrap of the median over trajectories; per class by the final
sample's class (classifier). sigma_c: the commitment level (the renoised final sample keeps its class with
probability 1/2, critical.commitment) read from docs/studies/critical/critical.json when that exists, and
measured here on the unconditional trajectories (the first COMMIT_TRAJ of them) in any case.
TOL (10%) was fixed before measuring; the reported runs use seeds from lab/digits_lab.EVAL_SEED0 on.
"""
import json
import time

import torch

from .. import digits, images, trained
from ..digits_lab import EVAL_SEED0
from ..metrics import band_edges, band_energies, percentile_ci
from . import critical, output

F64 = torch.float64
TOL = 0.1
BANDS = critical.BANDS


def energies(x0):
    """[L, B, bands] band energies of predictions x0 [L, B, ...], one sample at a time."""
    return torch.stack([torch.stack([band_energies(x, BANDS)[0] for x in level]) for level in x0])


def settle(levels, rel, tol=TOL):
    """[B, bands] settling levels from relative energies rel [L, B, bands] (E / E_final, levels descending): with
    dev = |rel - 1|, the level where dev falls to tol for the last time, interpolated linearly in log sigma between
    the last grid level outside tol and the next (the top level where it is within tol all along; 0 where even
    the lowest level is outside)."""
    dev = (rel - 1).abs()
    ok = dev <= tol
    tail = torch.flip(torch.cummin(torch.flip(ok.to(torch.int8), [0]), 0).values, [0]).bool()
    n = rel.shape[0]
    first = torch.where(tail.any(0), tail.to(torch.int8).argmax(0), torch.full(rel.shape[1:], n))
    logs = torch.tensor(levels, dtype=F64).log()
    above, at = (first - 1).clamp(0, n - 1), first.clamp(max=n - 1)
    d_hi, d_lo = dev.gather(0, above[None])[0], dev.gather(0, at[None])[0]
    t = ((d_hi - tol) / (d_hi - d_lo).clamp_min(1e-300)).clamp(0, 1)
    level = (logs[above] + t * (logs[at] - logs[above])).exp()
    return torch.where(first == 0, logs[0].exp(), torch.where(first == n, torch.zeros_like(level), level))


def median_ci(v, boot=400, seed=0):
    """[median, lo, hi]: the median of v [B] and its 95% percentile-bootstrap interval."""
    g = torch.Generator().manual_seed(seed)
    reps = [float(v[torch.randint(len(v), (len(v),), generator=g)].median()) for _ in range(boot)]
    return [float(v.median()), *percentile_ci(reps)]


def inspect(seeds, levels, cond=None, cfg=trained.DEFAULT_CFG, boot=400):
    """Trajectories of the network (unconditional for cond None, else class `cond` per seed at `cfg`) and their
    band energies: {"traj", "rel" [L, B, bands], "settle" [B, bands], "final_class", summary curves}."""
    base = critical.network()
    model = base if cond is None else (lambda x, s, **kw: base(x, s, cond=cond, cfg=cfg))
    traj = critical.trajectories(model, seeds, levels)
    e = energies(traj["x0"])
    final = torch.stack([band_energies(x, BANDS)[0] for x in traj["final"]])
    rel = e / final.clamp_min(1e-12)
    st = settle(levels, rel)
    final_class = critical.classify(traj["final"])
    summary = {"relative_energy": [[median_ci(rel[k, :, b], boot, b) for b in range(BANDS)] for k in range(len(levels))],
               "settle": [median_ci(st[:, b], boot, b) for b in range(BANDS)],
               "final_energy": [float(final[:, b].mean()) for b in range(BANDS)],
               "final_classes": torch.bincount(final_class, minlength=digits.CLASSES).tolist()}
    per_class = {}
    for c in range(digits.CLASSES):
        idx = torch.nonzero(final_class == c).reshape(-1)
        if len(idx) >= 5:
            per_class[str(c)] = {"n": len(idx), "settle": [median_ci(st[idx, b], boot, c) for b in range(BANDS)]}
    summary["per_class"] = per_class
    return {"traj": traj, "rel": rel, "settle": st, "final_class": final_class, "summary": summary}


def critical_level(path=None):
    """The committed overall commitment sigma_c of `study critical` ({"sigma_c", "ci", "source"}), or None."""
    path = path or output.ROOT / "critical" / "critical.json"
    try:
        r = json.loads(open(path).read())["network"]["sigma_c"]["renoise"]
    except (OSError, KeyError, ValueError):
        return None
    return {**r, "source": str(path)}


def study(n_traj=200, levels=20, commit_traj=64, boot=400, seed0=EVAL_SEED0, progress=print):
    t0 = time.perf_counter()
    lv = critical.grid(levels, lo=0.02)
    seeds = list(range(seed0, seed0 + n_traj))
    unc = inspect(seeds, lv, None, boot=boot)
    progress(f"unconditional: {n_traj} trajectories, {time.perf_counter() - t0:.0f} s")
    labels = torch.arange(n_traj) % digits.CLASSES
    con = inspect(seeds, lv, labels, boot=boot)
    progress(f"conditional: {time.perf_counter() - t0:.0f} s")
    k = min(commit_traj, n_traj)
    sub = {key: (v[:, :k] if key in ("states", "x0", "all_x0") else v[:k] if key == "final" else v)
           for key, v in unc["traj"].items()}
    kept, _ = critical.commitment(critical.network(), sub, seeds[:k], lv, protocols=("renoise",))
    measured, _ = critical.bootstrap(lv, {"renoise": kept["renoise"]}, None, boot, seed0)
    progress(f"commitment: {time.perf_counter() - t0:.0f} s")
    record = {"levels": lv, "trajectories": n_traj, "seeds": [seeds[0], seeds[-1]], "tol": TOL,
              "band_edges": band_edges(BANDS), "cfg": trained.DEFAULT_CFG,
              "unconditional": unc["summary"], "conditional": con["summary"],
              "sigma_c": {"measured_here": {**measured["renoise"], "trajectories": k,
                                            "keep_fraction": critical.wilson_curve(kept["renoise"])},
                          "critical_study": critical_level()},
              "seconds_measured": time.perf_counter() - t0}
    record["verdict"] = verdict(record)
    return record, unc, con


def verdict(r):
    """Per band and run: whether the settling interval contains or overlaps sigma_c's (the study-1 value when
    present, else the one measured here), and the median settling level over sigma_c."""
    sc = r["sigma_c"]["critical_study"] or r["sigma_c"]["measured_here"]
    if sc["sigma_c"] is None or sc["ci"] is None:
        return {"sigma_c": None}
    out = {"sigma_c": sc["sigma_c"], "sigma_c_ci": sc["ci"]}
    for run in ("unconditional", "conditional"):
        rows = []
        for b, (m, lo, hi) in enumerate(r[run]["settle"]):
            rows.append({"band": b, "settle_over_sigma_c": m / sc["sigma_c"],
                         "overlaps": lo <= sc["ci"][1] and hi >= sc["ci"][0],
                         "relation": "above" if lo > sc["ci"][1] else "below" if hi < sc["ci"][0] else "overlaps"})
        out[run] = rows
    return out


def markdown(r):
    edges = r["band_edges"]
    names = ["DC"] + [f"({lo:.3g}, {hi:.3g}] c/px" for lo, hi in zip(edges[:-1], edges[1:])]
    sc = r["sigma_c"]
    lines = [f"{r['trajectories']} trajectories per run (seeds {r['seeds'][0]}-{r['seeds'][1]}); a band has settled "
             f"when its x0-prediction energy stays within {r['tol']:.0%} of the final sample's.", "",
             "| band | unconditional: settles at sigma (median, 95% bootstrap) | conditional (cfg "
             f"{r['cfg']:g}) |", "|---|---|---|"]
    for b in range(BANDS):
        u, c = r["unconditional"]["settle"][b], r["conditional"]["settle"][b]
        lines.append(f"| {b}: {names[b]} | {u[0]:.3g} ({u[1]:.3g}-{u[2]:.3g}) | {c[0]:.3g} ({c[1]:.3g}-{c[2]:.3g}) |")
    m = sc["measured_here"]
    lines += ["", "sigma_c (renoised final sample keeps its class with probability 1/2): "
              + (f"{m['sigma_c']:.3g} ({m['ci'][0]:.3g}-{m['ci'][1]:.3g})" if m["sigma_c"] and m["ci"] else "none")
              + f" measured here on {m['trajectories']} unconditional trajectories"
              + (f"; {sc['critical_study']['sigma_c']:.3g} ({sc['critical_study']['ci'][0]:.3g}-"
                 f"{sc['critical_study']['ci'][1]:.3g}) in `study critical`" if sc["critical_study"] else "") + "."]
    v = r["verdict"]
    if v["sigma_c"] is not None:
        lines += ["", f"| band | unconditional: settle / sigma_c ({v['sigma_c']:.3g}) | vs sigma_c's interval | conditional: "
                      "settle / sigma_c | vs sigma_c's interval |", "|---|---|---|---|---|"]
        for u, c in zip(v["unconditional"], v["conditional"]):
            lines.append(f"| {u['band']} | {u['settle_over_sigma_c']:.3g} | {u['relation']} | "
                         f"{c['settle_over_sigma_c']:.3g} | {c['relation']} |")
    lines += ["", "| class | n | " + " | ".join(f"band {b}" for b in range(BANDS)) + " |", "|---" * (BANDS + 2) + "|"]
    for c, pc in r["unconditional"]["per_class"].items():
        lines.append(f"| {c} | {pc['n']} | " + " | ".join(f"{m:.3g} ({lo:.3g}-{hi:.3g})" for m, lo, hi in pc["settle"]) + " |")
    lines += ["", "| sigma | " + " | ".join(f"band {b} E/E_final" for b in range(BANDS)) + " |", "|---" * (BANDS + 1) + "|"]
    for k, s in enumerate(r["levels"]):
        lines.append(f"| {s:.3g} | " + " | ".join(f"{m:.2f} ({lo:.2f}-{hi:.2f})"
                                                  for m, lo, hi in r["unconditional"]["relative_energy"][k]) + " |")
    return "\n".join(lines)


def figure(r, unc, con, rows=4):
    """Relative band energy against sigma (both runs), and the x0 predictions of a few trajectories along the grid."""
    from PIL import Image

    from ..charts import line_chart, stack

    lv = r["levels"]
    sc = r["verdict"]["sigma_c"]
    charts = []
    for run in ("unconditional", "conditional"):
        series = [(f"band {b}", lv, [e[b][0] for e in r[run]["relative_energy"]]) for b in range(BANDS)]
        if sc:
            series.append(critical.vline("| sigma_c", sc, 0, 1.5))
        charts.append(line_chart(series, f"{run}: x0-prediction energy / final", "sigma", "E / E_final", xlog=True,
                                 size=(560, 380)))
    top = stack(charts)
    pick = list(range(0, len(lv), max(1, len(lv) // 10)))
    n = min(rows, unc["traj"]["final"].shape[0])
    tiles, labels = [], []
    for name, run in (("uncond", unc), ("cond", con)):
        for i in range(n):
            tiles.append([images.to_image(run["traj"]["x0"][k, i]) for k in pick] + [images.to_image(run["traj"]["final"][i])])
            labels.append(f"{name} {i}" if name == "uncond" else f"class {i % digits.CLASSES}")
    pics = images.grid(tiles, labels, [f"{lv[k]:.2g}" for k in pick] + ["final"], scale=3)
    out = Image.new("RGB", (max(top.width, pics.width), top.height + pics.height + 6), "white")
    out.paste(top, (0, 0))
    out.paste(pics, (0, top.height + 6))
    return out


FULL = dict(n_traj=200, levels=20, commit_traj=64, boot=400)
QUICK = dict(n_traj=12, levels=6, commit_traj=8, boot=40)


def cmd(args):
    start = time.perf_counter()
    r, unc, con = study(**(QUICK if args.quick else FULL), seed0=args.seed0)
    path = output.folder("coarse", args.out)
    figure(r, unc, con).save(path / "coarse.png", optimize=True)
    md = output.write(path, "coarse", r, markdown(r) + "\n\n![coarse](coarse.png)", time.perf_counter() - start)
    print(markdown(r))
    print(f"wrote {md}")


def add_study(sub):
    critical.trajectory_parser(sub, "coarse", "coarse to fine: energy per frequency band of the x0 prediction against "
                                              "sigma, where each band settles, and the critical level", cmd)
