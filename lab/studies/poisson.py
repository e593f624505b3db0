"""`python -m samplerlab study poisson`: Poisson flow where it applies, on exact finite-D models (issue 14, item 6).

The model "trained at D" on a weighted point set is exact for every D (`problems.PointSet`: the PFGM++
posterior mean, SCIENCE.md §1), so the PFGM++ sampler can be tested on the models it is made for:
(a) models trained at D sampled at D' by the Poisson sampler (samplers/poisson.py) from the heavy-tailed prior
    at D' (D' = inf is the diffusion sampler: Gaussian prior, the EDM ODE): the marginal it carries to
    sigma = 1 against the model's exact one (`marginal`, PFGM++ Theorem 1), and a D x D' table of where the
    samples end, both ways the sampler queries the model: `at_D` (at sigma, the PFGM++ ODE: right for a model
    trained at D' = D) and `diffusion` (at kappa sigma: the pack's route for diffusion-trained models);
(b) the PFGM++ paper's robustness claims (Xu et al. 2023, arXiv 2302.04265: smaller D more robust to fewer
    steps and to noise in the model output), each model sampled at its own D: error against steps, and
    against the strength of Gaussian noise added to the model output (lab/poisson.py `perturbed`, `noise`).
Error is distributional (SCIENCE.md §7, lab/poisson.py): sliced W1 and MMD against as many draws of the point
set, and the total variation of mode weights (the share of samples nearest each cluster's / class's points
against its weight); mean and 95% Student-t interval over replicate seed blocks, each with its own data draw.
The development problem (clusters16) fixed the budgets, noise strengths and sizes; clusters48 and digits64
took no part in any choice.
"""
import math
import time

import torch

from ..metrics import mean_ci_t
from ...samplers import REGISTRY as SAMPLERS
from ...samplers.poisson import kappas
from ...schedulers import REGISTRY as SCHEDULERS
from ..poisson import draws, mmd, perturbed, run, share_error, sliced_w1, starts
from ..problems import Mixture, PointSet
from . import output

F64 = torch.float64
DS = (1.0, 16.0, 128.0, 2048.0, math.inf)
SOLVER = "heun"
"""EDM's Heun, PFGM++'s reference sampler (the last step to 0 is Euler): NFE budget b gives b // 2 steps, 2 (b // 2) - 1 calls."""
TABLE_NFES = (36, 10)
STEP_NFES = (4, 6, 10, 18, 36)
STRENGTHS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
"""0.1..0.8 changed nothing on the development problem; the sweep reaches 8, where errors start to grow there."""
STRENGTH_NFE = 36
ROUTES = ("at_D", "diffusion")
DEVELOPMENT = "clusters16"
MARGINAL_SIGMA = 1.0
MARGINAL_NFE = 40


def clusters(dim, components, per, seed, spread=1.5, lam_range=(0.01, 0.05)):
    """`per` points from each component of a Mixture (unequal weights pi_k), each point weighted pi_k / per;
    labels = component."""
    mix = Mixture(dim=dim, components=components, spread=spread, lam_range=lam_range, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    comp = torch.arange(components).repeat_interleave(per)
    points = mix.mu[comp] + mix.lam[comp].sqrt() * torch.randn(len(comp), dim, generator=g, dtype=F64)
    return PointSet(points, weights=mix.logpi.exp()[comp] / per, labels=comp, name=f"clusters{dim}")


def digits64(per_class=20):
    """`per_class` training digits of each class, 2x2-average-pooled to 8x8 (N = 64), class c weighted (c + 1) / 55."""
    from ..digits import load

    images, labels = load("train")
    idx = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(10)])
    points = torch.nn.functional.avg_pool2d(images[idx].to(F64), 2)
    lab = labels[idx]
    return PointSet(points, weights=(lab + 1).to(F64) / (55 * per_class), labels=lab, name="digits64")


PROBLEMS = {
    "clusters16": lambda: clusters(16, 5, 40, seed=3),
    "clusters48": lambda: clusters(48, 6, 40, seed=11, spread=1.0, lam_range=(0.02, 0.1)),
    "digits64": digits64,
}


def at_D(problem, D):
    """The same point set's model trained at D."""
    return PointSet(problem.points, D=D, weights=problem.logpi.exp(), labels=problem.labels, name=problem.name)


def mode_error(problem, x):
    """share_error of the label of each sample's nearest point against the labels' total weights."""
    weights = torch.zeros(int(problem.labels.max()) + 1, dtype=F64).index_add_(0, problem.labels, problem.logpi.exp())
    return share_error(problem.labels[problem.nearest(x)], weights)


