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
import os
import sys
import time

import torch

from ..samplers import REGISTRY
from ..samplers.space import resolve
from ..samplers.stepping import ddim
from ..schedulers import REGISTRY as SCHEDULERS
from . import kdiffusion, problems
from .runner import CountingModel, Record, mean_ci, rms_error, schedule_range

OURS = [("exp_multistep-3", "exp_multistep", {"order": 3}), ("exp_multistep-4", "exp_multistep", {"order": 4}),
        ("exp_pc-2", "exp_pc", {"order": 2}), ("exp_pc-3", "exp_pc", {"order": 3})]
TOLERANCES = (0.3, 0.1, 0.03, 0.01, 0.003, 0.001)


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


def contenders(comfy_path=None):
    """(label, fn(model, x, sigmas, space), calls(steps) -> steps to try, adaptive ladder or None, discard_penultimate)."""
    out = [(label, (lambda n, o: lambda m, x, s, space="ve": REGISTRY[n].fn(m, x, s, disable=True, space=space, **o))(name, opts), 1, None, False)
           for label, name, opts in OURS]
    out.append(("exp_adaptive", lambda m, x, s, space="ve", rtol=0.01, budget=1000: REGISTRY["exp_adaptive"].fn(
        m, x, s, disable=True, space=space, rtol=rtol, atol=rtol / 5, budget=budget), 1, TOLERANCES, False))
    K = kdiffusion.load()
    if K is not None:
        ks = K.sampling
        out += [("k:euler", _host(ks.sample_euler), 1, None, False), ("k:heun", _host(ks.sample_heun), 2, None, False),
                ("k:dpmpp_2m", _host(ks.sample_dpmpp_2m), 1, None, False),
                ("k:dpmpp_3m_sde(eta=0)", _host(ks.sample_dpmpp_3m_sde, eta=0.0), 1, None, False),
                ("k:lms", _host(ks.sample_lms), 1, None, False),
                ("k:dpm_adaptive", lambda m, x, s, space="ve", rtol=0.05: _dpm_adaptive(ks.sample_dpm_adaptive, rtol)(m, x, s, space),
                 1, TOLERANCES, False)]
    if comfy_path:
        sys.path.insert(0, comfy_path)
        importlib.import_module("comfy.cli_args").args.cpu = True
        uni_pc = importlib.import_module("comfy.extra_samplers.uni_pc")
        cs = importlib.import_module("comfy.k_diffusion.sampling")
        out += [("c:uni_pc_bh2", _host(uni_pc.sample_unipc_bh2), 1, None, True)]
        out += [(f"c:{n}", _host(getattr(cs, "sample_" + n)), 1, None, False)
                for n in ("deis", "ipndm", "ipndm_v", "res_multistep", "gradient_estimation")]
    return out


def _one(fn, model, x, sigmas, space, exact, **kw):
    counted = CountingModel(model)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = fn(counted, x, sigmas, space=space, **kw)
    return counted.calls, rms_error(out, exact), time.perf_counter() - t0


