"""Guidance in the lab: class-conditional mixtures with a known speciation level, accuracy and diversity metrics,
and the accuracy-diversity frontier of constant CFG, the guidance interval and pulses at sigma_c.

The conditional model is exact or, with `leak` > 0, an under-confident one, p_model(x | c) = (1 - leak) p(x | c)
+ leak p(x) (the failure CFG exists to fix: at w = 1 a `leak` share of samples ignores its class). Both are
mixtures, so D_c and D_u stay exact (SCIENCE.md §6) and every figure is measured, not modelled.
"""
import math
from dataclasses import asdict, dataclass

import torch

from ..samplers import REGISTRY as SAMPLERS
from ..samplers.critical import estimate_sigma_c
from ..samplers.guidance import Interval, Pulse, ScheduledCFG
from ..schedulers import REGISTRY as SCHEDULERS
from .problems import F64, Mixture
from .runner import CountingModel, schedule_range


class ClassMixture(Mixture):
    """A class-conditional mixture from explicit components (mu [K, dim], lam [K, dim], logpi [K], owner [K]);
    the conditional denoiser tilts the unconditional responsibilities by leak + (1 - leak) [k in c] / pi(c)."""

    def __init__(self, mu, lam, logpi, owner, classes, leak=0.0, name="class_mixture"):
        if not 0.0 <= leak < 1.0:
            raise ValueError(f"leak must be in [0, 1), got {leak!r}")
        self.mu, self.lam, self.logpi = mu.to(F64), lam.to(F64), torch.log_softmax(logpi.to(F64), 0)
        self.owner, self.n_classes, self.classes = owner, classes, classes
        self.shape, self.leak, self.name = (mu.shape[1],), float(leak), name

    def class_prior(self):
        return torch.zeros(self.n_classes, dtype=F64).index_add_(0, self.owner, self.logpi.exp())

    def responsibilities(self, x, alpha, sigma, labels=None):
        w = super().responsibilities(x, alpha, sigma, labels if self.leak == 0 else None)
        if labels is None or self.leak == 0:
            return w
        own = (self.owner[None, :] == labels.reshape(-1, 1)).to(F64)
        tilt = self.leak + (1 - self.leak) * own / self.class_prior()[labels.reshape(-1)][:, None]
        w = w * tilt
        return w / w.sum(-1, keepdim=True)

    def covariance(self, label=None):
        """The exact covariance of p(x) (or of p(x | label)) [dim, dim]."""
        keep = torch.ones_like(self.logpi, dtype=torch.bool) if label is None else self.owner == label
        pi = self.logpi.exp() * keep
        pi = pi / pi.sum()
        mean = pi @ self.mu
        second = torch.einsum("k,kd,ke->de", pi, self.mu, self.mu) + torch.diag(pi @ self.lam)
        return second - torch.outer(mean, mean)

    def speciation_level(self) -> float:
        """sqrt(top eigenvalue of the exact covariance): the known critical level sigma_c (VE units)."""
        return math.sqrt(float(torch.linalg.eigvalsh(self.covariance())[-1]))


