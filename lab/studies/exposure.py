"""`python -m samplerlab study exposure`: exposure bias on the trained digits network, and whether the pack's
noise-level tracking or epsilon scaling corrects it.

Exposure bias (Ning et al. 2024, "Elucidating the exposure bias in diffusion models", ICLR, arXiv
2308.15321): a sampler's states x_i are not distributed as the training inputs x0 + sigma_i n, because
every earlier step carried the network's (and the solver's) errors, so the network is queried off its
training distribution. Measured here without any simulated perturbation:

1. Mismatch. At every model call of a sampler (tracking off), the noise level the network's own output
   implies: Ning et al.'s prediction norm |eps| = |x - D(x; sigma)| / (sigma sqrt(N)), and the Stein
   estimate sigma_hat / sigma of samplers/tracking.py (<x - D, x - mean(x)> / N = sigma^2 for the exact
   denoiser). The same two numbers on the forward process (held-out digits + sigma n, the training
   distribution) at the same sigma are the reference: their ratio is 1 where there is no exposure bias.
   The same along a fine Heun solve of the network's own ODE (REFERENCE_NFE calls) separates the network's
   errors (what remains there) from the coarse solver's.
2. Correction, from identical noise: each sampler at 10, 15 and 20 calls with tracking off, with
   `track = stein` (the pack's tracker, defaults) and with epsilon scaling (`track = epsilon`,
   D' = x - (x - D) / lambda, i.e. eps / lambda; one constant lambda per sampler and call count, chosen on
   calibration seeds 0.. by the Frechet distance to the training split, reported on evaluation seeds from
   digits_lab.EVAL_SEED0 against the held-out split). Frechet distance (lab/digit_metrics.py, classifier
   features) and class accuracy, and their ratios to tracking off with paired bootstrap intervals.
"""
import functools
import math
import time

import torch

from ...samplers import REGISTRY as SAMPLERS
from ...samplers.tracking import level_estimate
from .. import charts, digit_metrics, digits, digits_lab, trained
from ..metrics import mean_ci_t, ratio_boot
from ..runner import CountingModel
from . import output

SAMPLER_NAMES = ("euler", "heun", "dpmpp_2m")
NFES = (10, 15, 20)
SCALES = (1.0025, 1.005, 1.01, 1.02, 1.04)
"""The epsilon-scaling grid searched on calibration seeds (Ning et al. report lambda of 1.001-1.02 for 10-100 steps)."""
REFERENCE_NFE = 99
"""Calls of the fine Heun solve (50 steps) whose states carry the network's errors but almost no solver error."""
CAL_SEED0 = 0
CHUNK = 500


def steps_for(sampler, nfe):
    """Steps of the Karras schedule that spend at most `nfe` calls: nfe for one-call samplers; (nfe + 1) // 2 for
    Heun (2 steps - 1 calls: the last step is Euler)."""
    per = SAMPLERS[sampler].nfe_per_step
    return nfe if per == 1 else (nfe + 1) // per


def draw(sampler, nfe, cfg, seeds, tracking=None):
    """(samples [n, 1, 16, 16], labels [n] (sample k of class k mod 10), model calls per sample), from
    digits_lab.start(seeds), in chunks of CHUNK (each sample depends on its own seed only)."""
    seeds = list(seeds)
    labels = torch.arange(len(seeds)) % digits.CLASSES
    counter = []

    def wrap(model):
        counter.append(CountingModel(model))
        return counter[-1]

    xs = [digits_lab.sample(labels[k:k + CHUNK], seeds[k:k + CHUNK], sampler, steps_for(sampler, nfe), cfg,
                            tracking=tracking, wrap=wrap) for k in range(0, len(seeds), CHUNK)]
    return torch.cat(xs), labels, counter[0].calls