def scores(problem, x, data):
    return {"sw1": sliced_w1(x, data), "mmd": mmd(x, data), "modes": mode_error(problem, x)}


class Blocks:
    """The replicate seed blocks of one point set, drawn once for every D (the draws do not depend on D): block r
    samples from seeds r count ..., against data draws from seeds 10^6 + r count ..., and for the marginal check
    exact draws from 10^6 + r count ... and 3 10^6 + r count ...."""

    def __init__(self, problem, reps, count):
        self.count = count
        block = lambda r, base: list(range(base + r * count, base + (r + 1) * count))  # noqa: E731
        self.seeds = [block(r, 0) for r in range(reps)]
        self.base = [draws(problem, s) for s in self.seeds]
        self.refs = [[(s, draws(problem, s)) for s in (block(r, 10 ** 6), block(r, 3 * 10 ** 6))] for r in range(reps)]
        self.data = [base[0] for (_, base), _ in self.refs]
        self.other = [problem.draw(block(r, 2 * 10 ** 6), "ve", 0.0)[0] for r in range(reps)]


def summarise(blocks):
    """{metric: mean, metric_ci: 95% t half-width} over replicate blocks."""
    out = {}
    for key in blocks[0]:
        out[key], out[key + "_ci"] = mean_ci_t([b[key] for b in blocks])
    return out


def cell(problem, D_model, D_sampler, trained, nfe, blocks, strength=0.0):
    """Metrics of poisson_flow(D_sampler, trained) on the model trained at D_model, per block (`Blocks`) against
    that block's data draw; also the calls and whether every sample is finite."""
    model = at_D(problem, D_model)
    out, calls, finite = [], 0, True
    for rep, (seeds, base) in enumerate(zip(blocks.seeds, blocks.base)):
        net = perturbed(model.model(), "noise", strength, seed=rep) if strength else model.model()
        x, calls = run(model, net, SOLVER, D_sampler, nfe, seeds, trained=trained, base=base)
        finite = finite and bool(torch.isfinite(x).all())
        out.append(scores(model, x, blocks.data[rep]))
    return {"D_model": D_model, "D_sampler": D_sampler, "trained": trained, "nfe": calls, "strength": strength,
            "finite": finite, **summarise(out)}


def ks(a, b):
    """Two-sample Kolmogorov-Smirnov distance sup_v |F_a(v) - F_b(v)| of 1-D samples."""
    a, b = a.sort().values, b.sort().values
    v = torch.cat([a, b])
    return float((torch.searchsorted(a, v, right=True) / len(a) - torch.searchsorted(b, v, right=True) / len(b)).abs().max())


def radii(problem, x):
    """Distance of each sample to its nearest point."""
    return torch.cdist(x.flatten(1).to(F64), problem.points.flatten(1)).min(1).values