def speciation_mixture(level=1.0, classes=4, modes=3, dim=8, ratio=0.4, within=0.08, leak=0.0, seed=0):
    """Classes centred at +-a e_j (a = level sqrt(classes / 2), so the between-class covariance has top
    eigenvalue level^2), each with `modes` unequal modes offset by ratio * level in random directions, per-dim
    std within * level. Its exact critical level is `speciation_level()` (level up to the modes' spread)."""
    if not (isinstance(classes, int) and classes >= 2 and classes % 2 == 0 and classes // 2 <= dim):
        raise ValueError(f"classes must be an even integer in [2, 2 dim], got {classes!r}")
    if not level > 0:
        raise ValueError(f"level must be > 0, got {level!r}")
    g = torch.Generator().manual_seed(seed)
    a = level * math.sqrt(classes / 2)
    centres = torch.zeros(classes, dim, dtype=F64)
    for c in range(classes):
        centres[c, c // 2] = a if c % 2 == 0 else -a
    offsets = torch.randn(classes, modes, dim, generator=g, dtype=F64)
    offsets = ratio * level * offsets / offsets.norm(dim=-1, keepdim=True)
    mu = (centres[:, None, :] + offsets).reshape(-1, dim)
    lam = torch.full_like(mu, (within * level) ** 2)
    logpi = torch.randn(classes * modes, generator=g, dtype=F64)
    owner = torch.arange(classes).repeat_interleave(modes)
    return ClassMixture(mu, lam, logpi, owner, classes, leak, name=f"speciation(level={level:g}, leak={leak:g})")


@dataclass
class Outcome:
    """One guidance setting's figures over a batch of seeds."""

    label: str
    kind: str
    peak: float
    accuracy: float
    var_ratio: float
    coverage: float
    mode_error: float
    cond_calls: int
    uncond_calls: int
    probe_calls: int
    sigma_c: float


def metrics(problem: ClassMixture, x0, labels):
    """Class accuracy (mean true posterior of the intended class); over the samples that landed in their intended
    class (nearest component by posterior): within-class variance ratio to the truth (trace Cov, mean over classes),
    mode coverage (share of modes holding >= 1/4 of their true share) and mode-weight error (total variation
    between sample and true mode shares, mean over classes)."""
    x0 = x0.to(F64)
    post = problem.class_posterior(x0)
    acc = float(post[torch.arange(len(x0)), labels].mean())
    comp = problem.component(x0)
    ratios, covered, errors = [], [], []
    for c in range(problem.n_classes):
        mine = (labels == c) & (problem.owner[comp] == c)
        if int(mine.sum()) < 2:
            continue
        ratios.append(float(x0[mine].var(0).sum() / torch.diagonal(problem.covariance(c)).sum()))
        ks = (problem.owner == c).nonzero().flatten()
        truth = problem.logpi[ks].softmax(0)
        hits = torch.stack([(comp[mine] == k).sum() for k in ks]).to(F64)
        share = hits / hits.sum()
        covered += (share >= truth / 4).tolist()
        errors.append(0.5 * float((share - truth).abs().sum()))
    mean = lambda v: sum(v) / len(v)
    return acc, mean(ratios), mean([float(v) for v in covered]), mean(errors)


def guided_sample(problem, schedule, seeds, steps=20, sampler="dpmpp_2m", schedule_name="karras", space="ve", probes=4):
    """Samples of `problem` under a guidance schedule, with the model calls counted: (x0, labels, GuidedRun, cond, uncond)."""
    sigma_min, sigma_max = schedule_range(problem, space)
    x_T, labels = problem.draw(list(seeds), space, sigma_max)
    sigmas = SCHEDULERS[schedule_name].fn(steps, sigma_min, sigma_max).to(F64)
    cond, uncond = CountingModel(problem.model(space, labels)), CountingModel(problem.model(space, None))
    guided = ScheduledCFG(cond, uncond, schedule, space, probes)
    x0 = SAMPLERS[sampler].fn(guided, x_T, sigmas, disable=True, space=space)
    return x0, labels, guided.run, cond.calls, uncond.calls


def evaluate(problem, label, kind, schedule, seeds, **kw) -> Outcome:
    x0, labels, run, cond_calls, uncond_calls = guided_sample(problem, schedule, seeds, **kw)
    sigma_c = run.sigma_c
    sigma_c = math.nan if sigma_c is None else float(torch.as_tensor(sigma_c).median())
    return Outcome(label, kind, schedule.peak, *metrics(problem, x0, labels), cond_calls,
                   uncond_calls - run.probe_calls, run.probe_calls, sigma_c)


def interval_around(sigma_c, width):
    """The guidance interval of half-width `width` nats around sigma_c (VE)."""
    return math.exp(math.log(sigma_c) - width), math.exp(math.log(sigma_c) + width)


def frontier(problem, seeds, peaks=(1.5, 2, 3, 5, 8, 12), width=1.0, progress=None, **kw):
    """Constant CFG, the guidance interval (sigma_c e^-width .. sigma_c e^width around the known sigma_c) and
    auto pulses (cosine of half-width `width`, gaussian of std width / 2) at each peak scale, plus w = 1;
    every setting on the same seeds and x_T."""
    lo, hi = interval_around(problem.speciation_level(), width)
    settings = [("w=1", "none", Interval(1.0, 1.0))]
    for w in peaks:
        settings += [(f"constant {w:g}", "constant", Interval(w, w)),
                     (f"interval {w:g}", "interval", Interval(w, 1.0, lo, hi)),
                     (f"gaussian auto {w:g}", "gaussian auto", Pulse("gaussian", w, 1.0, width / 2)),
                     (f"cosine auto {w:g}", "cosine auto", Pulse("cosine", w, 1.0, width))]
    out = []
    for label, kind, schedule in settings:
        out.append(evaluate(problem, label, kind, schedule, seeds, **kw))
        if progress is not None:
            progress.update(1)
    return out


def pareto_check(outcomes, kind="cosine auto"):
    """Per peak: does `kind` reach constant CFG's accuracy (within 0.005) with a smaller variance and mode error,
    and how many unconditional calls does it use against constant CFG's."""
    const = {o.peak: o for o in outcomes if o.kind == "constant"}
    rows = []
    for o in outcomes:
        if o.kind == kind and o.peak in const:
            c = const[o.peak]
            gain = (o.accuracy >= c.accuracy - 0.005 and abs(math.log(o.var_ratio)) <= abs(math.log(c.var_ratio))
                    and o.mode_error <= c.mode_error)
            rows.append((o.peak, o.accuracy - c.accuracy, o.var_ratio, c.var_ratio, o.mode_error, c.mode_error,
                         o.uncond_calls + o.probe_calls, c.uncond_calls, gain))
    return rows


def detector_check(levels=(0.25, 0.5, 1.0, 2.0, 4.0), spaces=("ve", "flow"), seeds=range(64), steps=20, probes=4):
    """The online JVP detector (`estimate_sigma_c`, on the unconditional denoiser from pure noise over the top of
    a Karras schedule) and the zero-call x0-speed peak, against each mixture's known level: rows of
    (space, known, jvp median, jvp relative error, speed median, speed relative error)."""
    rows = []
    for space in spaces:
        for level in levels:
            problem = speciation_mixture(level)
            known = problem.speciation_level()
            sigma_min, sigma_max = schedule_range(problem, space)
            x_T, _ = problem.draw(list(seeds), space, sigma_max)
            sigmas = SCHEDULERS["karras"].fn(steps, sigma_min, sigma_max).to(F64)
            jvp = float(estimate_sigma_c(problem.model(space), x_T, sigmas, space, probes).median())
            track = ScheduledCFG(problem.model(space), problem.model(space), Interval(1.0, 1.0), space)
            SAMPLERS["euler"].fn(track, x_T, sigmas, disable=True, space=space)
            speed = float(track.run.speed.sigma_c.median())
            rows.append((space, known, jvp, jvp / known - 1, speed, speed / known - 1))
    return rows


def as_dicts(outcomes):
    return [asdict(o) for o in outcomes]


def plot(outcomes, path, title=""):
    """Accuracy against within-class variance ratio and mode-weight error, one curve per kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    kinds = [k for k in ("constant", "interval", "gaussian auto", "cosine auto") if any(o.kind == k for o in outcomes)]
    base = [o for o in outcomes if o.kind == "none"]
    for ax, field, name in ((axes[0], "var_ratio", "within-class variance / truth"), (axes[1], "mode_error", "mode-weight error (TV)")):
        for k in kinds:
            pts = sorted((o for o in outcomes if o.kind == k), key=lambda o: o.peak)
            pts = base + pts
            ax.plot([getattr(o, field) for o in pts], [o.accuracy for o in pts], marker="o", ms=3, label=k)
            for o in pts[1:]:
                ax.annotate(f"{o.peak:g}", (getattr(o, field), o.accuracy), fontsize=6, alpha=0.7)
        ax.set_xlabel(name)
        ax.set_ylabel("class accuracy")
        ax.grid(True, alpha=0.3)
    axes[0].axvline(1.0, color="k", lw=0.5)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(outcomes, checks, detector, problem):
    lines = [f"### Accuracy and diversity on {problem.name} (known sigma_c = {problem.speciation_level():.3f})", "",
             "| setting | accuracy | variance ratio | mode coverage | mode error | cond calls | uncond calls | probe calls | sigma_c used |",
             "|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        lines.append(f"| {o.label} | {o.accuracy:.3f} | {o.var_ratio:.3f} | {o.coverage:.2f} | {o.mode_error:.3f} | "
                     f"{o.cond_calls} | {o.uncond_calls} | {o.probe_calls} | {'' if math.isnan(o.sigma_c) else f'{o.sigma_c:.3f}'} |")
    lines += ["", "### Auto cosine pulse against constant CFG at the same peak", "",
              "| peak | accuracy - constant's | variance ratio (pulse / constant) | mode error (pulse / constant) | guided calls (pulse incl. probes / constant) | Pareto gain |",
              "|---|---|---|---|---|---|"]
    for peak, dacc, vp, vc, mp, mc, calls, ccalls, gain in checks:
        lines.append(f"| {peak:g} | {dacc:+.3f} | {vp:.3f} / {vc:.3f} | {mp:.3f} / {mc:.3f} | {calls} / {ccalls} | {'yes' if gain else 'no'} |")
    lines += ["", "### Online detector against the known level", "",
              "| space | known sigma_c | JVP (4 probes) | error | x0-speed peak | error |", "|---|---|---|---|---|---|"]
    for space, known, jvp, ejvp, speed, espeed in detector:
        lines.append(f"| {space} | {known:.3f} | {jvp:.3f} | {100 * ejvp:+.1f}% | {speed:.3f} | {100 * espeed:+.1f}% |")
    return "\n".join(lines) + "\n"


def cmd_guidance(args):
    import json
    from pathlib import Path

    from tqdm.auto import tqdm

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = range(128 if args.quick else args.seeds)
    peaks = (2, 5) if args.quick else tuple(args.peaks)
    problem = speciation_mixture(args.level, leak=args.leak)
    with tqdm(total=1 + 4 * len(peaks), desc="samplerlab guidance", disable=args.quiet) as bar, torch.no_grad():
        outcomes = frontier(problem, seeds, peaks, args.width, bar, steps=args.steps)
        detector = detector_check(levels=(0.5, 2.0) if args.quick else (0.25, 0.5, 1.0, 2.0, 4.0))
    checks = pareto_check(outcomes)
    text = markdown(outcomes, checks, detector, problem)
    (out / "guidance.md").write_text(text)
    (out / "guidance.json").write_text(json.dumps({"command": "guidance", "seeds": len(seeds), "steps": args.steps,
                                                   "outcomes": as_dicts(outcomes), "detector": detector}, indent=1))
    plot(outcomes, out / "guidance_frontier.png", f"{problem.name}, {len(seeds)} seeds, dpmpp_2m {args.steps} Karras steps")
    print(text)
    print(f"wrote {out}/guidance.md, guidance.json, guidance_frontier.png")


def add_parser(sub):
    """The `guidance` subcommand."""
    p = sub.add_parser("guidance", help="CFG pulses at the critical level vs constant CFG and the guidance interval")
    p.add_argument("--out", default="samplerlab-guidance", help="output folder (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=512, help="samples per setting (default: %(default)s)")
    p.add_argument("--peaks", nargs="+", type=float, default=[1.5, 2, 3, 5, 8, 12])
    p.add_argument("--level", type=float, default=1.0, help="speciation level of the mixture (default: %(default)s)")
    p.add_argument("--leak", type=float, default=0.3, help="share of the conditional model that ignores the class (default: %(default)s)")
    p.add_argument("--width", type=float, default=1.0, help="pulse half-width in nats of sigma (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20, help="dpmpp_2m steps on a Karras schedule (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="128 seeds, peaks 2 and 5, two detector levels")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_guidance)
