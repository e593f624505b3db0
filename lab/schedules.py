"""`python -m samplerlab schedules`: the calibrated schedule against Karras on the reference problems.

Per problem and parametrisation: one reference trajectory (calibration seeds), a calibrated schedule per
budget K, then on separate evaluation seeds the error against the exact solution of the calibrated
schedule at K calls and of Karras at every budget up to 4 K with the same solver; the figure of merit is
the Karras budget that first matches the calibrated error ("Karras needs"), and the ratio to K.
"""
import json
import time
from pathlib import Path

import torch

from ..samplers import REGISTRY as SAMPLERS
from ..schedulers import REGISTRY as SCHEDULERS
from ..schedulers import calibrate as cal
from . import problems
from .runner import CountingModel, mean_ci, rms_error, schedule_range


def evaluate(problem, space, solver, budgets, seeds, cal_seeds, reference_calls=200, progress=None):
    """Rows (dicts) for one problem and space: calibrated error at each budget K (1 call per step solvers),
    the Karras errors up to 4 K, and the calibration cost."""
    sigma_min, sigma_max = schedule_range(problem, space)
    x_T, labels = problem.draw(list(seeds), space, sigma_max)
    exact = problem.exact(x_T, sigma_max, 0.0, space, labels)
    model = problem.model(space, labels)
    per_step = SAMPLERS[solver].nfe_per_step or 1

    def error(sigmas):
        counted = CountingModel(model)
        x = SAMPLERS[solver].fn(counted, x_T, torch.as_tensor(sigmas, dtype=torch.float64), disable=True, space=space)
        return mean_ci(rms_error(x, exact))[0], counted.calls

    karras = {}
    for n in range(1, 4 * max(budgets) // per_step + 1):
        e, calls = error(SCHEDULERS["karras"].fn(n, sigma_min, sigma_max, space=space))
        karras.setdefault(calls, e)
    xc, lc = problem.draw(list(cal_seeds), space, sigma_max)
    counted = CountingModel(problem.model(space, lc))
    t0 = time.perf_counter()
    ref = cal.reference(counted, xc, sigma_min, sigma_max, space, calls=reference_calls)
    ref_seconds = time.perf_counter() - t0
    rows = []
    for k in budgets:
        steps = max(1, k // per_step)
        c = cal.choose(counted, xc, ref, solver, steps, space)
        e, calls = error(c.sigmas)
        needs = next((n for n in sorted(karras) if karras[n] <= e), None)
        rows.append(dict(problem=problem.name, space=space, solver=solver, calls=calls, calibrated=e,
                         karras_same=karras.get(calls), karras_needs=needs, ratio=(needs / calls if needs else None),
                         cal_calls=c.model_calls, cal_seconds=ref_seconds + c.seconds, sigmas=c.sigmas))
        if progress:
            progress(rows[-1])
    return rows, karras


def markdown(rows):
    lines = ["| problem | space | calls | calibrated | karras (same calls) | karras needs | ratio | calibration cost |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        needs = f"{r['karras_needs']}" if r["karras_needs"] else f"> {4 * r['calls']}"
        ratio = f"{r['ratio']:.1f}x" if r["ratio"] else "> 4x"
        lines.append(f"| {r['problem']} | {r['space']} | {r['calls']} | {r['calibrated']:.2e} | {r['karras_same']:.2e} | "
                     f"{needs} | {ratio} | {r['cal_calls']} calls, {r['cal_seconds']:.1f} s |")
    return "\n".join(lines)


def plot(curves, rows, path):
    """Error vs calls: Karras (line) and calibrated (dots), one panel per problem and space."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, (len(curves) + 1) // 2, figsize=(2.6 * ((len(curves) + 1) // 2), 4.4), squeeze=False)
    for ax, ((name, space), karras) in zip(axes.T.flat, curves.items()):
        n = sorted(karras)
        ax.loglog(n, [karras[k] for k in n], "-", color="0.5", lw=1, label="karras")
        mine = [r for r in rows if (r["problem"], r["space"]) == (name, space)]
        ax.loglog([r["calls"] for r in mine], [r["calibrated"] for r in mine], "o", color="C3", ms=4, label="calibrated")
        ax.set_title(f"{name} ({space})", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend(fontsize=6)
    fig.supxlabel("model calls", fontsize=7)
    fig.supylabel("RMS error vs exact", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def cmd_schedules(args):
    t0 = time.perf_counter()
    rows, curves = [], {}
    for name in args.problems:
        for space in ("ve", "flow"):
            r, karras = evaluate(problems.make(name), space, args.solver, args.calls, range(100, 100 + args.seeds),
                                 range(args.cal_seeds), args.reference_calls,
                                 None if args.quiet else lambda row: print(f"  {row['problem']} {row['space']} K={row['calls']}: "
                                                                           f"{row['calibrated']:.2e} (karras needs {row['karras_needs']})", flush=True))
            rows += r
            curves[(name, space)] = karras
    table = markdown(rows)
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        plot(curves, rows, out)
        out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
        print(f"wrote {out} and {out.with_suffix('.json')}")
    print(f"{time.perf_counter() - t0:.0f} s")


def add_parser(sub):
    p = sub.add_parser("schedules", help="calibrated schedule vs Karras: error at K calls and the Karras budget matching it")
    p.add_argument("--solver", default="exp_multistep", choices=sorted(SAMPLERS))
    p.add_argument("--problems", nargs="+", default=["gaussian", "mixture", "field"], choices=sorted(problems.PROBLEMS))
    p.add_argument("--calls", nargs="+", type=int, default=[5, 6, 8, 10])
    p.add_argument("--seeds", type=int, default=8, help="evaluation seeds (default %(default)s)")
    p.add_argument("--cal-seeds", type=int, default=4, help="calibration seeds, disjoint from the evaluation seeds")
    p.add_argument("--reference-calls", type=int, default=200)
    p.add_argument("--out", default="docs/schedules.png", help="plot (PNG) and JSON beside it; empty: none")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_schedules)
