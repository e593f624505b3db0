"""`python -m samplerlab study pulse`: guidance pulses at the critical level sigma_c of the trained digits network,
against the same pulses centred elsewhere, the guidance interval and constant CFG, at matched guided calls.

One sampler and schedule throughout: dpmpp_2m, 20 steps of the exponential (log-uniform) schedule from 80 to 0.002,
whose levels are h = ln(80 / 0.002) / 19 = 0.558 nats of sigma apart everywhere, so a pulse of a given width in nats
costs the same number of guided calls wherever it is centred. The pulse is the node's gaussian (samplers/guidance.py
Pulse, cut at 3 widths) of width K h / 6, so it spans exactly K = 5 levels; the guidance interval (Kynkaanniemi et
al., arXiv 2404.07724: EDM2-S's (0.28, 5.42] for sigma_data 0.5, here scaled to the network's sigma_data) holds the
same 5 levels. Constant CFG guides all 20.

sigma_c is measured first, on calibration seeds only, by class commitment under re-noise-and-resolve (Biroli et al.,
arXiv 2402.18491; Sclocchi et al. 2025): unconditional samples x0 are noised to x0 + sigma n and re-solved with the
unconditional model; p_keep(sigma) is the share that keeps its class (lab/classifier.py), falling from 1 to the
chance level c = sum_k f_k^2 (f_k the class shares); sigma_c is where it crosses (1 + c) / 2 (log-linear
interpolation). For comparison: the same crossing of the classifier on the x0 prediction along the unconditional
trajectories (zero extra calls), and the pack's online JVP detector (samplers/critical.py).

Every setting is sampled on the same evaluation seeds (disjoint from the calibration seeds), 100 per class; class
accuracy (Wilson), Frechet distance to the held-out digits (digit_metrics.distance) and the within-class feature
variance relative to the held-out digits' (mean over classes of tr Cov), with the bias-shifted bootstrap of
digit_metrics.frechet. Two regimes: base 1 (the node's default, no guidance outside the pulse), compared at the
accuracy constant CFG reaches at given scales, and base 0 (the unconditional model outside the pulse, so the pulse
alone carries the class), compared at fixed accuracies; values are interpolated along each family's curve and
compared with a paired bootstrap over the seeds and the held-out digits.
"""
import math
import time
from dataclasses import dataclass

import torch

from ...samplers import REGISTRY as SAMPLERS
from ...samplers.critical import estimate_sigma_c
from ...samplers.guidance import GAUSS_CUT, Interval, Pulse, combine, weight
from ...schedulers import REGISTRY as SCHEDULERS
from .. import classifier, digit_metrics, digits, digits_lab, trained
from ..digit_metrics import classify
from ..metrics import bias_shifted_ci
from ..runner import schedule_range
from . import output

SAMPLER, STEPS, SCHEDULE = "dpmpp_2m", 20, "exponential"
GUIDED_LEVELS = 5
"""K: levels a pulse or the interval guides (of STEPS)."""
PAPER_INTERVAL, PAPER_SIGMA_DATA = (0.28, 5.42), 0.5
OFFSET = 2.0
"""Earlier / later pulses: centred OFFSET nats of sigma above / below sigma_c (their supports, 6 widths = 2.8 nats
wide, then overlap the sigma_c pulse's only in their tails)."""
CAL_SEED0 = 5_000
"""sigma_c is measured on seeds CAL_SEED0.. (and re-noised with seeds from CAL_NOISE0); evaluation on EVAL_SEED0.."""
CAL_NOISE0 = 7_000
EVAL_SEED0 = digits_lab.EVAL_SEED0
RANDOM_CENTRE_SEED = 900_000
"""Random-centre pulses: sample k's centre is drawn from its own generator seeded RANDOM_CENTRE_SEED + its seed."""
CONSTANT = (1.25, 1.5, 2.0, 3.0)
PEAKS = (1.5, 3.0, 6.0)
PEAKS_BASE0 = (1.0, 2.0, 4.0, 8.0)
MATCH = (1.25, 1.5)
"""Base 1: families are compared at the accuracy constant CFG reaches at these scales."""
MATCH_BASE0 = (0.5, 0.9)
"""Base 0: families are compared at these accuracies."""
PULSE_FAMILIES = ("interval", "pulse at sigma_c", "earlier", "later", "random centre")
LEVELS = 15