class Recorder:
    """A model wrapper that keeps, per call, the nominal level and per sample |eps| = |x - D| / (sigma sqrt(N))
    and the Stein level ratio sigma_hat / sigma (samplers/tracking.level_estimate)."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __call__(self, x, sigma, **extra_args):
        d = self.model(x, sigma, **extra_args)
        s = float(torch.as_tensor(sigma).reshape(-1)[0])
        self.calls.append((s, *implied(x, d, s)))
        return d


def implied(x, d, s):
    """(|eps| per sample, Stein sigma_hat / sigma per sample) of a VE state x at level s with x0 prediction d."""
    eps = level_estimate(x, d, "residual").sqrt() / s
    stein = level_estimate(x, d, "stein").clamp_min(0).sqrt() / s
    return eps, stein


@functools.lru_cache(maxsize=1024)
def forward(s, cfg, seed=0):
    """(|eps|, Stein ratio) per held-out digit on the forward process at level s: every held-out digit + s n
    (one seeded n per digit, the same at every level), the network asked with the digit's own label: what
    the network sees in training."""
    x0, y = digits.load("heldout")
    x = x0 + s * torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    return implied(x, trained.model("ve")(x, torch.full((len(x),), s), cond=y, cfg=cfg), s)


def _ratio_ci(a, b):
    """mean(a) / mean(b) of independent samples and a 95% interval from the t-intervals (delta method on log)."""
    ma, ha = mean_ci_t(a)
    mb, hb = mean_ci_t(b)
    r = ma / mb
    half = 1.96 * math.hypot(ha / 1.96 / ma, hb / 1.96 / mb) if ma > 0 and mb > 0 else math.inf
    return r, (r * math.exp(-half), r * math.exp(half))


def mismatch(sampler, nfe, cfg, n):
    """Rows, one per model call of `sampler` at `nfe` calls (tracking off, n evaluation seeds): the level and
    the sampler's |eps| and Stein ratio against the forward process's, as ratios with 95% intervals."""
    seeds = range(digits_lab.EVAL_SEED0, digits_lab.EVAL_SEED0 + n)
    labels = torch.arange(n) % digits.CLASSES
    rec = []
    digits_lab.sample(labels, seeds, sampler, steps_for(sampler, nfe), cfg,
                      wrap=lambda m: rec.append(Recorder(m)) or rec[-1])
    calls = rec[0].calls
    rows = []
    for k, (s, eps, stein) in enumerate(calls):
        f_eps, f_stein = forward(s, cfg)
        r_eps, ci_eps = _ratio_ci(eps, f_eps)
        r_st, ci_st = _ratio_ci(stein, f_stein)
        rows.append(dict(sampler=sampler, nfe=nfe, call=k, sigma=s, eps=float(eps.mean()), eps_forward=float(f_eps.mean()),
                         eps_ratio=r_eps, eps_ratio_ci=ci_eps, stein=float(stein.mean()),
                         stein_forward=float(f_stein.mean()), stein_ratio=r_st, stein_ratio_ci=ci_st))
    return rows


def calibrate(sampler, nfe, cfg, per_class, scales=SCALES):
    """(chosen lambda, {lambda: Frechet distance to the training split}) on calibration seeds CAL_SEED0..: the
    best of `scales` (lambda > 1, so epsilon scaling is always tested at its best constant); lambda = 1 (off)
    is measured too, for reference."""
    n = per_class * digits.CLASSES
    train, _ = digits.load("train")
    f_train = digit_metrics.features(train)
    seeds = range(CAL_SEED0, CAL_SEED0 + n)
    fds = {}
    for lam in (1.0, *scales):
        x, _, _ = draw(sampler, nfe, cfg, seeds, None if lam == 1.0 else {"track": "epsilon", "eps_scale": lam})
        fds[lam] = digit_metrics.distance(digit_metrics.features(x), f_train)
    return min(scales, key=fds.get), fds


def methods(lam):
    """The contenders: label -> tracking options (None: the sampler as shipped)."""
    return {"off": None, "stein": {"track": "stein"}, f"epsilon {lam:g}": {"track": "epsilon", "eps_scale": lam}}


def evaluate(sampler, nfe, cfg, per_class, lam, boot, seed=0):
    """Rows, one per contender of methods(lam), on evaluation seeds: Frechet distance to the held-out split
    and class accuracy with intervals, and their ratios to tracking off (paired bootstrap, same seeds)."""
    n = per_class * digits.CLASSES
    seeds = range(digits_lab.EVAL_SEED0, digits_lab.EVAL_SEED0 + n)
    held, _ = digits.load("heldout")
    f_held = digit_metrics.features(held)
    rows, base = [], None
    for label, opts in methods(lam).items():
        x, labels, calls = draw(sampler, nfe, cfg, seeds, opts)
        f = digit_metrics.features(x)
        ok = digit_metrics.correct(x, labels).double()
        fd, fd_ci = digit_metrics.frechet(f, f_held, boot, seed)
        row = dict(sampler=sampler, nfe=nfe, cfg=cfg, method=label, calls=calls, samples=n, frechet=fd,
                   frechet_ci=fd_ci, accuracy=float(ok.mean()), accuracy_ci=digit_metrics.wilson(int(ok.sum()), n))
        if base is None:
            base = (f, ok)
            row.update(frechet_ratio=1.0, frechet_ratio_ci=(1.0, 1.0), accuracy_ratio=1.0, accuracy_ratio_ci=(1.0, 1.0))
        else:
            r, r_ci = digit_metrics.frechet_ratio(f, base[0], f_held, boot, seed)
            a, a_ci = ratio_boot(ok, base[1], 10 * boot, seed)
            row.update(frechet_ratio=r, frechet_ratio_ci=r_ci, accuracy_ratio=a, accuracy_ratio_ci=a_ci)
        rows.append(row)
    return rows


def _ci(v, ci, fmt):
    return f"{v:{fmt}} ({ci[0]:{fmt}}-{ci[1]:{fmt}})"


def mismatch_table(rows):
    """Per sampler and call count: the |eps| ratio (sampler / forward) at the first, middle and last calls and
    its extremes, and the Stein level ratio's."""
    lines = ["| sampler | calls | \\|eps\\| ratio at sigma = 80 | at the middle call (sigma) | last call (sigma) "
             "| largest \\|ratio - 1\\| (sigma) | interval excludes 1 from sigma on | Stein sigma_hat ratio, "
             "largest \\|ratio - 1\\| (sigma) |", "|---|---|---|---|---|---|---|---|"]
    for key in dict.fromkeys((r["sampler"], r["nfe"]) for r in rows):
        rs = [r for r in rows if (r["sampler"], r["nfe"]) == key]
        mid, last = rs[len(rs) // 2], rs[-1]
        worst = max(rs, key=lambda r: abs(r["eps_ratio"] - 1))
        worst_s = max(rs, key=lambda r: abs(r["stein_ratio"] - 1))
        name = f"{key[0]} (fine reference)" if rs[0].get("reference") else key[0]
        lines.append(f"| {name} | {len(rs)} | {_ci(rs[0]['eps_ratio'], rs[0]['eps_ratio_ci'], '.3f')} "
                     f"| {_ci(mid['eps_ratio'], mid['eps_ratio_ci'], '.3f')} ({mid['sigma']:.3g}) "
                     f"| {_ci(last['eps_ratio'], last['eps_ratio_ci'], '.3f')} ({last['sigma']:.3g}) "
                     f"| {_ci(worst['eps_ratio'], worst['eps_ratio_ci'], '.3f')} ({worst['sigma']:.3g}) | {onset(rs)} "
                     f"| {_ci(worst_s['stein_ratio'], worst_s['stein_ratio_ci'], '.3f')} ({worst_s['sigma']:.3g}) |")
    return "\n".join(lines)


def onset(rows):
    """The largest level from which on (down to the last call) every call's |eps| ratio interval excludes 1."""
    level = "-"
    for r in reversed(rows):
        lo, hi = r["eps_ratio_ci"]
        if lo <= 1 <= hi:
            break
        level = f"{r['sigma']:.3g}"
    return level


def calibration_table(cal):
    scales = sorted({lam for c in cal for lam in c["frechet"]})
    lines = ["| sampler | calls | " + " | ".join(f"lambda {s:g}" for s in scales) + " | chosen |",
             "|---|---|" + "---|" * (len(scales) + 1)]
    for c in cal:
        lines.append(f"| {c['sampler']} | {c['nfe']} | " + " | ".join(f"{c['frechet'][s]:.2f}" for s in scales)
                     + f" | {c['chosen']:g} |")
    return "\n".join(lines)


def results_table(rows):
    lines = ["| sampler | calls | cfg | method | Frechet to held-out (95% bootstrap) | ratio to off (paired 95%) "
             "| class accuracy (Wilson 95%) | ratio to off (paired 95%) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['calls']} | {r['cfg']:g} | {r['method']} "
                     f"| {_ci(r['frechet'], r['frechet_ci'], '.2f')} | {_ci(r['frechet_ratio'], r['frechet_ratio_ci'], '.3f')} "
                     f"| {_ci(r['accuracy'], r['accuracy_ci'], '.3f')} | {_ci(r['accuracy_ratio'], r['accuracy_ratio_ci'], '.3f')} |")
    return "\n".join(lines)


def verdict(rows):
    """Counts of settings where a method's Frechet ratio interval lies wholly below 1 (better), wholly above
    (worse), or contains 1, per method kind."""
    out = {}
    for r in rows:
        if r["method"] == "off":
            continue
        kind = r["method"].split()[0]
        lo, hi = r["frechet_ratio_ci"]
        v = out.setdefault(kind, {"better": 0, "worse": 0, "unresolved": 0})
        v["better" if hi < 1 else "worse" if lo > 1 else "unresolved"] += 1
    return out


def figure(rows, path):
    """|eps| ratio against sigma (log-log): every sampler at its fewest and most calls, and the fine reference."""
    keep = {min(r["nfe"] for r in rows if not r.get("reference")), max(r["nfe"] for r in rows if not r.get("reference"))}
    keys = dict.fromkeys((r["sampler"], r["nfe"], bool(r.get("reference"))) for r in rows if r.get("reference") or r["nfe"] in keep)
    series = []
    for s, n, ref in keys:
        rs = [r for r in rows if (r["sampler"], r["nfe"], bool(r.get("reference"))) == (s, n, ref)]
        series.append((f"{s} {n}" + (" fine" if ref else ""), [r["sigma"] for r in rs], [r["eps_ratio"] for r in rs]))
    charts.line_chart(series, "|eps| on the sampler's states / on the forward process", "sigma",
                      "ratio", xlog=True, ylog=True).save(path)


def cmd(args):
    t0 = time.perf_counter()
    out = output.folder("exposure", args.out)
    if args.quick:
        args.samplers, args.nfe, args.per_class, args.cal_per_class, args.boot, args.trajectory, args.reference_nfe = \
            ["euler"], [10], 4, 3, 20, 20, 19
        args.scales = [1.005, 1.02]
    torch.set_num_threads(args.threads or torch.get_num_threads())
    record = {"samplers": args.samplers, "nfe": args.nfe, "cfg": args.cfg, "per_class": args.per_class,
              "cal_per_class": args.cal_per_class, "scales": args.scales, "boot": args.boot,
              "reference_nfe": args.reference_nfe, "cal_seeds": [CAL_SEED0, CAL_SEED0 + args.cal_per_class * digits.CLASSES],
              "eval_seeds": [digits_lab.EVAL_SEED0, digits_lab.EVAL_SEED0 + args.per_class * digits.CLASSES]}
    mis, cal, rows = [], [], []
    for cfg in dict.fromkeys(args.cfg + args.mismatch_cfg):
        mis += [dict(r, cfg=cfg, reference=True) for r in mismatch("heun", args.reference_nfe, cfg, args.trajectory)]
        for sampler in args.samplers:
            for nfe in args.nfe:
                mis += [dict(r, cfg=cfg) for r in mismatch(sampler, nfe, cfg, args.trajectory)]
    for cfg in args.cfg:
        for sampler in args.samplers:
            for nfe in args.nfe:
                lam, fds = calibrate(sampler, nfe, cfg, args.cal_per_class, args.scales)
                cal.append(dict(sampler=sampler, nfe=nfe, cfg=cfg, chosen=lam, frechet=fds))
                rows += evaluate(sampler, nfe, cfg, args.per_class, lam, args.boot)
                print(results_table(rows[-3:]).split("\n", 2)[2], f"({time.perf_counter() - t0:.0f} s)", flush=True)
    record.update(mismatch=mis, calibration=[dict(c, frechet={str(k): v for k, v in c["frechet"].items()}) for c in cal],
                  rows=rows, verdict=verdict(rows), mismatch_cfg=args.mismatch_cfg, trajectory=args.trajectory)
    table = report(record, out)
    print(table)
    print(output.write(out, "exposure", record, table, time.perf_counter() - t0))


def report(record, out):
    """The markdown tables of a study record (as written to exposure.json), and its figures under `out`."""
    parts = []
    for cfg in dict.fromkeys(record["cfg"] + record["mismatch_cfg"]):
        mis = [r for r in record["mismatch"] if r["cfg"] == cfg]
        figure(mis, out / f"mismatch_cfg{cfg:g}.png")
        parts += [f"Mismatch at cfg {cfg:g} (|eps| = |x - D| / (sigma sqrt N) on the sampler's states / on the forward "
                  f"process; 1 = the network sees what it saw in training; {record['trajectory']} trajectories, all "
                  f"{len(digits.load('heldout')[1])} held-out digits for the forward process; figure "
                  f"mismatch_cfg{cfg:g}.png):", mismatch_table(mis)]
    cal = [dict(c, frechet={float(k): v for k, v in c["frechet"].items()}) for c in record["calibration"]]
    seeds, ev = record["cal_seeds"], record["eval_seeds"]
    return "\n\n".join(parts + [
        f"Epsilon scaling lambda chosen on calibration seeds {seeds[0]}-{seeds[1] - 1} "
        "(Frechet distance to the training split; lambda 1 = off):", calibration_table(cal),
        f"Evaluation seeds {ev[0]}-{ev[1] - 1} against the held-out split:", results_table(record["rows"]),
        "Frechet ratio interval below 1 / above 1 / containing 1: " + "; ".join(
            f"{k} {c['better']} / {c['worse']} / {c['unresolved']}" for k, c in record["verdict"].items())])


def add_study(sub):
    p = sub.add_parser("exposure", help="exposure bias on the trained digits network: the measured mismatch, "
                                        "and noise-level tracking and epsilon scaling against none")
    p.add_argument("--quick", action="store_true", help="euler at 10 calls, 40 samples (the tests' form)")
    p.add_argument("--out", default=None, help="default docs/studies/exposure")
    p.add_argument("--samplers", nargs="+", default=list(SAMPLER_NAMES), choices=sorted(SAMPLERS))
    p.add_argument("--nfe", nargs="+", type=int, default=list(NFES), help="model calls per sample")
    p.add_argument("--cfg", nargs="+", type=float, default=[trained.DEFAULT_CFG])
    p.add_argument("--mismatch-cfg", nargs="+", type=float, default=[1.0],
                   help="further guidance scales at which only the mismatch is measured (default %(default)s: no guidance)")
    p.add_argument("--per-class", type=int, default=100, help="evaluation samples per class (default %(default)s)")
    p.add_argument("--cal-per-class", type=int, default=20, help="calibration samples per class (default %(default)s)")
    p.add_argument("--scales", nargs="+", type=float, default=list(SCALES), help="epsilon-scaling lambdas searched")
    p.add_argument("--trajectory", type=int, default=200, help="trajectories for the mismatch (default %(default)s)")
    p.add_argument("--reference-nfe", type=int, default=REFERENCE_NFE,
                   help="calls of the fine Heun solve whose mismatch is the network's own (default %(default)s)")
    p.add_argument("--boot", type=int, default=200, help="bootstrap resamples (default %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.set_defaults(fn=cmd)
