"""`python -m samplerlab bench`: the convergent solvers against k-diffusion's and ComfyUI's deterministic samplers.

Every contender runs on the same x_T (one per seed) and schedule; model calls are counted here (a step of
Heun is 2 calls); a fixed-step contender gets the most steps whose counted calls fit the NFE budget, an
adaptive one (dpm_adaptive, exp_adaptive) the best of a tolerance ladder within the budget. Baselines run
as ComfyUI runs them: in host coordinates, on flow problems too (sigma = t from 1, x the flow state), and
uni_pc with ComfyUI's discarded penultimate level. dpm_adaptive stops at sigma_min; one counted DDIM call
finishes it at 0. ComfyUI's samplers are imported by name from the COMFYUI_PATH checkout, only here and
only when that is set (the one place in lab/ that touches comfy, as the issue asks).
"""
import importlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from ..samplers import REGISTRY
from ..samplers.space import resolve
from ..samplers.stepping import ddim
from ..schedulers import REGISTRY as SCHEDULERS
from . import kdiffusion, problems
from .bound import bound
from .runner import CountingModel, Record, mean_ci, rms_error, schedule_range

OURS = [("exp_multistep-3", "exp_multistep", {"order": 3}), ("exp_multistep-4", "exp_multistep", {"order": 4}),
        ("exp_pc-2", "exp_pc", {"order": 2}), ("exp_pc-3", "exp_pc", {"order": 3}),
        ("adams-2", "adams", {"order": 2}), ("adams-3", "adams", {"order": 3})]
