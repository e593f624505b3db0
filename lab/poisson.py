"""Evidence for Poisson flow and noise-level tracking (`python -m samplerlab poisson`).

A finite-D sampler on a Gaussian-trained model does not follow the D = inf ODE (each sample starts at
its own level kappa * sigma_max), so its error is distributional (SCIENCE.md §7): sliced Wasserstein-1
and MMD between generated samples and as many true data samples, and for a mixture the total-variation
error of the mode weights. `floor` rows give the same metric between two independent true-data sets.
"""
import math

import torch

from ..samplers import REGISTRY as SAMPLERS
from ..samplers.poisson import SolverChoices, kappas
from ..samplers.tracking import Tracker
from ..schedulers import REGISTRY as SCHEDULERS
from .problems import Mixture, make
from .runner import CountingModel, mean_ci, rms_error, schedule_range

F64 = torch.float64


def sliced_w1(x, y, projections=128, seed=0):
    """Mean over random unit directions u of W1(<x, u>, <y, u>) (equal sample counts: sorted differences)."""
    x, y = x.flatten(1).to(F64), y.flatten(1).to(F64)
    u = torch.randn(x.shape[1], projections, generator=torch.Generator().manual_seed(seed), dtype=F64)
    u = u / u.norm(dim=0)
    return float(((x @ u).sort(0).values - (y @ u).sort(0).values).abs().mean())


def mmd(x, y, scales=(0.25, 1.0, 4.0)):
    """Unbiased MMD (square root of max(MMD^2, 0)) with a sum of RBF kernels, bandwidths scales x median distance^2."""
    z = torch.cat([x.flatten(1), y.flatten(1)]).to(F64)
    d2 = torch.cdist(z, z).pow(2)
    med = d2[d2 > 0].median()
    k = sum(torch.exp(-d2 / (s * med)) for s in scales)
    m = len(x)
    off = lambda a: (a.sum() - a.diagonal().sum()) / (m * (m - 1))  # noqa: E731
    return math.sqrt(max(float(off(k[:m, :m]) + off(k[m:, m:]) - 2 * k[:m, m:].mean()), 0.0))


def share_error(assign, weights):
    """Total variation between the fraction of samples assigned to each mode (assign [B] int) and its weight."""
    share = torch.bincount(assign, minlength=len(weights)).to(F64) / len(assign)
    return 0.5 * float((share - weights).abs().sum())


def mode_weight_error(problem: Mixture, x):
    """Total variation between the fraction of samples nearest each component and its weight pi_k."""
    return share_error(problem.component(x), problem.logpi.exp())


def metrics(problem, x, data):
    out = {"sw1": sliced_w1(x, data), "mmd": mmd(x, data)}
    if isinstance(problem, Mixture):
        out["modes"] = mode_weight_error(problem, x)
    return out


def perturbed(model, kind, strength, seed=0):
    """An imperfect network: `shrink` D' = (1 - strength) D; `noise` D' = D + strength * sigma/sqrt(1 + sigma^2) * xi
    (VE sigma, xi fresh Gaussian per call from a fixed-seed generator); `exact` the model itself."""
    if kind == "exact":
        return model
    g = torch.Generator().manual_seed(seed)

    def m(x, sigma, **kw):
        d = model(x, sigma, **kw)
        if kind == "shrink":
            return d * (1 - strength)
        s = sigma.to(F64).reshape(-1, *[1] * (x.ndim - 1))
        xi = torch.randn(x.shape, generator=g, dtype=F64)
        return (d.to(F64) + strength * s / (1 + s * s).sqrt() * xi).to(d.dtype)

    return m


def draws(problem, seeds):
    """The data and unit-noise draws (x0, n) of `problem.draw` for the seeds."""
    x0 = problem.draw(seeds, "ve", 0.0)[0]
    return x0, problem.draw(seeds, "ve", 1.0)[0] - x0