def sigmas(steps=STEPS, sigma_max=None):
    """The study's schedule (float32, ending in 0), from sigma_max (default: the network's) down to its sigma_min."""
    lo, hi = schedule_range(trained.Digits, "ve")
    return SCHEDULERS[SCHEDULE].fn(steps, lo, hi if sigma_max is None else sigma_max).float()


def spacing():
    """h: nats of sigma between neighbouring levels of the study's schedule."""
    lo, hi = schedule_range(trained.Digits, "ve")
    return math.log(hi / lo) / (STEPS - 1)


def pulse_width(k=GUIDED_LEVELS):
    """The gaussian's width (nats) whose support, 2 GAUSS_CUT widths, is k level spacings: exactly k guided levels."""
    return k * spacing() / (2 * GAUSS_CUT)


def paper_interval():
    """Kynkaanniemi et al.'s EDM2-S interval (sigma_lo, sigma_hi] in units of the network's sigma_data."""
    scale = trained.network().sigma_data / PAPER_SIGMA_DATA
    return PAPER_INTERVAL[0] * scale, PAPER_INTERVAL[1] * scale


def denoisers(labels):
    """(D(. | labels), D(. | null)): k-diffusion-style VE denoisers model(x, sigma) of the shipped network."""
    net = trained.network()

    def make(lab):
        def denoise(x, sigma, **extra_args):
            b = x.shape[0]
            return net(x, x.new_ones([b]), sigma.reshape(-1).expand(b).to(x.dtype), lab)
        return denoise

    return make(labels), make(trained.class_labels(None, len(labels)))


class PerSampleCFG:
    """D = D_u + w_b(sigma) (D_c - D_u), w_b = weight(schedule, sigma, centres) per sample: samplers/guidance.py's
    ScheduledCFG for a fixed schedule, with one pulse centre per sample where `centres` [B] is given. `calls` [B]
    counts the model calls each sample needs: D_c where w_b != 0, D_u where w_b != 1."""

    def __init__(self, cond, uncond, schedule, centres=None):
        self.cond, self.uncond, self.schedule, self.centres = cond, uncond, schedule, centres
        self.calls = 0

    def __call__(self, x, sigma, **extra_args):
        w = weight(self.schedule, float(sigma.reshape(-1)[0]), self.centres).expand(x.shape[0])
        one, zero = w == 1, w == 0
        self.calls = self.calls + (~zero).to(torch.int64) + (~one).to(torch.int64)
        d_c = self.cond(x, sigma) if not bool(zero.all()) else None
        d_u = self.uncond(x, sigma) if not bool(one.all()) else None
        if d_c is None:
            return d_u
        return combine(d_c, d_u, w)


def sample(schedule, labels, seeds, centres=None):
    """(x0 [B, 1, 16, 16], model calls per sample [B]) of classes `labels` from the seeds' noise under `schedule`."""
    cond, uncond = denoisers(labels)
    model = PerSampleCFG(cond, uncond, schedule, centres)
    with torch.no_grad():
        x0 = SAMPLERS[SAMPLER].fn(model, digits_lab.start(seeds), sigmas(), disable=True)
    return x0, model.calls + torch.zeros(len(labels), dtype=torch.int64)