DEFAULT = "adams-2"
"""The training-free default (samplers/adams.py, its default options): the row the summary scores against the
target (geometric mean <= 1, worst <= 2 times the best baseline's error)."""
TOLERANCES = (0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
BOUND = "on-schedule bound"
"""The row of lab/bound.py's least error on a schedule's levels (Gaussian problems): no contender, a floor."""
DEVELOPMENT = ("gaussian", "mixture", "field", "mixture_cond", "gaussian96", "mixture32", "memorise16")
"""The problems the pack's choices were made on: gaussian, mixture and field every one (multistep.SCALE, the
default solver's design); mixture_cond checked SCALE; gaussian96 and mixture32 decided that the monotone level
polynomial was not shipped in adams' predictor, memorise16 that its corrector is solved for v's linear part
(samplers/adams.py). They were the held-out group until those choices looked at them."""
HELD_OUT = ("gaussian48", "mixture20", "memorise24", "digits", "els", "gaussian64", "mixture12", "memorise32", "memorise20",
            "memorise28")
"""Problems that took no part in designing the shipped solvers: gaussian48, mixture20 and memorise24 were added
when memorise16 had taken part in a choice (lab/problems.py), digits is the trained network (lab/trained.py), els
the ELS machine (lab/els.py, added after every choice); gaussian64, mixture12 and memorise32 were defined before
the 512-seed bench chose the default again and run after it; memorise20 and memorise28 were defined for a choice
of the calibrated solver (its scoring starts) after every training-free choice. The bench reports both groups
apart. A variant of adams' history velocity (samplers/adams.py) was run once on the first four after it had been
chosen on the development problems, and not shipped because it lost on digits: the next choice needs fresh
held-out problems (els is one)."""
CALIBRATED = "calibrated"
"""The schedule column of a calibrated pipeline's records (it makes its own levels)."""
EVAL_SEED0 = 1000
"""The bench evaluates on seeds EVAL_SEED0 + k; a calibrated pipeline calibrates on seeds 0 .. k - 1 (disjoint)."""


@dataclass(frozen=True)
class Pipeline:
    """A solver x schedule under test: `run(model, x, sigmas, space)` samples on the host levels a schedule gives.

    A fixed-step pipeline gets the most steps whose counted calls fit a cell's budget (`calls_per_step` is the
    first guess); an adaptive one (`ladder`: tolerances, each passed as run(..., rtol=tol) on the levels
    [sigma_max, sigma_min, 0]) the best run that fits. A calibrated pipeline makes its own levels and run:
    calibrate(model, x_cal, sigma_min, sigma_max, nfe, space) -> a solver with `sigmas` and
    `sample(model, x, disable=True)` (samplers.calibrated.Calibrated), from start states of seeds that are never
    evaluation seeds (`calibrated_cells`); it is scored against the best baseline over all schedules."""

    label: str
    run: Callable = None
    calls_per_step: int = 1
    ladder: Optional[tuple] = None
    discard_penultimate: bool = False
    calibrate: Optional[Callable] = None


def _host(fn, **options):
    """A baseline called as ComfyUI calls it: host coordinates, no `space`."""
    return lambda model, x, sigmas, space="ve": fn(model, x, sigmas, extra_args={}, disable=True, **options)


def _dpm_adaptive(fn, rtol):
    def run(model, x, sigmas, space="ve"):
        s = sigmas.tolist()
        lo = s[-2] if s[-1] == 0 else s[-1]
        out = fn(model, x, lo, s[0], disable=True, rtol=rtol, atol=rtol / 10)
        d = model(out, out.new_ones([x.shape[0]]) * lo)
        return ddim(resolve(space), out, d, lo, 0.0) if s[-1] == 0 else out
    return run


def _ours(name, options):
    return lambda m, x, s, space="ve": REGISTRY[name].fn(m, x, s, disable=True, space=space, **options)


def pipelines(comfy_path=None):
    """Every contender: ours (OURS), k-diffusion's baselines when installed, ComfyUI's when comfy_path is set."""
    out = [Pipeline(label, _ours(name, opts)) for label, name, opts in OURS]
    out.append(Pipeline("exp_adaptive", lambda m, x, s, space="ve", rtol=0.01: REGISTRY["exp_adaptive"].fn(
        m, x, s, disable=True, space=space, rtol=rtol, atol=rtol / 5, budget=1000), ladder=TOLERANCES))
    K = kdiffusion.load()
    if K is not None:
        ks = K.sampling
        out += [Pipeline("k:euler", _host(ks.sample_euler)), Pipeline("k:heun", _host(ks.sample_heun), 2),
                Pipeline("k:dpmpp_2m", _host(ks.sample_dpmpp_2m)),
                Pipeline("k:dpmpp_3m_sde(eta=0)", _host(ks.sample_dpmpp_3m_sde, eta=0.0)),
                Pipeline("k:lms", _host(ks.sample_lms)),
                Pipeline("k:dpm_adaptive", lambda m, x, s, space="ve", rtol=0.05: _dpm_adaptive(ks.sample_dpm_adaptive, rtol)(m, x, s, space),
                         ladder=TOLERANCES)]
    if comfy_path:
        sys.path.insert(0, comfy_path)
        importlib.import_module("comfy.cli_args").args.cpu = True
        uni_pc = importlib.import_module("comfy.extra_samplers.uni_pc")
        cs = importlib.import_module("comfy.k_diffusion.sampling")
        out += [Pipeline("c:uni_pc_bh2", _host(uni_pc.sample_unipc_bh2), discard_penultimate=True)]
        out += [Pipeline(f"c:{n}", _host(getattr(cs, "sample_" + n)))
                for n in ("deis", "ipndm", "ipndm_v", "res_multistep", "gradient_estimation")]
    return out


def calibrated_pipeline():
    """The calibrated solver (samplers/calibrated.py) as a pipeline: fitted per cell (problem, space, NFE) on the
    calibration seeds, then run on the evaluation seeds; its calibration calls are not counted in the cell."""
    from ..samplers.calibrated import calibrate_solver

    def calibrate(model, x_cal, sigma_min, sigma_max, nfe, space):
        return calibrate_solver(model, x_cal, sigma_min, sigma_max, nfe, space=space)

    return Pipeline(CALIBRATED, calibrate=calibrate)


def calibrated_cells(problem, space, nfes, x_T, labels, exact, cal_seeds, calibrate):
    """Per budget, (nfe, outcome): the ValueError with which `calibrate` (Pipeline.calibrate) refused the model (its
    reference does not converge, say), or (solver, counted calls, per-sample errors [B], seconds, per-sample
    "ends in another component than exact" [B] or None: `another_mode`) of the solver, calibrated on the start
    states of `cal_seeds`, run from x_T (float32, like a host) against `exact`."""
    sigma_min, sigma_max = schedule_range(problem, space)
    x_cal, cal_labels = problem.draw(list(cal_seeds), space, sigma_max)
    model, flip = problem.model(space, labels), another_mode(problem, exact)
    for nfe in nfes:
        try:
            cal = calibrate(problem.model(space, cal_labels), x_cal.float(), sigma_min, sigma_max, nfe, space)
        except ValueError as e:
            yield nfe, e
            continue
        yield (nfe, (cal,) + _one(lambda m, x, s, space: cal.sample(m, x, disable=True), model, x_T.float(),
                                  torch.as_tensor(cal.sigmas), space, exact, flip))


def another_mode(problem, exact):
    """For a problem with components (`component`: the mixtures), end [B, ...] -> bool [B], True where a sample
    ends in another component than its exact solution (a start near a basin boundary sent across it: an error
    of the size of the distance between modes); None for the others."""
    if not hasattr(problem, "component"):
        return None
    target = problem.component(exact)
    return lambda end: problem.component(end) != target


def share(flipped):
    """The share of True in a bool [B], or None."""
    return None if flipped is None else float(flipped.double().mean())


def _one(fn, model, x, sigmas, space, exact, flip=None, **kw):
    counted = CountingModel(model)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = fn(counted, x, sigmas, space=space, **kw)
    return counted.calls, rms_error(out, exact), time.perf_counter() - t0, None if flip is None else flip(out)


def _fixed(pipe, model, x, space, exact, levels, nfe, flip=None):
    """(steps, calls, errors, seconds, flipped) of the most steps of `pipe` whose counted calls fit `nfe`."""
    steps = max(1, nfe // pipe.calls_per_step)
    first = _one(pipe.run, model, x, levels(steps), space, exact, flip)
    if first[0] < nfe:
        more = _one(pipe.run, model, x, levels(steps + 1), space, exact, flip)
        if more[0] <= nfe:
            return (steps + 1,) + more
    return (steps,) + first


def race(problem, space, schedules, nfes, seeds, comfy_path=None, extra=(), cal_seeds=None, refused=None, exact=None):
    """Records of every pipeline (`pipelines(comfy_path)` and `extra`) at every (schedule, NFE budget), float32
    like a host, on the start states of `seeds`; calibrated pipelines calibrate on `cal_seeds` (default
    0 .. len(seeds) - 1), which must be disjoint from `seeds`. A calibration's ValueError (its reference solve
    does not converge, say) is raised, or with a list `refused` appended to it as a line and the cell left empty.
    exact: the exact solutions from those start states, when the caller has them (else solved here)."""
    seeds = list(seeds)
    cal_seeds = list(range(len(seeds))) if cal_seeds is None else list(cal_seeds)
    sigma_min, sigma_max = schedule_range(problem, space)
    x_T, labels = problem.draw(seeds, space, sigma_max)
    exact = problem.exact(x_T, sigma_max, 0.0, space, labels) if exact is None else exact
    model, x, flip = problem.model(space, labels), x_T.float(), another_mode(problem, exact)
    records = []
    for pipe in pipelines(comfy_path) + list(extra):
        if pipe.calibrate is not None:
            if set(cal_seeds) & set(seeds):
                raise ValueError(f"{pipe.label}: calibration seeds must differ from the evaluation seeds {seeds}")
            for nfe, out in calibrated_cells(problem, space, nfes, x_T, labels, exact, cal_seeds, pipe.calibrate):
                if isinstance(out, ValueError):
                    if refused is None:
                        raise out
                    refused.append(f"{pipe.label} on {problem.name} ({space}, {nfe} calls) refused: {out}")
                    print(refused[-1], file=sys.stderr)
                    continue
                cal, calls, err, sec, flipped = out
                e, ci = mean_ci(err)
                records.append(Record(problem.name, space, pipe.label, CALIBRATED, nfe, len(cal.sigmas) - 1, calls, e, ci, sec,
                                      float(err.median()), share(flipped)))
            continue
        for sched in schedules:
            def levels(n):
                s = SCHEDULERS[sched].fn(n + 1 if pipe.discard_penultimate else n, sigma_min, sigma_max)
                return (torch.cat([s[:-2], s[-1:]]) if pipe.discard_penultimate else s).float()
            if pipe.ladder:
                ends = torch.tensor([sigma_max, sigma_min, 0.0])
                runs = [_one(pipe.run, model, x, ends, space, exact, flip, rtol=tol) for tol in pipe.ladder]
            for nfe in nfes:
                if pipe.ladder:
                    fit = [r for r in runs if r[0] <= nfe]
                    if not fit:
                        continue
                    calls, err, sec, flipped = min(fit, key=lambda r: float(r[1].mean()))
                    steps = calls
                else:
                    steps, calls, err, sec, flipped = _fixed(pipe, model, x, space, exact, levels, nfe, flip)
                e, ci = mean_ci(err)
                records.append(Record(problem.name, space, pipe.label, sched, nfe, steps, calls, e, ci, sec, float(err.median()),
                                      share(flipped)))
    if hasattr(problem, "modes"):
        for sched in schedules:
            for nfe in nfes:
                sigmas = SCHEDULERS[sched].fn(nfe, sigma_min, sigma_max)
                records.append(Record(problem.name, space, BOUND, sched, nfe, nfe, nfe, bound(problem, x_T, sigmas, space), 0.0, 0.0))
    return records


def overhead(steps=20, shape=(4, 4, 128, 128), rounds=40):
    """Per-step seconds of each solver on a cheap denoiser (D = 0.9 x) and the ratio to k-diffusion's dpmpp_2m.

    One warm-up run each, then `rounds` rounds that time every solver once (order rotated per round).
    Returns {label: (fastest seconds per step, ratio of the fastest runs, median over rounds of the ratio to
    dpmpp_2m's time in the same round)}: the fastest run is the least disturbed by other processes, and the
    paired median cancels load that drifts between rounds.
    """
    K = kdiffusion.load()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    sigmas = SCHEDULERS["karras"].fn(steps, 0.002, 80.0).float()
    model = lambda x, s, **kw: x * 0.9  # noqa: E731
    fns = {"k:dpmpp_2m": lambda: K.sampling.sample_dpmpp_2m(model, x, sigmas, disable=True)}
    for label, name, opts in OURS:
        fns[label] = (lambda n, o: lambda: REGISTRY[n].fn(model, x, sigmas, disable=True, **o))(name, opts)
    labels = list(fns)
    times = {k: [] for k in labels}
    with torch.no_grad():
        for f in fns.values():
            f()
        for r in range(rounds):
            for k in labels[r % len(labels):] + labels[:r % len(labels)]:
                t0 = time.perf_counter()
                fns[k]()
                times[k].append((time.perf_counter() - t0) / steps)
    base = times["k:dpmpp_2m"]
    return {k: (min(v), min(v) / min(base), sorted(a / b for a, b in zip(v, base))[len(v) // 2]) for k, v in times.items()}


def option_variants():
    """(label, sampler name, options) for every registered sampler: its defaults, each other choice of a choice
    parameter (the Poisson solver aside: its choices are the samplers themselves), each bool flipped, and the ends
    of each integer range; plus noise tracking wrapped around euler and dpmpp_2m."""
    out = []
    for name, spec in sorted(REGISTRY.items()):
        out.append((name, name, {}))
        for pname, p in spec.params.items():
            if p.choices is not None:
                values = [] if pname == "solver" else [c for c in p.choices if c != p.default]
            elif isinstance(p.default, bool):
                values = [not p.default]
            elif isinstance(p.default, int):
                values = [v for v in (int(p.min), int(p.max)) if v != p.default]
            else:
                values = []
            out += [(f"{name} {pname}={v}", name, {pname: v}) for v in values]
    out += [(f"{n} + tracking stein", n, {"tracking": "stein"}) for n in ("euler", "dpmpp_2m")]
    return out


def call_overhead(batches=(1, 8), shape=(4, 4, 128, 128), steps=20, rounds=3):
    """Seconds per model call of every `option_variants` entry and of k-diffusion's dpmpp_2m on a cheap denoiser
    (D = 0.9 x), latents of `shape` per sample at each batch size; one warm-up run, then the fastest of `rounds`
    rotated rounds. Returns {label: {batch: seconds per call}}; per-call time growing faster than the batch
    (per-sample cost rising) means per-sample Python work."""
    from ..samplers.tracking import with_noise_tracking
    K = kdiffusion.load()
    sigmas = SCHEDULERS["karras"].fn(steps, 0.002, 80.0).float()
    out = {}
    for batch in batches:
        x = torch.randn((batch, *shape), generator=torch.Generator().manual_seed(0))
        model = CountingModel(lambda x, s, **kw: x * 0.9)
        fns = {}
        if K is not None:
            fns["k:dpmpp_2m"] = lambda: K.sampling.sample_dpmpp_2m(model, x, sigmas, disable=True)
        for label, name, opts in option_variants():
            fn = REGISTRY[name].fn
            if "tracking" in opts:
                fn, opts = with_noise_tracking(fn, track=opts["tracking"]), {}
            fns[label] = (lambda f, o: lambda: f(model, x, sigmas, disable=True, extra_args={"seed": 0}, **o))(fn, opts)
        labels = list(fns)
        best = {k: math.inf for k in labels}
        with torch.no_grad():
            for f in fns.values():
                f()
            for r in range(rounds):
                for k in labels[r % len(labels):] + labels[:r % len(labels)]:
                    model.calls = 0
                    t0 = time.perf_counter()
                    fns[k]()
                    best[k] = min(best[k], (time.perf_counter() - t0) / model.calls)
        for k, v in best.items():
            out.setdefault(k, {})[batch] = v
    return out


def call_overhead_table(times):
    """Markdown of `call_overhead`: ms per call at each batch, the ratio to k:dpmpp_2m's at the same batch, and
    the per-sample growth (per-call time at the largest batch over the smallest's, divided by the batch ratio)."""
    batches = sorted(next(iter(times.values())))
    lo, hi = batches[0], batches[-1]
    base = times.get("k:dpmpp_2m")
    head = " | ".join(f"ms/call, batch {b}" for b in batches)
    rows = [f"| sampler and option | {head} | / k:dpmpp_2m at batch {hi} | per-sample growth {lo} -> {hi} |",
            "|---|" + "---|" * (len(batches) + 2)]
    for k, t in times.items():
        ratio = f"{t[hi] / base[hi]:.2f}x" if base else "-"
        cells = " | ".join(f"{t[b] * 1e3:.2f}" for b in batches)
        rows.append(f"| {k} | {cells} | {ratio} | {t[hi] / t[lo] * lo / hi:.2f}x |")
    return "\n".join(rows)


def slope(fn, steps=(24, 64)):
    """The measured order -d log(error) / d log(steps) of fn(model, x, sigmas) between two exponential grids from
    sigma 10 to 0.05 (ending there: no step to 0) on a 16-dimensional Gaussian (variances 0.1-2), float64."""
    problem = problems.Gaussian(shape=(16,), lam_min=0.1, lam_max=2.0)
    x = problem.draw(range(2), "ve", 10.0)[0]
    exact = problem.exact(x, 10.0, 0.05)
    errs = [float(rms_error(fn(problem.model(), x, SCHEDULERS["exponential"].fn(n, 0.05, 10.0)[:-1]), exact).mean())
            for n in steps]
    return -math.log(errs[1] / errs[0]) / math.log(steps[1] / steps[0])


ORDERS = [("exp_multistep", {"order": q}, q) for q in (1, 2, 3, 4)] + \
         [("exp_pc", {"order": p}, p + 1) for p in (1, 2, 3)] + [("exp_pc", {"order": 2, "corrector": False}, 2)] + \
         [("adams", {"order": q}, q + 1) for q in (1, 2)]


def orders():
    """Markdown: the declared and measured (`slope`) order of every option in ORDERS and of k-diffusion's 2M and 3M."""
    rows = [(f"{name} {opts}", q, slope(lambda m, x, s, n=name, o=opts: REGISTRY[n].fn(m, x, s, disable=True, **o)))
            for name, opts, q in ORDERS]
    K = kdiffusion.load()
    if K is not None:
        rows += [("k:dpmpp_2m", 2, slope(lambda m, x, s: K.sampling.sample_dpmpp_2m(m, x, s, disable=True))),
                 ("k:dpmpp_3m_sde(eta=0)", 3, slope(lambda m, x, s: K.sampling.sample_dpmpp_3m_sde(m, x, s, disable=True, eta=0.0)))]
    return "\n".join(["| solver | nominal order | measured (24 -> 64 steps) |", "|---|---|---|"] +
                     [f"| {label} | {q} | {m:.2f} |" for label, q, m in rows])


def _side(label):
    return "bound" if label == BOUND else "base" if label.startswith(("k:", "c:")) else "ours"


def best(records):
    """{(problem, space, schedule, NFE budget, "ours" | "base" | "bound"): the least-error record on that side};
    schedule "*" holds the best baseline over every schedule (what a calibrated pipeline is scored against)."""
    top = {}
    for r in records:
        side = _side(r.sampler)
        for sched in (r.schedule, "*") if side == "base" else (r.schedule,):
            key = (r.problem, r.space, sched, r.budget, side)
            if key not in top or r.error < top[key].error:
                top[key] = r
    return top


def _baseline(top, p, sp, sch, nfe):
    """The best baseline record a cell is scored against (over all schedules for a calibrated pipeline)."""
    return top.get((p, sp, "*" if sch == CALIBRATED else sch, nfe, "base"))


def group(problem):
    return "development" if problem in DEVELOPMENT else "held-out"


def _gm(values):
    return math.exp(sum(map(math.log, values)) / len(values)) if values else math.nan


def against_the_others(records, nfes=(5, 6, 8, 10)):
    """{baseline: (geometric mean, worst, cells)} of its error over the best other baseline's in each cell: the
    training-free target's yardstick applied to the baselines themselves (the best baseline of a cell is 1 by
    construction, so against all of them no baseline can score below 1)."""
    cells = {}
    for r in records:
        if _side(r.sampler) == "base" and r.budget in nfes:
            cells.setdefault((r.problem, r.space, r.schedule, r.budget), {})[r.sampler] = r.error
    ratios = {}
    for errors in cells.values():
        for label, e in errors.items():
            others = [v for other, v in errors.items() if other != label]
            if others:
                ratios.setdefault(label, []).append(e / min(others))
    return {label: (_gm(v), max(v), len(v)) for label, v in ratios.items()}


def summary(records, nfes=(5, 6, 8, 10), target=0.5, default=None):
    """Markdown: per (problem, space, schedule, NFE) the best samplerlab error, the best baseline's, their ratio,
    whether ratio <= target, and the on-schedule bound with whether the target is reachable on the schedule's
    levels at all; then each solver's ratios over the cells (all, development and held-out problems apart), the
    training-free default's target (geometric mean <= 1, worst <= 2), and at the smallest budget the error over
    k:euler's."""
    top = best(records)
    lines = ["| problem | group | space | schedule | NFE | best samplerlab | error | best baseline | error | ratio "
             "| target | on-schedule bound | reachable |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    met = total = unreachable = 0
    for (p, sp, sch, nfe, side), o in sorted(top.items(), key=lambda kv: (group(kv[0][0]), kv[0])):
        b = _baseline(top, p, sp, sch, nfe)
        if side != "ours" or nfe not in nfes or b is None:
            continue
        ratio = o.error / b.error
        met, total = met + (ratio <= target), total + 1
        floor = top.get((p, sp, sch, nfe, "bound"))
        reach = "" if floor is None else "yes" if floor.error <= target * b.error else "no"
        unreachable += reach == "no"
        lines.append(f"| {p} | {group(p)} | {sp} | {sch} | {nfe} | {o.sampler} | {o.error:.2e} | {b.sampler} "
                     f"| {b.error:.2e} | {ratio:.2f} | {'yes' if ratio <= target else 'no'} "
                     f"| {'' if floor is None else f'{floor.error:.2e}'} | {reach} |")
    lines += ["", f"Target (ratio <= {target}) met in {met} of {total} cells. In {unreachable} of them no sampler that "
              "calls the model once at each level of the schedule can meet it, not even one that knows the data "
              "covariance: the on-schedule bound (lab/bound.py) is above the target."]
    lines += ["", "Each solver over the cells: geometric mean and worst of its error over the best baseline's (all "
              "cells, then development and held-out problems apart), cells with "
              f"ratio <= {target}, cells where it beats k:dpmpp_2m (a calibrated pipeline: its best schedule; '-': no "
              "such problems)", "",
              "| solver | geo. mean ratio | worst ratio | development | held-out | cells <= target | beats k:dpmpp_2m |",
              "|---|---|---|---|---|---|---|"]
    dpm = {}
    for r in records:
        if r.sampler == "k:dpmpp_2m":
            for sched in (r.schedule, CALIBRATED):
                key = (r.problem, r.space, sched, r.budget)
                dpm[key] = min(dpm.get(key, math.inf), r.error)
    scores, default_cells = {}, []
    for label in sorted({r.sampler for r in records if _side(r.sampler) != "bound"}):
        mine = [(r, _baseline(top, r.problem, r.space, r.schedule, r.budget)) for r in records
                if r.sampler == label and r.budget in nfes]
        mine = [(r, b) for r, b in mine if b is not None]
        if mine:
            ratios = [r.error / b.error for r, b in mine]
            scores[label] = (_gm(ratios), max(ratios), len(ratios))
            if label == default:
                default_cells = [(r.problem, x) for x, (r, _) in zip(ratios, mine)]
            dev = _gm([x for x, (r, _) in zip(ratios, mine) if group(r.problem) == "development"])
            held = _gm([x for x, (r, _) in zip(ratios, mine) if group(r.problem) == "held-out"])
            wins = sum(r.error < dpm.get((r.problem, r.space, r.schedule, r.budget), -1.0) for r, _ in mine)
            dev, held = ("-" if math.isnan(v) else f"{v:.2f}" for v in (dev, held))
            lines.append(f"| {label} | {scores[label][0]:.2f} | {scores[label][1]:.2f} | {dev} | {held} "
                         f"| {sum(x <= target for x in ratios)} of {len(ratios)} | {wins} of {len(ratios)} |")
    if default in scores:
        g, worst, n = scores[default]
        ok = g <= 1.0 and worst <= 2.0
        lines += ["", f"Training-free default {default}: geometric mean {g:.2f} (target <= 1.0), worst {worst:.2f} "
                  f"(target <= 2.0) over {n} cells: target {'met' if ok else 'not met'}.", "",
                  f"{default} per problem:", "", "| problem | group | geo. mean ratio | worst ratio | cells |", "|---|---|---|---|---|"]
        for prob in sorted({p for p, _ in default_cells}, key=lambda p: (group(p), p)):
            cells = [x for p, x in default_cells if p == prob]
            lines.append(f"| {prob} | {group(prob)} | {_gm(cells):.2f} | {max(cells):.2f} | {len(cells)} |")
    others = against_the_others(records, nfes)
    if others:
        lines += ["", "Each baseline against the best of the other baselines in each cell (the same yardstick):", "",
                  "| baseline | geo. mean ratio | worst ratio | cells |", "|---|---|---|---|"]
        lines += [f"| {label} | {g:.2f} | {worst:.2f} | {n} |" for label, (g, worst, n) in sorted(others.items())]
        meets = [label for label, (g, worst, _) in others.items() if g <= 1.0 and worst <= 2.0]
        lines += ["", f"Baselines that would meet the training-free target against the others: {len(meets)} of "
                  f"{len(others)}{' (' + ', '.join(sorted(meets)) + ')' if meets else ''}."]
    low = min(r.budget for r in records)
    euler = {(r.problem, r.space, r.schedule): r.error for r in records if r.sampler == "k:euler" and r.budget == low}
    if euler:
        lines += ["", f"NFE {low}: error over k:euler's (blow-up check; < 1 everywhere = no blow-up)", "",
                  "| solver | worst ratio | cells below Euler |", "|---|---|---|"]
        for label in sorted({r.sampler for r in records if _side(r.sampler) == "ours"}):
            ratios = [r.error / euler[(r.problem, r.space, r.schedule)] for r in records
                      if r.sampler == label and r.budget == low and (r.problem, r.space, r.schedule) in euler]
            if ratios:
                lines.append(f"| {label} | {max(ratios):.2f} | {sum(x < 1 for x in ratios)} of {len(ratios)} |")
    return "\n".join(lines)


def plot(records, path, target=0.5):
    """A small PNG. Top row: error vs NFE of the best samplerlab solver (solid), the best baseline (dashed) and
    the on-schedule bound where there is one (dotted) per (problem, schedule), one panel per space. Bottom row:
    their ratio, with the target and parity lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    top = best(records)
    spaces = sorted({k[1] for k in top})
    fig, axes = plt.subplots(2, len(spaces), figsize=(4.6 * len(spaces), 6.2), squeeze=False, sharex=True)
    for col, space in enumerate(spaces):
        err, rat = axes[0, col], axes[1, col]
        for n, (p, sch) in enumerate(sorted({(k[0], k[2]) for k in top if k[1] == space and k[4] == "ours"})):
            cells = sorted((k[3], r.error, _baseline(top, *k[:4]).error) for k, r in top.items()
                           if k[4] == "ours" and k[:3] == (p, space, sch) and _baseline(top, *k[:4]) is not None)
            if not cells:
                continue
            nfe, ours, base = zip(*cells)
            color = plt.cm.tab20(n % 20)
            err.loglog(nfe, ours, color=color, marker="o", ms=3, label=f"{p} {sch}")
            err.loglog(nfe, base, color=color, ls="--", lw=0.9)
            floor = sorted((k[3], r.error) for k, r in top.items() if k[4] == "bound" and k[:3] == (p, space, sch))
            if floor:
                err.loglog(*zip(*floor), color=color, ls=":", lw=0.9)
            rat.semilogy(nfe, [o / b for o, b in zip(ours, base)], color=color, marker="o", ms=3)
        err.set_title(f"{space}: samplerlab (solid), baseline (dashed), bound (dotted)", fontsize=8)
        err.set_ylabel("RMS error vs exact ODE")
        rat.axhline(target, color="k", lw=0.8)
        rat.axhline(1.0, color="gray", lw=0.8, ls=":")
        rat.set_ylabel(f"ratio (target <= {target})")
        rat.set_xlabel("model calls (NFE)")
        rat.set_xticks(sorted({k[3] for k in top}), [str(n) for n in sorted({k[3] for k in top})])
        rat.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        for ax in (err, rat):
            ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def merged(records, paths, seeds):
    """records plus, from earlier bench.json files run with the same evaluation seeds (a list), the records of
    contenders that `records` lacks on its (problem, space, schedule, NFE) cells (a calibrated pipeline's on
    its (problem, space, NFE), whatever the schedule); a file with other seeds is a ValueError."""
    cells, labels = {(r.problem, r.space, r.schedule, r.budget) for r in records}, {r.sampler for r in records}
    cells |= {(p, sp, CALIBRATED, nfe) for p, sp, _, nfe in cells}
    out = list(records)
    for path in paths:
        meta = json.loads(Path(path).read_text())
        if meta.get("seeds") != seeds:
            raise ValueError(f"--merge {path} was run with seeds {meta.get('seeds')}, this run with {seeds}")
        out += [Record(**r) for r in meta["records"] if r["sampler"] not in labels
                and (r["problem"], r["space"], r["schedule"], r["budget"]) in cells]
    return out


QUICK = {"problems": [p for p in DEVELOPMENT + HELD_OUT if p not in problems.TRAINED], "spaces": ["ve", "flow"],
         "schedules": ["karras", "exponential"], "nfe": [4, 5, 6, 8, 10], "seeds": 512}
"""The README grid; the trained network and the ELS machine (problems.TRAINED) run on their own (`--problems
digits`, `--problems els`): their reference solves and calls cost minutes, not seconds."""


def references(names, seeds=range(2)):
    """Markdown: how far each reference-solved problem's exact solution is converged (problems.reference_convergence)."""
    lines = ["| problem | space | RK4 steps | max. difference to half the steps | RMS difference |", "|---|---|---|---|---|"]
    for name in names:
        p = problems.make(name)
        if type(p).exact is problems.Problem.exact:
            for sp in ("ve", "flow"):
                worst, rms = problems.reference_convergence(p, sp, seeds)
                lines.append(f"| {name} | {sp} | {p.reference_steps} | {worst:.1e} | {rms:.1e} |")
    return "\n".join(lines)


def add_parser(sub):
    """The `bench` subcommand."""
    p = sub.add_parser("bench", help="convergent solvers vs k-diffusion / ComfyUI baselines (error vs NFE)")
    p.add_argument("--out", default="samplerlab-bench", help="output folder (default: %(default)s)")
    p.add_argument("--problems", nargs="+", default=sorted(problems.PROBLEMS), choices=sorted(problems.PROBLEMS))
    p.add_argument("--spaces", nargs="+", default=["ve", "flow"], choices=["ve", "flow"])
    p.add_argument("--schedules", nargs="+", default=["karras", "exponential"], choices=sorted(SCHEDULERS))
    p.add_argument("--nfe", nargs="+", type=int, default=[4, 5, 6, 8, 10, 16])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--quick", action="store_true",
                   help="the README grid: " + ", ".join(f"{k} {v}" for k, v in QUICK.items()) + " (overrides those options)")
    p.add_argument("--calibrated", action="store_true",
                   help="also race the calibrated solver, calibrated per cell on seeds 0 .. seeds - 1 (disjoint from the "
                        "evaluation seeds; up to 400 calls per calibration)")
    p.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                   help="bench.json files of earlier runs on the same grid (e.g. ComfyUI's baselines, run with "
                        "COMFYUI_PATH in ComfyUI's venv): their contenders missing from this run join the tables")
    p.add_argument("--overhead", action="store_true", help="only time the per-step overhead against dpmpp_2m, and the "
                   "per-call overhead of every sampler and option (tracking included) at batch 1 and 8")
    p.add_argument("--orders", action="store_true", help="only measure the convergence order of every option")
    p.add_argument("--references", action="store_true",
                   help="only measure how far the reference solves of the problems without a closed form are converged")
    p.set_defaults(fn=cmd_bench)


def cmd_bench(args):
    from . import report
    if args.overhead:
        print("| solver | ms/step (fastest) | / dpmpp_2m (fastest) | / dpmpp_2m (median of paired rounds) |\n|---|---|---|---|")
        for k, (sec, fast, paired) in overhead().items():
            print(f"| {k} | {sec * 1e3:.3f} | {fast:.2f}x | {paired:.2f}x |")
        print("\nPer model call, latents 4x4x128x128 per sample, 20 karras steps, D = 0.9 x:\n")
        print(call_overhead_table(call_overhead()))
        return
    if args.orders:
        print(orders())
        return
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    if args.references:
        print(references(args.problems))
        return
    t0 = time.perf_counter()
    seeds = list(range(EVAL_SEED0, EVAL_SEED0 + args.seeds))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    comfy = os.environ.get("COMFYUI_PATH")
    extra = [calibrated_pipeline()] if args.calibrated else []
    records, refused = [], []
    for name in args.problems:
        for space in args.spaces:
            records += race(problems.make(name), space, args.schedules, args.nfe, seeds, comfy, extra, refused=refused)
    records = merged(records, args.merge, seeds)
    comfy = comfy or any(r.sampler.startswith("c:") for r in records)
    table = summary(records, default=DEFAULT)
    if refused:
        table += "\n\nCells left empty (the pipeline refused the model):\n\n" + "\n".join(f"- {line}" for line in refused)
    (out / "bench.md").write_text(report.markdown(records) + "\n## Best samplerlab vs best baseline\n\n" + table + "\n")
    (out / "summary.md").write_text(table + "\n")
    report.write_json(records, out / "bench.json", command="bench", seeds=seeds, comfyui=bool(comfy),
                      development=[p for p in args.problems if p in DEVELOPMENT],
                      held_out=[p for p in args.problems if p not in DEVELOPMENT], refused=refused)
    plot(records, out / "error_vs_nfe.png")
    print(table)
    print(f"wrote {out}/bench.md, summary.md, bench.json, error_vs_nfe.png in {time.perf_counter() - t0:.0f} s")
