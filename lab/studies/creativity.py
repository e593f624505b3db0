"""`python -m samplerlab study creativity`: creativity from locality and equivariance (Kamb & Ganguli,
arXiv 2412.20292). Three denoisers of the digits training split sampled from the same seeds, class labels
(label = k mod 10 for the k-th seed) and deterministic sampler/schedule: the empirical (optimal, memorising)
denoiser, the class-conditional ELS machine with the calibrated patch schedule (lab/els.py), and the shipped
trained network (lab/trained.py, conditional, at `cfg`; 1 = no guidance, the denoiser ELS was calibrated on).

Measured, per model, with 95% percentile-bootstrap intervals over seeds:
  - novelty: the RMS pixel distance of each sample to its nearest training image (els.nearest_distance) and
    the Euclidean distance of its classifier features (lab/classifier.py, 128-d) to the nearest training
    image's, beside held-out real digits' own distances (the yardstick of a new digit);
  - r^2 (els.r2) between ELS and network x0 predictions at the states of the network's own trajectory, per
    level sigma_i (and the level where its median is lowest), beside r^2 between the x0 predictions along
    the ELS and network trajectories; where the trajectories part: the level where the paired difference of
    the two reaches half its final value (half_rise, no threshold);
  - the ELS and network samples of a seed against each other: same class by the classifier (Wilson 95%),
    r^2 and RMS distance; class accuracy of every model (Wilson 95%). The network at the shipped guidance
    scale (trained.DEFAULT_CFG) is sampled as well, for novelty and accuracy.
"""
import json
import time

import torch

from .. import digit_metrics, digits, els, images, trained
from ..digits_lab import EVAL_SEED0, start
from ..reference_models import _digits
from ..runner import rms_error, schedule_range
from ...samplers import REGISTRY as SAMPLERS
from ...schedulers import REGISTRY as SCHEDULERS
from . import output

F64 = torch.float64
FULL = {"seeds": 64, "steps": 16, "per_class": None}
QUICK = {"seeds": 4, "steps": 4, "per_class": 6}
SEED0 = 2 * EVAL_SEED0
"""Reported seeds start here: the measures (and the half-rise definition of where the trajectories part)
were chosen on development runs with seeds EVAL_SEED0..EVAL_SEED0 + 63."""


def bootstrap(values, stat, boot=1000, seed=0):
    """(stat(values), its 95% percentile interval (lo, hi)) over `boot` seeded resamples of the rows of
    values [n, ...]; stat maps [n, ...] to a tensor (one interval per entry) and is applied along dim 0."""
    values = torch.as_tensor(values, dtype=F64)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(values), (boot, len(values)), generator=g)
    reps = torch.stack([stat(values[i]) for i in idx])
    lo, hi = reps.quantile(torch.tensor([0.025, 0.975], dtype=F64), dim=0)
    return stat(values), lo, hi


def median(v):
    return v.quantile(0.5, dim=0)


def trajectory(model, x_T, sigmas, sampler):
    """(sample, states [steps, B, ...], x0 predictions [steps, B, ...]) of one deterministic sampling run."""
    xs, ds = [], []

    def record(info):
        xs.append(info["x"].clone())
        ds.append(info["denoised"].clone())

    x = SAMPLERS[sampler].fn(model, x_T, sigmas, callback=record, disable=True)
    return x, torch.stack(xs), torch.stack(ds)


def run(models, x_T, sigmas, sampler="dpmpp_2m"):
    """Samples of every model in `models` ({name: model(x, sigma)}, labels bound; "els" and "network"
    among them) from x_T along `sigmas`, and r^2 [steps, B] of models["els"] against the network's x0
    prediction at the network's own states, and between the ELS and network trajectories' predictions."""
    out = {name: trajectory(model, x_T, sigmas, sampler) for name, model in models.items()}
    _, states, net_d = out["network"]
    els_model = models["els"]
    local = torch.stack([els.r2(els_model(x, s.expand(len(x))), d) for x, s, d in zip(states, sigmas, net_d)])
    along = torch.stack([els.r2(a, b) for a, b in zip(out["els"][2], net_d)])
    return {name: x for name, (x, _, _) in out.items()}, local, along