def crossing(levels, p, target):
    """The level where p (falling with increasing level) first crosses `target`, interpolated in log level; NaN
    where it does not."""
    for i in range(len(levels) - 1):
        a, b = p[i], p[i + 1]
        if a >= target > b:
            t = (a - target) / (a - b)
            return math.exp(math.log(levels[i]) + t * (math.log(levels[i + 1]) - math.log(levels[i])))
    return math.nan


def commitment(seeds, levels):
    """Class commitment of the unconditional network on calibration `seeds`: unconditional samples (STEPS steps) and
    the classes of their x0 predictions along the way; each re-noised at every level of `levels` (ascending) and
    re-solved on the schedule's spacing. A dict: levels, p_keep with Wilson intervals, chance, sigma_c by
    re-noise-and-resolve and by the x0 prediction, and the JVP detector's median."""
    seeds = list(seeds)
    labels = torch.zeros(len(seeds), dtype=torch.int64)
    _, uncond = denoisers(labels)
    preds = []
    with torch.no_grad():
        x0 = SAMPLERS[SAMPLER].fn(uncond, digits_lab.start(seeds), sigmas(), disable=True,
                                  callback=lambda info: preds.append((float(info["sigma"]), classify(info["denoised"]))))
    final = classify(x0)
    shares = torch.bincount(final, minlength=digits.CLASSES).double() / len(seeds)
    chance = float((shares ** 2).sum())
    target = (1 + chance) / 2
    keep, keep_ci = [], []
    for level in levels:
        n = torch.stack([torch.randn(trained.SHAPE, generator=torch.Generator().manual_seed(CAL_NOISE0 + s)) for s in seeds])
        steps = max(2, math.ceil(math.log(level / schedule_range(trained.Digits, "ve")[0]) / spacing()) + 1)
        with torch.no_grad():
            x1 = SAMPLERS[SAMPLER].fn(uncond, x0 + level * n, sigmas(steps, level), disable=True)
        k = int((classify(x1) == final).sum())
        keep.append(k / len(seeds))
        keep_ci.append(digit_metrics.wilson(k, len(seeds)))
    along = sorted(preds)
    pred_levels = [s for s, _ in along if s > 0]
    pred_keep = [float((c == final).double().mean()) for s, c in along if s > 0]
    jvp = estimate_sigma_c(uncond, digits_lab.start(seeds), sigmas(), "ve", probes=4)
    return {"seeds": [seeds[0], seeds[-1]], "levels": list(levels), "p_keep": keep, "p_keep_ci": keep_ci,
            "chance": chance, "target": target, "sigma_c": crossing(list(levels), keep, target),
            "x0_prediction": {"levels": pred_levels, "p_same": pred_keep,
                              "sigma_c": crossing(pred_levels, pred_keep, target)},
            "jvp_median": float(jvp.median())}


@dataclass
class Setting:
    family: str
    peak: float
    schedule: object
    random: bool = False

    @property
    def label(self):
        return f"{self.family} {self.peak:g}"


def random_centres(seeds, width):
    """Per-sample centres, log-uniform over the levels where the whole pulse lies inside the schedule."""
    lo, hi = schedule_range(trained.Digits, "ve")
    a, b = math.log(lo) + GAUSS_CUT * width, math.log(hi) - GAUSS_CUT * width
    u = torch.stack([torch.rand([], generator=torch.Generator().manual_seed(RANDOM_CENTRE_SEED + int(s)), dtype=torch.float64)
                     for s in seeds])
    return (a + (b - a) * u).exp()


def family(name, base):
    return name if base == 1 else f"{name}, base {base:g}"