def marginal(problem, D_model, D_sampler, blocks, sigma_stop=MARGINAL_SIGMA, nfe=MARGINAL_NFE):
    """KS distance between the distance-to-nearest-point of samples flowed by poisson_flow(D_sampler, at_D) on the
    model trained at D_model from sigma_max to sigma_stop and of exact draws y + kappa sigma_stop n of its marginal
    there (kappa at D_model): PFGM++ Theorem 1 says 0 (up to sampling and discretisation) when D_sampler = D_model."""
    model = at_D(problem, D_model)
    sigmas = SCHEDULERS["karras"].fn(nfe // 2, sigma_stop, problem.sigma_max)[:-1]
    out = []
    for seeds, base, refs in zip(blocks.seeds, blocks.base, blocks.refs):
        x = starts(model, seeds, problem.sigma_max, kappas(seeds[0], len(seeds), D_sampler), base)
        x = SAMPLERS["poisson_flow"].fn(model.model(), x, sigmas, extra_args={"seed": seeds[0]}, disable=True,
                                        D=D_sampler, solver=SOLVER, noise="poisson", trained="at_D")
        exact, again = (radii(model, starts(model, s, sigma_stop, kappas(s[0], len(s), D_model), b)) for s, b in refs)
        out.append({"ks": ks(radii(model, x), exact), "ks_floor": ks(again, exact)})
    return {"D_model": D_model, "D_sampler": D_sampler, "sigma": sigma_stop, **summarise(out)}


def floor(problem, blocks):
    """The metrics between two independent draws of the data (what sampling error cannot go below)."""
    return summarise([scores(problem, other, data) for other, data in zip(blocks.other, blocks.data)])


def grid(problem, reps, count, Ds=DS, table_nfes=TABLE_NFES, step_nfes=STEP_NFES, strengths=STRENGTHS,
         strength_nfe=STRENGTH_NFE):
    """(a) the marginal check and the D x D' tables for both routes; (b) steps and output-noise sweeps at D' = D
    (route at_D); all from the same `Blocks`."""
    blocks = Blocks(problem, reps, count)
    table = [cell(problem, Dm, Ds_, route, nfe, blocks)
             for nfe in table_nfes for route in ROUTES for Dm in Ds for Ds_ in Ds
             if route == "at_D" or not math.isinf(Ds_)]
    marg = [marginal(problem, Dm, Ds_, blocks) for Dm in Ds for Ds_ in Ds]
    steps = [cell(problem, D, D, "at_D", nfe, blocks) for D in Ds for nfe in step_nfes]
    noise = [cell(problem, D, D, "at_D", strength_nfe, blocks, s) for D in Ds for s in strengths]
    return {"problem": problem.name, "points": len(problem.points), "dim": math.prod(problem.shape), "Ds": list(Ds),
            "floor": floor(problem, blocks), "marginal": marg, "table": table, "steps": steps, "noise": noise}


def _D(v):
    return "∞" if math.isinf(v) else f"{v:g}"


def _cell(r, key="sw1"):
    return f"{r[key]:.3f} ± {r[key + '_ci']:.3f}"


def lookup(rows, **want):
    found = [r for r in rows if all(r[k] == v for k, v in want.items())]
    return found[0] if found else None


def verdict(rows, Ds, key, x_key, x):
    """Whether the smallest D has the smaller error than the largest at setting x: 'holds' (below beyond both
    intervals), 'contradicted' (above beyond both), or 'not resolved'."""
    small = lookup(rows, D_model=Ds[0], **{x_key: x})
    big = lookup(rows, D_model=Ds[-1], **{x_key: x})
    if small[key] + small[key + "_ci"] < big[key] - big[key + "_ci"]:
        return "holds"
    if small[key] - small[key + "_ci"] > big[key] + big[key + "_ci"]:
        return "contradicted"
    return "not resolved"


def markdown(results, reps, count):
    role = lambda name: "development: constants chosen here" if name == DEVELOPMENT else "held out"  # noqa: E731
    lines = ["## Poisson flow with exact finite-D models", "",
             f"Exact PFGM++ point-set models trained at D (lab/problems.py PointSet), sampled by poisson_flow (inner "
             f"solver {SOLVER}, Karras, σ 0.002..80, VE, float64) from its prior at D'. Cells: mean ± 95% t interval "
             f"over {reps} blocks of {count} seeds, each block against its own data draw. SW1 = sliced W1, TV = "
             f"mode-weight total variation, MMD = RBF MMD.", ""]
    for res in results:
        f, name, Ds = res["floor"], res["problem"], res["Ds"]
        lines += [f"### {name} ({res['points']} points, N = {res['dim']}; {role(name)})", "",
                  f"Data-vs-data floor: SW1 {_cell(f)}, TV {_cell(f, 'modes')}, MMD {_cell(f, 'mmd')}.", ""]
        lines += [f"(a) the marginal at σ = {MARGINAL_SIGMA:g}: KS distance of the distance-to-nearest-point, flowed "
                  f"from σ = {PointSet.sigma_max:g} by route at_D ({MARGINAL_NFE // 2} steps) vs exact draws of the D "
                  f"model's marginal; rows D, columns D'; exact-vs-exact floor "
                  f"{max(r['ks_floor'] for r in res['marginal']):.3f} at most", "", "| D \\ D' | " + " | ".join(_D(d) for d in Ds) + " |",
                  "|---|" + "---|" * len(Ds)]
        for Dm in Ds:
            lines.append(f"| {_D(Dm)} | " + " | ".join(_cell(lookup(res["marginal"], D_model=Dm, D_sampler=d), "ks")
                                                  for d in Ds) + " |")
        lines.append("")
        for nfe in sorted({r["nfe"] for r in res["table"]}, reverse=True):
            for route in ROUTES:
                rows = [r for r in res["table"] if r["nfe"] == nfe and r["trained"] == route]
                lines += [f"(a) route `trained = {route}`, {nfe} calls — SW1 / TV; rows: model trained at D, "
                          f"columns: sampler D'", "", "| D \\ D' | " + " | ".join(_D(d) for d in Ds) + " |",
                          "|---|" + "---|" * len(Ds)]
                for Dm in Ds:
                    cells = [lookup(rows, D_model=Dm, D_sampler=d) or lookup(res["table"], nfe=nfe, trained="at_D",
                                                                             D_model=Dm, D_sampler=d) for d in Ds]
                    lines.append(f"| {_D(Dm)} | " + " | ".join(f"{_cell(c)} / {_cell(c, 'modes')}" for c in cells) + " |")
                lines.append("")
        for part, x_key, xs, label in (("steps", "nfe", sorted({r["nfe"] for r in res["steps"]}), "calls"),
                                       ("noise", "strength", sorted({r["strength"] for r in res["noise"]}),
                                        "output-noise strength")):
            rows = res[part]
            for key, metric in (("sw1", "SW1"), ("modes", "TV")):
                lines += [f"(b) {metric} vs {label}, each model sampled at its own D (route at_D)", "",
                          "| D | " + " | ".join(f"{x:g}" for x in xs) + " |", "|---|" + "---|" * len(xs)]
                for D in Ds:
                    lines.append(f"| {_D(D)} | " + " | ".join(_cell(lookup(rows, D_model=D, **{x_key: x}), key)
                                                          for x in xs) + " |")
                said = "; ".join(f"{x:g}: {verdict(rows, Ds, key, x_key, x)}" for x in xs)
                lines += ["", f"Smaller D more robust ({metric}, D = {_D(Ds[0])} vs {_D(Ds[-1])}, by {label}): {said}", ""]
        finite = all(r["finite"] for part in ("table", "steps", "noise") for r in res[part])
        lines += [f"Every sample finite: {finite}.", ""]
    return "\n".join(lines)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(3.4 * len(results), 5.6), squeeze=False)
    for j, res in enumerate(results):
        for i, (part, x_key, label) in enumerate((("steps", "nfe", "model calls"),
                                                 ("noise", "strength", "output-noise strength"))):
            ax = axes[i, j]
            for D in res["Ds"]:
                rs = sorted((r for r in res[part] if r["D_model"] == D), key=lambda r: r[x_key])
                ax.errorbar([r[x_key] for r in rs], [r["sw1"] for r in rs], yerr=[r["sw1_ci"] for r in rs],
                            marker="o", ms=3, capsize=2, label=f"D = {_D(D)}")
            ax.axhline(res["floor"]["sw1"], color="gray", ls=":", lw=1)
            ax.set_yscale("log")
            if part == "steps":
                ax.set_xscale("log")
                ticks = sorted({r[x_key] for r in res[part]})
                ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=7)
                ax.minorticks_off()
            ax.set_xlabel(label, fontsize=8)
            ax.set_title(res["problem"], fontsize=9)
            ax.grid(True, alpha=0.3)
        axes[0, j].set_ylabel("sliced W1 to data" if j == 0 else "")
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def cmd(args):
    t0 = time.perf_counter()
    path = output.folder("poisson", args.out)
    if args.quick:
        names, reps, count = ["clusters16"], 2, 64
        sizes = dict(Ds=(1.0, math.inf), table_nfes=(10,), step_nfes=(4, 10), strengths=(0.0, 0.4), strength_nfe=10)
    else:
        names, reps, count, sizes = list(PROBLEMS), args.reps, args.count, {}
    results = []
    for name in names:  # written after each problem, so a long run leaves what it has measured
        results.append(grid(PROBLEMS[name](), reps, count, **sizes))
        text = markdown(results, reps, count)
        plot(results, path / "poisson.png")
        md = output.write(path, "poisson", {"reps": reps, "count": count, "done": names[:len(results)],
                                            "results": _jsonable(results)}, text, time.perf_counter() - t0)
        print(f"{name} done at {time.perf_counter() - t0:.0f} s", flush=True)
    print(text)
    print(f"wrote {md}, poisson.json, poisson.png in {time.perf_counter() - t0:.0f} s")


def _jsonable(v):
    """v with each infinite float as the string 'inf' (JSON has no infinity)."""
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return "inf" if isinstance(v, float) and math.isinf(v) else v


def add_study(sub):
    p = sub.add_parser("poisson", help="Poisson flow on exact finite-D (PFGM++) point-set models: D x D' table, "
                                       "robustness to steps and output noise")
    p.add_argument("--quick", action="store_true", help="the development problem, D 1 and inf, 2 x 64 samples")
    p.add_argument("--reps", type=int, default=4, help="replicate seed blocks per cell (default: %(default)s)")
    p.add_argument("--count", type=int, default=256, help="samples per block (default: %(default)s)")
    p.add_argument("--out", default=None, help="default docs/studies/poisson")
    p.set_defaults(fn=cmd)