def race(problem, space, schedules, nfes, seeds, comfy_path=None):
    """Records of every contender at every (schedule, NFE budget), float32 like a host."""
    sigma_min, sigma_max = schedule_range(problem, space)
    x_T, labels = problem.draw(list(seeds), space, sigma_max)
    exact = problem.exact(x_T, sigma_max, 0.0, space, labels)
    model, x = problem.model(space, labels), x_T.float()
    records = []
    for label, fn, per, ladder, discard in contenders(comfy_path):
        for sched in schedules:
            def sig(n):
                s = SCHEDULERS[sched].fn(n + 1 if discard else n, sigma_min, sigma_max)
                return (torch.cat([s[:-2], s[-1:]]) if discard else s).float()
            if ladder:
                ends = torch.tensor([sigma_max, sigma_min, 0.0])
                runs = [_one(fn, model, x, ends, space, exact, rtol=tol) for tol in ladder]
            for nfe in nfes:
                if ladder:
                    fit = [r for r in runs if r[0] <= nfe]
                    if not fit:
                        continue
                    calls, err, sec = min(fit, key=lambda r: float(r[1].mean()))
                    steps = calls
                else:
                    steps = max(1, nfe // per)
                    calls, err, sec = _one(fn, model, x, sig(steps), space, exact)
                    if calls < nfe:
                        more = _one(fn, model, x, sig(steps + 1), space, exact)
                        if more[0] <= nfe:
                            steps, (calls, err, sec) = steps + 1, more
                e, ci = mean_ci(err)
                records.append(Record(problem.name, space, label, sched, nfe, steps, calls, e, ci, sec))
    return records


def overhead(steps=20, shape=(4, 4, 128, 128), repeats=3):
    """Seconds per step of each solver on a cheap denoiser (D = x / 2) over k-diffusion's dpmpp_2m (median of runs)."""
    K = kdiffusion.load()
    x = torch.randn(shape)
    sigmas = SCHEDULERS["karras"].fn(steps, 0.002, 80.0).float()
    model = lambda x, s, **kw: x * 0.5  # noqa: E731
    fns = {"k:dpmpp_2m": lambda: K.sampling.sample_dpmpp_2m(model, x, sigmas, disable=True)}
    for label, name, opts in OURS:
        fns[label] = (lambda n, o: lambda: REGISTRY[n].fn(model, x, sigmas, disable=True, **o))(name, opts)
    times = {}
    for label, f in fns.items():
        f()
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f()
            runs.append((time.perf_counter() - t0) / steps)
        times[label] = sorted(runs)[len(runs) // 2]
    base = times["k:dpmpp_2m"]
    return {k: (v, v / base) for k, v in times.items()}


def summary(records, nfes=(5, 6, 8, 10)):
    """Per (problem, space, schedule, NFE): the best samplerlab error, the best baseline's, and their ratio."""
    rows = {}
    for r in records:
        if r.budget in nfes:
            key = (r.problem, r.space, r.schedule, r.budget)
            side = "ours" if not r.sampler.startswith(("k:", "c:")) else "base"
            best = rows.setdefault(key, {})
            if side not in best or r.error < best[side][1]:
                best[side] = (r.sampler, r.error)
    lines = ["| problem | space | schedule | NFE | best samplerlab | error | best baseline | error | ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (p, sp, sch, nfe), b in sorted(rows.items()):
        o, base = b["ours"], b["base"]
        lines.append(f"| {p} | {sp} | {sch} | {nfe} | {o[0]} | {o[1]:.2e} | {base[0]} | {base[1]:.2e} | {o[1] / base[1]:.2f} |")
    return "\n".join(lines)


def add_parser(sub):
    """The `bench` subcommand."""
    p = sub.add_parser("bench", help="convergent solvers vs k-diffusion / ComfyUI baselines (error vs NFE)")
    p.add_argument("--out", default="samplerlab-bench", help="output folder (default: %(default)s)")
    p.add_argument("--problems", nargs="+", default=sorted(problems.PROBLEMS), choices=sorted(problems.PROBLEMS))
    p.add_argument("--spaces", nargs="+", default=["ve", "flow"], choices=["ve", "flow"])
    p.add_argument("--schedules", nargs="+", default=["karras", "exponential"], choices=sorted(SCHEDULERS))
    p.add_argument("--nfe", nargs="+", type=int, default=[4, 5, 6, 8, 10, 16, 32])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--overhead", action="store_true", help="only time the per-step overhead against dpmpp_2m")
    p.set_defaults(fn=cmd_bench)


def cmd_bench(args):
    from pathlib import Path

    from . import report
    if args.overhead:
        for k, (sec, ratio) in overhead().items():
            print(f"{k:<18} {sec * 1e3:7.2f} ms/step  {ratio:.2f}x dpmpp_2m")
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    comfy = os.environ.get("COMFYUI_PATH")
    records = []
    for name in args.problems:
        for space in args.spaces:
            records += race(problems.make(name), space, args.schedules, args.nfe, range(args.seeds), comfy)
    text = report.markdown(records) + "\n## Best samplerlab vs best baseline\n\n" + summary(records) + "\n"
    (out / "bench.md").write_text(text)
    report.write_json(records, out / "bench.json", command="bench", seeds=args.seeds, comfyui=bool(comfy))
    report.plot(records, out / "error_vs_nfe.png")
    print(text)
    print(f"wrote {out}/bench.md, bench.json, error_vs_nfe.png")