def settings(sigma_c, constant=CONSTANT, peaks=PEAKS, peaks0=PEAKS_BASE0):
    """Constant CFG at 0 (unconditional), 1 and `constant`; at base 1 (`peaks`) and base 0 (`peaks0`): the interval
    and gaussian pulses at sigma_c, earlier, later and at random centres."""
    width = pulse_width()
    lo, hi = paper_interval()
    out = [Setting("constant", w, Interval(w, w)) for w in (0.0, 1.0) + tuple(constant)]
    for base, ps in ((1.0, peaks), (0.0, peaks0)):
        for w in ps:
            out += [Setting(family("interval", base), w, Interval(w, base, lo, hi)),
                    Setting(family("pulse at sigma_c", base), w, Pulse("gaussian", w, base, width, sigma_c)),
                    Setting(family("earlier", base), w, Pulse("gaussian", w, base, width, sigma_c * math.exp(OFFSET))),
                    Setting(family("later", base), w, Pulse("gaussian", w, base, width, sigma_c * math.exp(-OFFSET))),
                    Setting(family("random centre", base), w, Pulse("gaussian", w, base, width, None), random=True)]
    return out


def groups(constant_match=MATCH, accuracy_match=MATCH_BASE0):
    """The two comparisons: base 1 (the node's default: guidance only inside the pulse) against constant CFG,
    matched at constant CFG's accuracy at the scales `constant_match`; base 0 (the pulse alone carries the class),
    from the unconditional model, matched at the fixed accuracies `accuracy_match`."""
    return [{"base": 1.0, "start": "constant 1", "families": ("constant",) + PULSE_FAMILIES,
             "reference": "pulse at sigma_c", "targets": [(f"constant {w:g}", None) for w in constant_match]},
            {"base": 0.0, "start": "constant 0", "families": tuple(family(f, 0.0) for f in PULSE_FAMILIES),
             "reference": family("pulse at sigma_c", 0.0), "targets": [(f"accuracy {a:g}", a) for a in accuracy_match]}]


def within_variance(f, labels):
    """tr Cov of the features f [N, d] of each class [10] (classes with < 2 samples: NaN)."""
    out = torch.full([digits.CLASSES], math.nan, dtype=torch.float64)
    for k in range(digits.CLASSES):
        mine = f[labels == k]
        if len(mine) >= 2:
            out[k] = mine.var(0).sum()
    return out


def variance_ratio(f, labels, f_real, y_real):
    """Mean over classes of tr Cov(features of class k) / the real digits' of class k."""
    return float((within_variance(f, labels) / within_variance(f_real, y_real)).nanmean())


def shifted_interval(reps, value):
    """The bootstrap percentile 95% interval of `value`, shifted by the bootstrap bias mean(reps) - value (as
    digit_metrics.frechet); NaN replicates (a matched accuracy not reached) are left out."""
    r = [v for v in reps if math.isfinite(v)]
    if len(r) < 2 or not math.isfinite(value):
        return math.nan, math.nan
    return bias_shifted_ci(r, value)


@dataclass
class Measured:
    """One setting's samples judged: per-sample correctness and features, and the model calls per sample."""

    setting: Setting
    correct: torch.Tensor
    features: torch.Tensor
    calls: torch.Tensor
    seconds: float


def measure(setting, labels, seeds):
    t0 = time.perf_counter()
    centres = random_centres(seeds, setting.schedule.width) if setting.random else None
    x0, calls = sample(setting.schedule, labels, seeds, centres)
    f = digit_metrics.features(x0)
    with torch.no_grad():
        correct = classifier.network().head(f.float()).argmax(1) == labels
    return Measured(setting, correct, f, calls, time.perf_counter() - t0)


def curve(rows, family, start):
    """The family's settings by peak, after the group's common start (the setting labelled `start`)."""
    first = [m for m in rows if m.setting.label == start]
    return first + sorted((m for m in rows if m.setting.family == family and m.setting.peak > first[0].setting.peak),
                          key=lambda m: m.setting.peak)


def at_accuracy(acc, div, target):
    """div interpolated (linearly in accuracy) where the curve (acc, div) first reaches `target`; NaN if never."""
    if acc[0] >= target:
        return div[0]
    for i in range(1, len(acc)):
        if acc[i] >= target:
            t = (target - acc[i - 1]) / (acc[i] - acc[i - 1])
            return div[i - 1] + t * (div[i] - div[i - 1])
    return math.nan