def half_rise(gap, levels):
    """Per seed: the level (log-linear between grid levels) where gap [steps, B], zero at the first level,
    first reaches half its value at the last level: the midpoint of the trajectories' parting (no threshold;
    a seed whose last gap is <= 0 parts at the first level)."""
    out = torch.empty(gap.shape[1], dtype=F64)
    logs = levels.log()
    for k, g in enumerate(gap.T):
        i = int(torch.nonzero(g >= g[-1] / 2)[0])
        if i == 0 or g[i] == g[i - 1]:
            out[k] = levels[i]
        else:
            w = (g[-1] / 2 - g[i - 1]) / (g[i] - g[i - 1])
            out[k] = torch.exp(logs[i - 1] + w * (logs[i] - logs[i - 1]))
    return out


def nearest(x, pool):
    """Index [B] of each x's nearest image in pool (pixel L2)."""
    return torch.cdist(x.flatten(1).to(F64), pool.flatten(1).to(F64)).argmin(1)


def novelty(x, train, train_features):
    """Per sample: RMS pixel distance and classifier-feature distance to the nearest training image."""
    pixel = els.nearest_distance(x, train)
    feature = torch.cdist(digit_metrics.features(x), train_features).amin(1)
    return pixel, feature


def study(seeds, steps, per_class=None, cfg=1.0, sampler="dpmpp_2m", schedule="karras", boot=1000):
    """The record (JSON-ready), the samples {model: [B, 1, 16, 16]} and the nearest training images of the
    ELS and network samples; per_class: training images per class (None: the whole training split)."""
    train, labels, classes = _digits(per_class)
    held, _ = digits.load("heldout")
    cls = torch.arange(len(seeds)) % classes
    x_T = start(seeds).to(F64)
    s_min, s_max = schedule_range(trained.Digits, "ve")
    sigmas = SCHEDULERS[schedule].fn(steps, s_min, s_max).to(F64)
    net = trained.model("ve")
    models = {"empirical": els.Empirical(train, labels, classes).model("ve", cls),
              "els": els.ELS(train, labels, classes, schedule=els.PatchSchedule.load()).model("ve", cls),
              "network": lambda x, sigma: net(x, sigma, cond=cls, cfg=cfg),
              "network_guided": lambda x, sigma: net(x, sigma, cond=cls, cfg=trained.DEFAULT_CFG)}
    t0, cpu = time.perf_counter(), time.process_time()
    samples, local, along = run(models, x_T, sigmas, sampler)
    sampling, cpu = time.perf_counter() - t0, time.process_time() - cpu
    f_train = digit_metrics.features(train)
    novel = {name: novelty(x, train, f_train) for name, x in samples.items()}
    novel["heldout"] = novelty(held, train, f_train)
    with torch.no_grad():
        pred = {name: digit_metrics.classify(x) for name, x in samples.items()}
    same = int((pred["els"] == pred["network"]).sum())
    levels = sigmas[:-1]
    r2_local = bootstrap(local.T, median, boot)
    r2_along = bootstrap(along.T, median, boot)
    lowest = bootstrap(local.T, lambda v: levels[median(v).argmin()].reshape(1), boot)
    gap = bootstrap((local - along).T, median, boot)
    calibration = json.loads(els.SCHEDULE_FILE.read_text())
    record = {
        "seeds": [int(s) for s in seeds], "labels": cls.tolist(), "steps": steps, "sampler": sampler,
        "schedule": schedule, "sigma_range": [s_min, s_max], "cfg": cfg, "guided_cfg": trained.DEFAULT_CFG, "train_images": len(train),
        "per_class": per_class, "heldout_images": len(held), "boot": boot, "sampling_seconds": round(sampling, 1),
        "sampling_cpu_seconds": round(cpu, 1), "threads": torch.get_num_threads(),
        "novelty": {name: {kind: _summary(v, boot) for kind, v in zip(("pixel_rms", "feature"), pair)}
                    for name, pair in novel.items()},
        "class_accuracy": {name: _wilson(int((p == cls).sum()), len(cls)) for name, p in pred.items()},
        "same_class_els_network": _wilson(same, len(cls)),
        "els_vs_network_samples": {"r2": _summary(els.r2(samples["els"], samples["network"]), boot),
                                   "pixel_rms": _summary(rms_error(samples["els"], samples["network"]), boot)},
        "r2": {"sigmas": levels.tolist(),
               "els_vs_network_at_network_states": _curve(r2_local),
               "els_vs_network_along_own_trajectories": _curve(r2_along),
               "lowest_median_sigma": [float(v) for v in (t[0] for t in lowest)],
               "gap_network_states_minus_own_trajectories": _curve(gap),
               "half_rise_sigma": _summary(half_rise(local - along, levels), boot),
               "per_seed_along_own_trajectories": [[round(float(v), 4) for v in row] for row in along.T],
               "per_seed_at_network_states": [[round(float(v), 4) for v in row] for row in local.T],
               "calibration_heldout": {"sigmas": calibration["sigmas"],
                                       "median_r2": calibration["evaluation"]["median_r2"],
                                       "median_over_levels": calibration["evaluation"]["median_over_levels"],
                                       "command": calibration["command"]}},
        "predicted_class": {name: p.tolist() for name, p in pred.items()},
    }
    near = {name: train[nearest(samples[name], train)] for name in ("els", "network")}
    return record, samples, near