def starts(problem, seeds, s_T, kappa, base=None):
    """PFGM++ starts x0 + kappa sigma_T n (VE); base: the seeds' `draws` if already made (else drawn here)."""
    x0, n = draws(problem, seeds) if base is None else base
    return x0 + kappa.reshape(-1, *[1] * (x0.ndim - 1)) * s_T * n


def run(problem, model, solver, D, nfe, seeds, track=None, trained="diffusion", base=None):
    """One batch from the Poisson sampler on the prior's own start (the noise-node route): samples, calls.
    trained: the sampler's option (diffusion: model queried at kappa sigma; at_D: at sigma); base: `starts`."""
    spec = SAMPLERS[solver]
    steps = max(1, nfe // (spec.nfe_per_step or 1))
    sigma_min, sigma_max = schedule_range(problem, "ve")
    sigmas = SCHEDULERS["karras"].fn(steps, sigma_min, sigma_max)
    x = starts(problem, seeds, sigma_max, kappas(seeds[0], len(seeds), D), base)
    counted = CountingModel(model)
    opts = {"track": "off"} if track is None else track
    out = SAMPLERS["poisson_flow"].fn(counted, x, sigmas, extra_args={"seed": seeds[0]}, disable=True,
                                      D=D, solver=solver, noise="poisson", trained=trained, **opts)
    return out, counted.calls


def equality(problems=("gaussian", "mixture", "field"), nfe=8):
    """max |poisson_flow(D = inf, solver) - solver| over the registry's deterministic solvers, VE and flow."""
    worst = 0.0
    for name in problems:
        p = make(name)
        for space in ("ve", "flow"):
            lo, hi = schedule_range(p, space)
            x, _ = p.draw(range(4), space, hi)
            sigmas = SCHEDULERS["karras"].fn(nfe, lo, hi)
            for solver in SolverChoices():
                a = SAMPLERS[solver].fn(p.model(space), x, sigmas, disable=True, space=space)
                b = SAMPLERS["poisson_flow"].fn(p.model(space), x, sigmas, disable=True, space=space,
                                                D=math.inf, solver=solver)
                worst = max(worst, float((a - b).abs().max()))
    return worst


def convergence(Ds=(1, 4, 16, 64, 256, 1024, 4096, 65536, 1e6), solver="dpmpp_2m", nfe=10, count=64):
    """RMS distance between poisson_flow(D) and its inner solver (D = inf) from the same seeds (KSampler route)."""
    p = make("field")
    lo, hi = schedule_range(p, "ve")
    x, _ = p.draw(range(count), "ve", hi)
    sigmas = SCHEDULERS["karras"].fn(nfe, lo, hi)
    model = p.model()
    ref = SAMPLERS[solver].fn(model, x, sigmas, disable=True)
    rows = []
    for D in Ds:
        out = SAMPLERS["poisson_flow"].fn(model, x, sigmas, extra_args={"seed": 0}, disable=True, D=float(D), solver=solver)
        rows.append({"D": D, "rms_to_inf": mean_ci(rms_error(out, ref))[0]})
    return rows


PROBLEMS = {
    "mixture": lambda: (make("mixture"), "exact", 0.0),
    "mixture+shrink": lambda: (make("mixture"), "shrink", 0.05),
    "field": lambda: (make("field"), "exact", 0.0),
    "field+noise": lambda: (make("field"), "noise", 0.2),
}


def versus_D(problem_names, solvers, Ds, nfes, count):
    """Distributional error of poisson_flow against true data, per problem, solver, D and NFE."""
    rows = []
    for pname in problem_names:
        p, kind, strength = PROBLEMS[pname]()
        seeds = list(range(count))
        data = p.draw(range(10 ** 6, 10 ** 6 + count), "ve", 0.0)[0]
        floor = metrics(p, p.draw(range(2 * 10 ** 6, 2 * 10 ** 6 + count), "ve", 0.0)[0], data)
        rows.append({"problem": pname, "solver": "floor", "D": "data", "nfe": 0, **floor})
        for solver in solvers:
            for D in Ds:
                for nfe in nfes:
                    out, calls = run(p, perturbed(p.model(), kind, strength), solver, D, nfe, seeds)
                    rows.append({"problem": pname, "solver": solver, "D": D, "nfe": calls, **metrics(p, out, data)})
    return rows


TRACKING = {
    "off": None,
    "stein": {"track": "stein"},
    "stein, 1 refinement": {"track": "stein", "track_iterations": 1},
    "residual": {"track": "residual"},
    "epsilon 1.003": {"track": "epsilon", "eps_scale": 1.003},
}


def tracking(problem_names, solvers, nfes, count, D=math.inf):
    """Error with and without tracking at D: distributional (sw1) and pathwise (RMS to the exact ODE
    solution of the unperturbed model from the same start), and their ratio to tracking off."""
    rows = []
    for pname in problem_names:
        p, kind, strength = PROBLEMS[pname]()
        seeds = list(range(count))
        data = p.draw(range(10 ** 6, 10 ** 6 + count), "ve", 0.0)[0]
        _, sigma_max = schedule_range(p, "ve")
        kappa = kappas(0, count, D)
        x = starts(p, seeds, sigma_max, kappa)
        exact = p.exact(x, sigma_max) if math.isinf(D) else \
            torch.cat([p.exact(x[k:k + 1], sigma_max * float(kappa[k])) for k in range(count)])
        for solver in solvers:
            for nfe in nfes:
                base = None
                for label, opts in TRACKING.items():
                    out, calls = run(p, perturbed(p.model(), kind, strength), solver, D, nfe, seeds, opts)
                    err = {"sw1": sliced_w1(out, data), "rms": mean_ci(rms_error(out, exact))[0]}
                    base = base or err
                    rows.append({"problem": pname, "solver": solver, "nfe": calls, "tracking": label, **err,
                                 "sw1_ratio": err["sw1"] / base["sw1"], "rms_ratio": err["rms"] / base["rms"]})
    return rows


def level_trace(pname="field+noise", solver="euler", nfe=10, count=16):
    """Mean |log rho| (tracked level / nominal) per model call: how far the tracker moves the queries."""
    p, kind, strength = PROBLEMS[pname]()
    sigma_min, sigma_max = schedule_range(p, "ve")
    x = starts(p, list(range(count)), sigma_max, torch.ones(count, dtype=F64))
    tracker = Tracker(perturbed(p.model(), kind, strength), "ve", track="stein", track_window=1.0)
    SAMPLERS[solver].fn(tracker, x, SCHEDULERS["karras"].fn(nfe, sigma_min, sigma_max), disable=True)
    return [float(r.log().abs().mean()) for r in tracker.history]


def _fmt(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def table(rows, keys):
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return lines + ["| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in rows]


def versus_D_table(rows):
    """One table per problem: rows (solver, D), columns NFE, cells sw1 (and mode-weight error)."""
    out = []
    for pname in dict.fromkeys(r["problem"] for r in rows):
        rs = [r for r in rows if r["problem"] == pname]
        nfes = sorted({r["nfe"] for r in rs if r["solver"] != "floor"})
        floor = next(r for r in rs if r["solver"] == "floor")
        cell = lambda r: _fmt(r["sw1"]) + (f" / {r['modes']:.3f}" if "modes" in r else "")  # noqa: E731
        out += [f"#### {pname} — sliced W1{' / mode-weight error' if 'modes' in floor else ''} "
                f"(data-vs-data floor {cell(floor)})", "",
                "| solver | D | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|---|" + "---|" * len(nfes)]
        for solver, D in dict.fromkeys((r["solver"], r["D"]) for r in rs if r["solver"] != "floor"):
            by = {r["nfe"]: r for r in rs if r["solver"] == solver and r["D"] == D}
            out.append(f"| {solver} | {_fmt(D)} | " + " | ".join(cell(by[n]) if n in by else "" for n in nfes) + " |")
        out.append("")
    return out


def plot_versus_D(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["problem"], r["solver"]) for r in rows if r["solver"] != "floor"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False)
    for ax, (pname, solver) in zip(axes.flat, panels):
        rs = [r for r in rows if r["problem"] == pname and r["solver"] == solver]
        Ds = list(dict.fromkeys(r["D"] for r in rs))
        xs = [math.log2(D) if math.isfinite(D) else math.log2(max(d for d in Ds if math.isfinite(d))) + 2 for D in Ds]
        for nfe in sorted({r["nfe"] for r in rs}):
            ax.plot(xs, [next(r["sw1"] for r in rs if r["D"] == D and r["nfe"] == nfe) for D in Ds], marker="o", ms=3, label=f"NFE {nfe}")
        ax.set_xticks(xs, [_fmt(D) for D in Ds], fontsize=7)
        ax.set_title(f"{pname} / {solver}", fontsize=8)
        ax.set_xlabel("D")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes.flat[0].set_ylabel("sliced W1 to data")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def cmd_poisson(args):
    import json
    import time
    from pathlib import Path

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Ds = [1.0, 4.0, 16.0, 128.0, 2048.0, math.inf]
    nfes = [4, 10] if args.quick else [4, 6, 10]
    count = 256 if args.quick else args.count
    res = {"equality_max_abs": equality(), "convergence": convergence(),
           "versus_D": versus_D(args.problems, args.solvers, Ds, nfes, count),
           "tracking": tracking(args.track_problems, args.solvers, [10, 20], min(count, 256)),
           "level_trace": level_trace()}
    lines = ["## Poisson flow: evidence (`python -m samplerlab poisson" + (" --quick" if args.quick else "") + "`)", "",
             f"D = inf vs its inner solver, every deterministic solver, gaussian/mixture/field, VE and flow: "
             f"max |difference| = {res['equality_max_abs']:.1e}", "",
             "RMS distance to the D = inf run (field, dpmpp_2m, NFE 10, same seeds):", ""]
    lines += table(res["convergence"], ["D", "rms_to_inf"]) + ["", "### Error vs D (Karras, VE, prior start)", ""]
    lines += versus_D_table(res["versus_D"])
    lines += ["### Noise-level tracking (D = inf): sliced W1 to data and RMS to the exact ODE of the unperturbed model;",
              "ratios to tracking off", ""]
    lines += table(res["tracking"], ["problem", "solver", "nfe", "tracking", "sw1", "sw1_ratio", "rms", "rms_ratio"])
    lines += ["", "Mean |log(tracked / nominal level)| per model call (field+noise, euler, NFE 10, window 1): "
              + ", ".join(f"{v:.3f}" for v in res["level_trace"]), ""]
    text = "\n".join(lines)
    (out / "poisson.md").write_text(text)
    (out / "poisson.json").write_text(json.dumps(res, indent=1, default=str))
    plot_versus_D(res["versus_D"], out / "poisson_vs_D.png")
    print(text)
    print(f"wrote {out}/poisson.md, poisson.json, poisson_vs_D.png in {time.perf_counter() - t0:.0f} s")


def add_parser(sub):
    """The `poisson` subcommand."""
    p = sub.add_parser("poisson", help="Poisson flow (PFGM++) vs D, and noise-level tracking, on the reference problems")
    p.add_argument("--out", default="samplerlab-poisson", help="output folder (default: %(default)s)")
    p.add_argument("--problems", nargs="+", default=["mixture", "mixture+shrink", "field+noise"], choices=sorted(PROBLEMS))
    p.add_argument("--track-problems", nargs="+", default=["mixture+shrink", "field+noise"], choices=sorted(PROBLEMS))
    p.add_argument("--solvers", nargs="+", default=["euler", "dpmpp_2m", "heun"], choices=list(SolverChoices()))
    p.add_argument("--count", type=int, default=1000, help="samples per configuration (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="256 samples, NFE 4 and 10 only")
    p.set_defaults(fn=cmd_poisson)