def statistics(rows, labels, f_held, y_held, idx=None, idx_held=None):
    """{label: (accuracy, variance ratio, Frechet distance)} on the samples idx and held-out digits idx_held (a
    bootstrap resample; None: all)."""
    idx = torch.arange(len(labels)) if idx is None else idx
    idx_held = torch.arange(len(y_held)) if idx_held is None else idx_held
    fh, yh = f_held[idx_held], y_held[idx_held]
    out = {}
    for m in rows:
        f = m.features[idx]
        out[m.setting.label] = (float(m.correct[idx].double().mean()), variance_ratio(f, labels[idx], fh, yh),
                                digit_metrics.distance(f, fh))
    return out


def target_accuracy(stats, target):
    """A matching target: ("constant w", None) is constant CFG's accuracy at w, (name, a) the fixed accuracy a."""
    name, value = target
    return stats[name][0] if value is None else value


def matched(stats, rows, group):
    """{(target, family): (variance ratio, Frechet)} of each of the group's families at each target accuracy."""
    out = {}
    for target in group["targets"]:
        a = target_accuracy(stats, target)
        for fam in group["families"]:
            pts = [stats[m.setting.label] for m in curve(rows, fam, group["start"])]
            acc = [p[0] for p in pts]
            out[(target[0], fam)] = tuple(at_accuracy(acc, [p[j] for p in pts], a) for j in (1, 2))
    return out


def bootstrap(rows, labels, f_held, y_held, groups, boot, seed):
    """Paired bootstrap over the evaluation seeds (one resample serves every setting, all drawn from the same seeds)
    and the held-out digits: (statistics(), per-setting intervals {label: [variance ratio (lo, hi), Frechet (lo, hi)]}
    shifted by the bootstrap bias as in digit_metrics.frechet, matched-accuracy rows: each family's variance ratio
    and Frechet distance at each target accuracy of its group, and its difference from the group's pulse at
    sigma_c, with intervals)."""
    stats = statistics(rows, labels, f_held, y_held)
    points = [matched(stats, rows, group) for group in groups]
    g = torch.Generator().manual_seed(seed)
    stat_reps, reps = [], []
    for _ in range(boot):
        idx = torch.randint(len(labels), (len(labels),), generator=g)
        idx_held = torch.randint(len(y_held), (len(y_held),), generator=g)
        stat_reps.append(statistics(rows, labels, f_held, y_held, idx, idx_held))
        reps.append([matched(stat_reps[-1], rows, group) for group in groups])
    cis = {k: [shifted_interval([r[k][j] for r in stat_reps], v[j]) for j in (1, 2)] for k, v in stats.items()}
    out = []
    for gi, (group, point) in enumerate(zip(groups, points)):
        for (target, fam), values in point.items():
            ref, key = point[(target, group["reference"])], (target, fam)
            row = {"base": group["base"], "target": target, "accuracy": target_accuracy(stats, next(t for t in group["targets"] if t[0] == target)),
                   "family": fam, "reached": sum(math.isfinite(r[gi][key][0]) for r in reps) / boot}
            for j, name in ((0, "variance_ratio"), (1, "frechet")):
                diff = values[j] - ref[j]
                row[name] = values[j]
                row[name + "_ci"] = shifted_interval([r[gi][key][j] for r in reps], values[j])
                row[name + "_minus_pulse"] = diff
                row[name + "_minus_pulse_ci"] = shifted_interval(
                    [r[gi][key][j] - r[gi][(target, group["reference"])][j] for r in reps], diff)
            out.append(row)
    return stats, cis, out