def _summary(v, boot):
    m, lo, hi = bootstrap(v, median, boot)
    return {"median": round(float(m), 4), "ci": [round(float(lo), 4), round(float(hi), 4)],
            "mean": round(float(v.mean()), 4), "values": [round(float(x), 4) for x in v]}


def _wilson(k, n):
    return {"k": k, "n": n, "fraction": round(k / n, 4), "ci": [round(c, 4) for c in digit_metrics.wilson(k, n)]}


def _curve(est):
    m, lo, hi = est
    return {"median": [round(float(v), 4) for v in m], "lo": [round(float(v), 4) for v in lo],
            "hi": [round(float(v), 4) for v in hi]}


def markdown(r):
    def cell(s, f=".3f"):
        return f"{s['median']:{f}} ({s['ci'][0]:{f}}-{s['ci'][1]:{f}})"

    def frac(w):
        return f"{w['k']}/{w['n']} = {w['fraction']:.2f} ({w['ci'][0]:.2f}-{w['ci'][1]:.2f})"

    names = {"empirical": "empirical denoiser", "els": "ELS machine", "network": f"trained network (cfg {r['cfg']:g})",
             "network_guided": f"trained network (cfg {r['guided_cfg']:g}, guided)",
             "heldout": "held-out real digits (yardstick)"}
    lines = [f"{len(r['seeds'])} seeds ({r['seeds'][0]}..{r['seeds'][-1]}, class = k mod 10), {r['sampler']}, "
             f"{r['steps']} {r['schedule']} steps from sigma {r['sigma_range'][1]:g} to {r['sigma_range'][0]:g}, "
             f"{r['train_images']} training images; medians with 95% bootstrap intervals ({r['boot']} resamples).", "",
             "| samples | nearest training image: RMS pixel distance | classifier-feature distance | class accuracy (Wilson 95%) |",
             "| --- | --- | --- | --- |"]
    for key, label in names.items():
        n = r["novelty"][key]
        acc = frac(r["class_accuracy"][key]) if key in r["class_accuracy"] else "-"
        lines.append(f"| {label} | {cell(n['pixel_rms'])} | {cell(n['feature'], '.2f')} | {acc} |")
    pair, r2 = r["els_vs_network_samples"], r["r2"]
    lo, half, cal = r2["lowest_median_sigma"], r2["half_rise_sigma"], r2["calibration_heldout"]
    lines += ["", f"ELS and network (cfg {r['cfg']:g}) samples of the same seed: same class {frac(r['same_class_els_network'])}; "
              f"r2 {cell(pair['r2'])}; RMS pixel distance {cell(pair['pixel_rms'])}.", "",
              "| sigma | " + " | ".join(f"{s:.3g}" for s in r2["sigmas"]) + " |",
              "|---" * (len(r2["sigmas"]) + 1) + "|"]
    for key, label in (("els_vs_network_at_network_states", "r2 ELS vs network at the network's states"),
                       ("els_vs_network_along_own_trajectories", "r2 ELS vs network along their own trajectories"),
                       ("gap_network_states_minus_own_trajectories", "difference (paired per seed)")):
        c = r2[key]
        lines.append(f"| {label} | " + " | ".join(f"{m:.3f} ({a:.3f}-{b:.3f})" for m, a, b in zip(c["median"], c["lo"], c["hi"])) + " |")
    lines += ["", f"Median r2 at the network's states is lowest at sigma {lo[0]:.3g} (bootstrap 95%: {lo[1]:.3g}-{lo[2]:.3g}); "
              + f"the ELS and network trajectories part (the paired difference reaches half its final value) at sigma "
              f"{cell(half, '.3g')} (median over seeds)."
              + f" Calibration (`{cal['command']}`, noised held-out real digits): median r2 over levels {cal['median_over_levels']}."]
    return "\n".join(lines)


