"""The trained digits model in the lab: seeded sampling, `python -m samplerlab digits-eval` (class
accuracy and Frechet distance of samples against held-out digits, with the training-set floor), the
reference's convergence figure, and the demo's picture grid (same seeds, samplers x NFE, reference).
"""
import json
import time
from pathlib import Path

import torch

from ..samplers import REGISTRY as SAMPLERS
from ..samplers.space import resolve
from ..samplers.tracking import with_noise_tracking
from ..schedulers import REGISTRY as SCHEDULERS
from . import digit_metrics, digits, images, trained
from .runner import rms_error, schedule_range

EVAL_SEED0 = 10_000
"""Evaluation noise seeds start here; choices (the default guidance scale) were made on seeds below it."""


def start(seeds, space="ve"):
    """x_T [B, 1, 16, 16] float32 at the top of the schedule: sigma_max n (VE) or n (flow, t = 1), one
    generator per seed, so sample k depends on seeds[k] alone."""
    n = torch.stack([torch.randn(trained.SHAPE, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    return n * schedule_range(trained.Digits, space)[1]


def sample(labels, seeds, sampler="heun", steps=50, cfg=trained.DEFAULT_CFG, schedule="karras", space="ve",
           tracking=None, wrap=None):
    """Samples [B, 1, 16, 16] of classes `labels` from start(seeds) with a registered sampler and schedule;
    `tracking` (options of samplers/tracking.py, e.g. {"track": "stein"}) wraps the sampler in noise-level
    tracking, `wrap` (model -> model) the network (to count or record its calls)."""
    space = resolve(space)
    s_min, s_max = schedule_range(trained.Digits, space)
    sigmas = SCHEDULERS[schedule].fn(steps, s_min, s_max, space=space).float()
    extra = {"cond": torch.as_tensor(labels), "cfg": cfg}
    fn = SAMPLERS[sampler].fn if tracking is None else with_noise_tracking(SAMPLERS[sampler].fn, space, **tracking)
    net = trained.model(space) if wrap is None else wrap(trained.model(space))
    return fn(net, start(seeds, space), sigmas, extra_args=extra, disable=True, space=space)


def convergence(seeds=range(4), steps=(128, 256), cfg=trained.DEFAULT_CFG):
    """Largest per-sample RMS difference between reference solves at the two step counts: how far the
    coarser reference is from the finer (the reference's own error is of that size or smaller)."""
    problem = trained.Digits(cfg)
    x_T, labels = problem.draw(list(seeds), "ve", problem.sigma_max)
    a, b = (problem.exact(x_T, problem.sigma_max, 0.0, "ve", labels, n) for n in steps)
    return float(rms_error(a, b).max())


def evaluate(per_class=30, sampler="heun", steps=50, cfg=trained.DEFAULT_CFG, seed0=EVAL_SEED0, boot=200):
    """(figures, samples): class accuracy and Frechet distance (to the held-out split) of per_class x 10
    samples (sample k of class k mod 10, seed seed0 + k), and the floor: as many training images
    against the held-out split."""
    n = per_class * digits.CLASSES
    labels = torch.arange(n) % digits.CLASSES
    t0 = time.perf_counter()
    x = sample(labels, range(seed0, seed0 + n), sampler, steps, cfg)
    seconds = time.perf_counter() - t0
    held, _ = digits.load("heldout")
    train, _ = digits.load("train")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed0))[:n]
    f_held = digit_metrics.features(held)
    acc, acc_ci = digit_metrics.accuracy(x, labels)
    fd, fd_ci = digit_metrics.frechet(digit_metrics.features(x), f_held, boot, seed0)
    floor, floor_ci = digit_metrics.frechet(digit_metrics.features(train[pick]), f_held, boot, seed0)
    row = {"sampler": sampler, "steps": steps, "cfg": cfg, "samples": n, "heldout": len(held),
           "accuracy": acc, "accuracy_ci": acc_ci, "frechet": fd, "frechet_ci": fd_ci,
           "floor": floor, "floor_ci": floor_ci, "sampling_seconds": round(seconds, 1)}
    return row, x


def markdown(rows):
    lines = ["| sampler | steps | cfg | samples | class accuracy (95% CI) | Frechet to held-out (95% bootstrap) | floor: train vs held-out |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['cfg']:g} | {r['samples']} | {r['accuracy']:.3f} "
                     f"({r['accuracy_ci'][0]:.3f}-{r['accuracy_ci'][1]:.3f}) | {r['frechet']:.2f} "
                     f"({r['frechet_ci'][0]:.2f}-{r['frechet_ci'][1]:.2f}) | {r['floor']:.2f} "
                     f"({r['floor_ci'][0]:.2f}-{r['floor_ci'][1]:.2f}) |")
    return "\n".join(lines)


def strip(x):
    """Samples [B, 1, 16, 16] side by side, one white pixel column between them, as a PIL image."""
    sep = torch.ones(1, trained.SHAPE[1], 1, dtype=x.dtype)
    return images.to_image(torch.cat([t for s in x for t in (s, sep)][:-1], 2))


def grid(contenders, nfes, schedule="karras", seeds=range(EVAL_SEED0, EVAL_SEED0 + 5), scale=4):
    """The picture grid: one row per contender, one column per NFE budget, then the reference (a fine
    solve of the network's ODE); each tile the same seeds (classes 0, 1, ...) at cfg DEFAULT_CFG."""
    problem = trained.Digits()
    seeds = list(seeds)
    labels = torch.arange(len(seeds)) % digits.CLASSES
    sigma_min, sigma_max = schedule_range(problem, "ve")
    x_T = start(seeds)
    reference = problem.exact(x_T.double(), sigma_max, 0.0, "ve", labels)
    model = trained.model("ve")
    rows = []
    for c in contenders:
        row = []
        for nfe in nfes:
            sigmas = SCHEDULERS[schedule].fn(max(1, nfe // c.nfe_per_step), sigma_min, sigma_max).float()
            x = c.fn(model, x_T, sigmas, extra_args={"cond": labels}, disable=True, **(c.options or {}))
            row.append(strip(x))
        rows.append(row + [strip(reference)])
    return images.grid(rows, [c.label for c in contenders], [f"NFE {n}" for n in nfes] + ["reference"], scale=scale)


def cmd_digits_eval(args):
    runs = [evaluate(args.per_class, args.sampler, args.steps, cfg, args.seed0, args.boot) for cfg in args.cfg]
    rows = [r for r, _ in runs]
    command = (f"python -m samplerlab digits-eval --sampler {args.sampler} --steps {args.steps} --cfg "
               + " ".join(f"{c:g}" for c in args.cfg) + f" --per-class {args.per_class} --seed0 {args.seed0} --boot {args.boot}"
               + (" --convergence" if args.convergence else ""))
    result = {"command": command, "rows": rows}
    if args.convergence:
        t0 = time.perf_counter()
        result["reference"] = {"steps": [128, 256], "max_rms_difference": convergence(),
                               "seconds": round(time.perf_counter() - t0, 1)}
    print(markdown(rows))
    if "reference" in result:
        print(f"reference convergence (RK4 in lambda, 128 vs 256 steps, 4 seeds): max RMS difference "
              f"{result['reference']['max_rms_difference']:.2e}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        picture = Path(args.out).with_suffix(".png")
        tiles = [[strip(x[k::digits.CLASSES][:10]) for k in range(digits.CLASSES)] for _, x in runs]
        images.grid([list(t) for t in zip(*tiles)], [f"class {k}" for k in range(digits.CLASSES)],
                    [f"cfg {c:g}" for c in args.cfg], scale=3).save(picture)
        print(f"wrote {args.out} and {picture}")


def add_parser(sub):
    p = sub.add_parser("digits-eval", help="class accuracy and Frechet distance of the trained digits model's samples")
    p.add_argument("--sampler", default="heun", choices=sorted(SAMPLERS))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--cfg", nargs="+", type=float, default=[trained.DEFAULT_CFG], help="guidance scales")
    p.add_argument("--per-class", type=int, default=30, help="samples per class (default %(default)s)")
    p.add_argument("--seed0", type=int, default=EVAL_SEED0, help="first noise seed (default %(default)s)")
    p.add_argument("--boot", type=int, default=200, help="bootstrap resamples (default %(default)s)")
    p.add_argument("--convergence", action="store_true", help="also measure the reference solve's convergence")
    p.add_argument("--out", default="docs/digits_eval.json", help="JSON result and a PNG of samples beside it; empty: none")
    p.set_defaults(fn=cmd_digits_eval)