def finite(value):
    """JSON-ready: NaN -> None, tuples -> lists, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def verdict(row, metric):
    """'pulse better' / 'pulse worse' / 'no difference' for `row`'s family against the pulse at sigma_c, by the 95%
    interval of (family - pulse) in `metric` (variance ratio: higher is more diverse; Frechet: lower is closer)."""
    lo, hi = row[metric + "_minus_pulse_ci"]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "not reached"
    better, worse = (lo > 0, hi < 0) if metric == "frechet" else (hi < 0, lo > 0)
    return "pulse better" if better else "pulse worse" if worse else "no difference"


def run(per_class, cal_seeds, levels, constant=CONSTANT, peaks=PEAKS, peaks0=PEAKS_BASE0, match=MATCH,
        match0=MATCH_BASE0, boot=200, progress=print):
    """The whole study: sigma_c on calibration seeds, then every setting on the evaluation seeds. A JSON-ready dict."""
    grid = [math.exp(math.log(0.05) + k * (math.log(40.0) - math.log(0.05)) / (levels - 1)) for k in range(levels)]
    t0 = time.perf_counter()
    critical = commitment(range(CAL_SEED0, CAL_SEED0 + cal_seeds), grid)
    critical["seconds"] = time.perf_counter() - t0
    sigma_c = critical["sigma_c"]
    if not math.isfinite(sigma_c):
        raise ValueError(f"levels: p_keep never crosses {critical['target']:.3f} over {grid[0]:.3g}..{grid[-1]:.3g}")
    progress(f"sigma_c = {sigma_c:.3f} (re-noise and resolve, {cal_seeds} calibration seeds, {critical['seconds']:.0f} s)")
    n = per_class * digits.CLASSES
    labels = torch.arange(n) % digits.CLASSES
    seeds = list(range(EVAL_SEED0, EVAL_SEED0 + n))
    held, y_held = digits.load("heldout")
    f_held = digit_metrics.features(held)
    rows = []
    for setting in settings(sigma_c, constant, peaks, peaks0):
        rows.append(measure(setting, labels, seeds))
        progress(f"{setting.label}: accuracy {float(rows[-1].correct.double().mean()):.3f}, "
                 f"{float(rows[-1].calls.double().mean()):.2f} calls per sample, {rows[-1].seconds:.1f} s")
    t1 = time.perf_counter()
    stats, cis, matches = bootstrap(rows, labels, f_held, y_held, groups(match, match0), boot, EVAL_SEED0)
    progress(f"bootstrap ({boot} resamples): {time.perf_counter() - t1:.0f} s")
    table = []
    for m in rows:
        k, (_, var, fd) = int(m.correct.sum()), stats[m.setting.label]
        table.append({"setting": m.setting.label, "family": m.setting.family, "peak": m.setting.peak,
                      "accuracy": k / n, "accuracy_ci": digit_metrics.wilson(k, n),
                      "variance_ratio": var, "variance_ratio_ci": cis[m.setting.label][0],
                      "frechet": fd, "frechet_ci": cis[m.setting.label][1],
                      "calls": float(m.calls.double().mean()), "calls_range": [int(m.calls.min()), int(m.calls.max())],
                      "seconds": m.seconds})
    for r in matches:
        r["variance_verdict"], r["frechet_verdict"] = verdict(r, "variance_ratio"), verdict(r, "frechet")
    return finite({"sampler": SAMPLER, "steps": STEPS, "schedule": SCHEDULE, "samples": n, "heldout": len(y_held),
                   "calibration_seeds": [CAL_SEED0, CAL_SEED0 + cal_seeds - 1], "evaluation_seeds": [seeds[0], seeds[-1]],
                   "critical": critical, "pulse": {"shape": "gaussian", "width": pulse_width(), "guided_levels": GUIDED_LEVELS,
                                                   "offset": OFFSET, "spacing": spacing()},
                   "interval": list(paper_interval()), "boot": boot, "settings": table, "matched": matches})


def fmt_ci(v, ci, places=3):
    if v is None:
        return "n/a"
    lo, hi = ci
    return f"{v:.{places}f} ({lo:.{places}f} to {hi:.{places}f})" if lo is not None else f"{v:.{places}f}"


def markdown(r):
    c, p = r["critical"], r["pulse"]
    lo, hi = r["interval"]
    lines = [f"### Critical level of the unconditional network (calibration seeds {c['seeds'][0]}..{c['seeds'][1]})", "",
             "| measure | sigma_c (VE) |", "|---|---|",
             f"| class kept after re-noise and resolve crosses (1 + chance) / 2 = {c['target']:.3f} (used) | {c['sigma_c']:.3f} |",
             f"| classifier on the x0 prediction agrees with the final class, same crossing | {c['x0_prediction']['sigma_c']:.3f} |",
             f"| online JVP detector (samplers/critical.py, 4 probes), median | {c['jvp_median']:.3f} |", "",
             f"{r['sampler']}, {r['steps']} steps of the {r['schedule']} schedule (levels {p['spacing']:.3f} nats apart); "
             f"{r['samples']} samples per setting, seeds {r['evaluation_seeds'][0]}..{r['evaluation_seeds'][1]}, class k mod 10; "
             f"pulses: gaussian of width {p['width']:.3f} nats ({p['guided_levels']} guided levels), centred at sigma_c, "
             f"sigma_c e^{p['offset']:g} (earlier), sigma_c e^-{p['offset']:g} (later) or log-uniform per sample (random "
             f"centre); interval: ({lo:.3f}, {hi:.3f}]. 95% intervals: Wilson (accuracy), bootstrap (the rest).", "",
             "| setting | model calls per sample | class accuracy | within-class variance / held-out's | Frechet to held-out |",
             "|---|---|---|---|---|"]
    for s in r["settings"]:
        lines.append(f"| {s['setting']} | {s['calls']:.2f} | {fmt_ci(s['accuracy'], s['accuracy_ci'])} | "
                     f"{fmt_ci(s['variance_ratio'], s['variance_ratio_ci'])} | {fmt_ci(s['frechet'], s['frechet_ci'], 1)} |")
    lines += ["", "### At matched accuracy (paired bootstrap; family minus the pulse at sigma_c of the same base)", "",
              "| base | matched to (accuracy) | family | variance ratio | minus pulse at sigma_c | Frechet | minus pulse at sigma_c | reached | verdict (variance, Frechet) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for m in r["matched"]:
        lines.append(f"| {m['base']:g} | {m['target']} ({m['accuracy']:.3f}) | {m['family']} | "
                     f"{fmt_ci(m['variance_ratio'], m['variance_ratio_ci'])} | "
                     f"{fmt_ci(m['variance_ratio_minus_pulse'], m['variance_ratio_minus_pulse_ci'])} | "
                     f"{fmt_ci(m['frechet'], m['frechet_ci'], 1)} | {fmt_ci(m['frechet_minus_pulse'], m['frechet_minus_pulse_ci'], 1)} | "
                     f"{100 * m['reached']:.0f}% | {m['variance_verdict']}, {m['frechet_verdict']} |")
    return "\n".join(lines) + "\n"


def plot(r, path):
    """The accuracy-diversity frontiers, one curve per family from its group's common start (Wilson bars on accuracy,
    bootstrap bars on diversity): base 1 (top), base 0 (bottom); and the commitment curve p_keep(sigma) with the
    measured sigma_c and the pulse centres."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7.4))
    by_label = {s["setting"]: s for s in r["settings"]}
    for row, group in enumerate(groups([], [])):
        for fam in group["families"]:
            start = by_label[group["start"]]
            pts = [start] + sorted((s for s in r["settings"] if s["family"] == fam and s["peak"] > start["peak"]),
                                   key=lambda s: s["peak"])
            for ax, key in ((axes[row, 0], "variance_ratio"), (axes[row, 1], "frechet")):
                x, y = [s[key] for s in pts], [s["accuracy"] for s in pts]
                xerr = [[s[key] - s[key + "_ci"][0] for s in pts], [s[key + "_ci"][1] - s[key] for s in pts]]
                yerr = [[s["accuracy"] - s["accuracy_ci"][0] for s in pts], [s["accuracy_ci"][1] - s["accuracy"] for s in pts]]
                ax.errorbar(x, y, xerr=xerr, yerr=yerr, marker="o", ms=3, lw=1, elinewidth=0.5, capsize=0, label=fam)
                for s in pts[1:]:
                    ax.annotate(f"{s['peak']:g}", (s[key], s["accuracy"]), fontsize=6, alpha=0.7)
        axes[row, 0].set_xlabel("within-class feature variance / held-out digits'")
        axes[row, 1].set_xlabel("Frechet distance to held-out digits")
        for ax in axes[row, :2]:
            ax.set_ylabel(f"class accuracy (base {group['base']:g})")
            ax.grid(True, alpha=0.3)
        axes[row, 0].legend(fontsize=7)
    c = r["critical"]
    ax = axes[0, 2]
    ax.fill_between(c["levels"], [v[0] for v in c["p_keep_ci"]], [v[1] for v in c["p_keep_ci"]], alpha=0.2)
    ax.plot(c["levels"], c["p_keep"], marker="o", ms=3, label="class kept, re-noise and resolve")
    ax.plot(c["x0_prediction"]["levels"], c["x0_prediction"]["p_same"], marker=".", ms=3, label="x0 prediction's class = final")
    ax.axhline(c["target"], color="k", lw=0.5)
    off = math.exp(r["pulse"]["offset"])
    for v, name, style in ((c["sigma_c"], "sigma_c", "-"), (c["sigma_c"] * off, "earlier", ":"),
                           (c["sigma_c"] / off, "later", ":"), (c["jvp_median"], "JVP detector", "--")):
        ax.axvline(v, color="k" if name == "sigma_c" else "gray", ls=style, lw=0.8)
        ax.annotate(name, (v, 0.02), fontsize=6, rotation=90)
    ax.set_xscale("log")
    ax.set_xlabel("sigma (VE)")
    ax.set_ylabel("probability")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    axes[1, 2].axis("off")
    fig.suptitle(f"trained digits network, {r['sampler']} {r['steps']} {r['schedule']} steps, {r['samples']} samples per setting",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def say(text):
    print(text, flush=True)


def cmd(args):
    out = output.folder("pulse", args.out)
    t0 = time.perf_counter()
    if args.quick:
        r = run(per_class=3, cal_seeds=16, levels=5, constant=(2.0,), peaks=(6.0,), peaks0=(4.0,), match=(2.0,),
                match0=(0.5,), boot=8, progress=say)
    else:
        r = run(per_class=args.per_class, cal_seeds=args.cal_seeds, levels=LEVELS, boot=args.boot, progress=say)
    seconds = time.perf_counter() - t0
    plot(r, out / "pulse_frontier.png")
    text = markdown(r)
    output.write(out, "pulse", r, text, seconds)
    print(text)
    print(f"wrote {out}/pulse.md, pulse.json, pulse_frontier.png in {seconds:.0f} s")


def add_study(sub):
    p = sub.add_parser("pulse", help="guidance pulses at the measured sigma_c vs elsewhere, the interval and constant CFG")
    p.add_argument("--quick", action="store_true", help="tiny: 30 samples, one scale per family (the tests' form)")
    p.add_argument("--per-class", type=int, default=100, help="evaluation samples per class (default %(default)s)")
    p.add_argument("--cal-seeds", type=int, default=200, help="calibration seeds for sigma_c (default %(default)s)")
    p.add_argument("--boot", type=int, default=200, help="bootstrap resamples (default %(default)s)")
    p.add_argument("--out", default=None, help="default docs/studies/pulse")
    p.set_defaults(fn=cmd)