def picture(samples, near, seeds, labels, scale=4):
    """Seed rows: empirical | ELS | nearest training image to ELS | network | nearest training image to network."""
    cols = ("empirical", "ELS", "its nearest", "network", "its nearest")
    tiles = [[images.to_image(t[k]) for t in (samples["empirical"], samples["els"], near["els"], samples["network"],
                                               near["network"])] for k in range(len(seeds))]
    return images.grid(tiles, [f"{s} ({c})" for s, c in zip(seeds, labels)], cols, scale=scale, label_w=80)


def chart(r):
    from ..charts import line_chart

    r2 = r["r2"]
    s, cal = r2["sigmas"], r2["calibration_heldout"]
    series = [("network states", s, r2["els_vs_network_at_network_states"]["median"]),
              ("own trajectories", s, r2["els_vs_network_along_own_trajectories"]["median"]),
              ("calibration", cal["sigmas"], cal["median_r2"])]
    return line_chart(series, "median r2 of ELS vs network x0 predictions", "sigma", "r2", xlog=True)


def cmd(args):
    size = QUICK if args.quick else FULL
    seeds = range(args.seed0, args.seed0 + (args.seeds or size["seeds"]))
    t0 = time.perf_counter()
    record, samples, near = study(list(seeds), args.steps or size["steps"], size["per_class"], args.cfg,
                                  boot=200 if args.quick else 1000)
    path = output.folder("creativity", args.out)
    rows = min(len(seeds), 20)
    picture(samples, near, record["seeds"][:rows], record["labels"][:rows]).save(path / "samples.png")
    chart(record).save(path / "r2.png")
    md = output.write(path, "creativity", record, markdown(record), time.perf_counter() - t0)
    print(md.read_text())


def add_study(sub):
    p = sub.add_parser("creativity", help="empirical denoiser vs ELS vs the trained network from the same seeds: "
                                          "novelty, r2 per sigma, same class")
    p.add_argument("--quick", action="store_true", help=f"small form (tests): {QUICK['per_class']} training images per "
                                                        f"class, {QUICK['seeds']} seeds, {QUICK['steps']} steps")
    p.add_argument("--seeds", type=int, default=None, help=f"number of seeds (default {FULL['seeds']})")
    p.add_argument("--seed0", type=int, default=SEED0, help="first seed (default %(default)s)")
    p.add_argument("--steps", type=int, default=None, help=f"sampler steps (default {FULL['steps']})")
    p.add_argument("--cfg", type=float, default=1.0, help="the network's guidance scale (default 1: no guidance)")
    p.add_argument("--out", default=None, help="default docs/studies/creativity")
    p.set_defaults(fn=cmd)
