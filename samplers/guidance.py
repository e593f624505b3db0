"""Classifier-free guidance whose weight depends on the noise level: pulses at a critical level, and intervals.

D = D_u + w(sigma) (D_c - D_u) (Ho & Salimans 2022), with w(sigma) = base + (peak - base) p(sigma) and a profile
p in [0, 1] over the VE level sigma = exp(-lambda) (flow models: sigma = t / (1 - t)), so one setting means the
same on every model:
- gaussian:  p = exp(-u^2 / 2), u = (log sigma - log sigma_c) / width, cut to 0 beyond |u| > 3 (where it is < 1.2%);
- cosine:    p = (1 + cos(pi u)) / 2 for |u| < 1, else 0 (raised cosine);
- box:       p = 1 for |u| <= 1, else 0;
- Interval:  p = 1 for sigma_lo < sigma <= sigma_hi (the guidance interval of Kynkaanniemi et al., arXiv 2404.07724).
A pulse centred at the critical level sigma_c (SCIENCE.md §2; `critical.py`) guides where classes are decided;
with base = 1 the unconditional prediction is needed only inside the pulse. sigma_c = None means "auto": it is
measured online from the unconditional denoiser (`GuidedRun`). Pure torch; ComfyUI nodes feed it.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch

from .critical import JVPProbe, SpeedTracker
from .space import resolve

SHAPES = ("gaussian", "cosine", "box")
GAUSS_CUT = 3.0


def _finite(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Pulse:
    """w = base + (peak - base) p((log sigma - log sigma_c) / width); width in nats of sigma (= half log-SNR units).
    center: sigma_c as a VE level, or None to detect it during sampling."""

    shape: str = "gaussian"
    peak: float = 5.0
    base: float = 1.0
    width: float = 0.5
    center: Optional[float] = None

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {list(SHAPES)}, got {self.shape!r}")
        _finite("peak", self.peak)
        _finite("base", self.base)
        if not _finite("width", self.width) > 0:
            raise ValueError(f"width must be > 0 (nats of sigma), got {self.width!r}")
        if self.center is not None and not _finite("center", self.center) > 0:
            raise ValueError(f"center must be a noise level > 0, got {self.center!r}")

    @property
    def auto(self) -> bool:
        """Whether sigma_c is to be detected during sampling."""
        return self.center is None

    def profile(self, sigma: float, center):
        """p in [0, 1] at VE level sigma for centre(s) sigma_c (float or [B] tensor); float64 tensor."""
        center = torch.as_tensor(self.center if center is None else center, dtype=torch.float64)
        if sigma <= 0:
            return torch.zeros_like(center)
        u = (math.log(sigma) - center.log()) / self.width if math.isfinite(sigma) else torch.full_like(center, math.inf)
        if self.shape == "gaussian":
            return torch.where(u.abs() <= GAUSS_CUT, torch.exp(-0.5 * u.clamp(-GAUSS_CUT, GAUSS_CUT) ** 2), 0.0)
        if self.shape == "cosine":
            return torch.where(u.abs() < 1, 0.5 * (1 + torch.cos(math.pi * u.clamp(-1, 1))), 0.0)
        return (u.abs() <= 1).to(torch.float64)

    def weight(self, sigma: float, center=None):
        """w(sigma) as a float64 tensor (one per centre)."""
        return weight(self, sigma, center)


@dataclass(frozen=True)
class Interval:
    """w = peak for sigma_lo < sigma <= sigma_hi (VE levels; sigma_hi may be inf), base elsewhere.
    Interval(w, w) is constant guidance w."""

    peak: float = 5.0
    base: float = 1.0
    sigma_lo: float = 0.0
    sigma_hi: float = math.inf
    auto, center = False, None

    def __post_init__(self):
        _finite("peak", self.peak)
        _finite("base", self.base)
        if not (isinstance(self.sigma_lo, (int, float)) and math.isfinite(self.sigma_lo) and self.sigma_lo >= 0):
            raise ValueError(f"sigma_lo must be a finite level >= 0, got {self.sigma_lo!r}")
        if not (isinstance(self.sigma_hi, (int, float)) and self.sigma_hi > self.sigma_lo):
            raise ValueError(f"sigma_hi must be > sigma_lo = {self.sigma_lo}, got {self.sigma_hi!r}")

    def profile(self, sigma: float, center=None):
        return torch.tensor([float(self.sigma_lo < sigma <= self.sigma_hi)], dtype=torch.float64)

    def weight(self, sigma: float, center=None):
        return weight(self, sigma, center)


def weight(schedule, sigma: float, center=None, peak=None):
    """w = base + (peak - base) p(sigma) (float64 tensor, one per centre); `peak` overrides the schedule's (a host's cfg)."""
    peak = schedule.peak if peak is None else peak
    return schedule.base + (peak - schedule.base) * schedule.profile(sigma, center)


def check_percent(name: str, value) -> float:
    """A fraction of the schedule in [0, 1], or a ValueError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a fraction of the schedule in [0, 1], got {value!r}")
    return float(value)


def sigma_at_percent(name: str, percent, percent_to_sigma, space="ve") -> float:
    """The VE level at `percent` of the model's schedule, through the host's percent_to_sigma (host level)."""
    host = float(percent_to_sigma(check_percent(name, percent)))
    space = resolve(space)
    return math.inf if host >= space.max_level() else space.to_ve(host)


def schedule_at_percents(percent_to_sigma, space, peak, shape, center_percent, width, base, start_percent,
                         end_percent):
    """A Pulse or Interval in VE levels from model-independent settings, through the host's percent_to_sigma:
    the interval between start_percent and end_percent, or a pulse centred at center_percent (None: the centre
    sigma_c is measured during sampling)."""
    if shape == "interval":
        if not end_percent > start_percent:
            raise ValueError(f"end_percent must be > start_percent = {start_percent}, got {end_percent}")
        hi = sigma_at_percent("start_percent", start_percent, percent_to_sigma, space)
        lo = sigma_at_percent("end_percent", end_percent, percent_to_sigma, space)
        return Interval(peak, base, lo, hi)
    sigma_c = None
    if center_percent is not None:
        if not 0.0 < center_percent < 1.0:
            raise ValueError(f"center_percent must be in (0, 1) (0 and 1 are the schedule's ends), got {center_percent!r}")
        sigma_c = sigma_at_percent("center_percent", center_percent, percent_to_sigma, space)
    return Pulse(shape, peak, base, width, sigma_c)


def percent_at_sigma(sigma_host: float, percent_to_sigma, iters: int = 50) -> float:
    """The inverse of the host's (decreasing) percent_to_sigma by bisection: the percent of the schedule at sigma_host."""
    lo, hi = 0.0, 1.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if float(percent_to_sigma(mid)) > sigma_host else (lo, mid)
    return 0.5 * (lo + hi)


def curve(schedule, percent_to_sigma, space="ve", peak=None, points=65):
    """(percents, weights): w over the model's schedule at the centres of `points` equal slices of it (so neither the
    pure-noise start nor sigma = 0 is drawn), for a plot; None for a pulse whose centre is detected during
    sampling (unknown until then)."""
    if schedule.auto:
        return None
    percents = [(i + 0.5) / points for i in range(points)]
    return percents, [float(weight(schedule, sigma_at_percent("percent", q, percent_to_sigma, space), peak=peak).reshape(-1)[0])
                      for q in percents]


def combine(d_c, d_u, w):
    """D_u + w (D_c - D_u) with one weight per sample (w [B] float64), in d_c's dtype."""
    if d_u is None:
        return d_c
    w = w.to(d_c.device, d_c.dtype).reshape(-1, *[1] * (d_c.ndim - 1))
    return d_u + (d_c - d_u) * w


class GuidedRun:
    """The state of one sampling run under a schedule: per-sample weights, the online sigma_c detector
    (auto pulses; JVP power iteration on the unconditional denoiser, `probes` levels, one extra call each),
    the zero-call x0-speed tracker on the conditional prediction, and counts of the model calls it asked for.

    Protocol per model query at host level s: compute D_c, and D_u if `needs_uncond(s, B, peak)`; if
    `probe_point(x, s)` is not None, also D_u there; then `observe(x, s, d_c, d_u, d_probe)` and
    `combine(d_c, d_u, weights(s, B, peak))` (weights after observe: a new estimate applies at once).
    """

    def __init__(self, schedule, space="ve", probes=4, probe_scale=0.1):
        self.schedule, self.space = schedule, resolve(space)
        self.probe = JVPProbe(self.space, probes, probe_scale) if schedule.auto else None
        self.speed = SpeedTracker(self.space)
        self.queries = self.uncond_calls = self.probe_calls = 0

    @property
    def sigma_c(self):
        """The centre in use: the fixed sigma_c, or the per-sample detected one [B] (None before the first probe)."""
        return self.probe.sigma_c if self.probe is not None else self.schedule.center

    def profile(self, s: float, batch: int):
        """p at host level s, one per sample [B] float64 (0 while an auto centre is still unknown)."""
        if self.probe is not None and self.probe.sigma_c is None:
            return torch.zeros([batch], dtype=torch.float64)
        return self.schedule.profile(self.space.to_ve(s), self.sigma_c).expand(batch)

    def weights(self, s: float, batch: int, peak=None):
        """w at host level s, one per sample [B] float64; `peak` overrides the schedule's (a host's cfg)."""
        peak = self.schedule.peak if peak is None else peak
        return self.schedule.base + (peak - self.schedule.base) * self.profile(s, batch)

    def needs_uncond(self, s: float, batch: int, peak=None) -> bool:
        """Whether D_u is needed at s: w != 1 for some sample (an unknown peak counts as != 1), or a probe is due."""
        if self.probe is not None and self.probe.wants(s):
            return True
        if peak is None:
            return self.schedule.base != 1 or bool((self.profile(s, batch) > 0).any())
        return bool((self.weights(s, batch, peak) != 1).any())

    def probe_point(self, x, s: float, d_c=None, d_u=None):
        """Where to query D_u once more for the detector (None: no probe due); the first direction is D_c - D_u."""
        if self.probe is None or not self.probe.wants(s):
            return None
        return self.probe.point(x, s, None if d_c is None or d_u is None else d_c - d_u)

    def observe(self, x, s: float, d_c, d_u=None, d_probe=None):
        self.queries += 1
        self.uncond_calls += d_u is not None
        self.speed.update(d_c, s)
        if d_probe is not None:
            self.probe_calls += 1
            self.probe.update(x, s, d_u, d_probe)

    def report(self) -> str:
        """One line for the log: the detected or fixed sigma_c (VE), the x0-speed peak, the calls used."""
        def fmt(v):
            if v is None:
                return "n/a"
            v = torch.as_tensor(v, dtype=torch.float64).reshape(-1)
            return f"{float(v.median()):.4g}" + (f" (samples {float(v.min()):.4g}..{float(v.max()):.4g})" if len(v) > 1 else "")

        how = f"detected by {self.probe.done} JVP probes" if self.probe is not None else "fixed"
        return (f"sigma_c = {fmt(self.sigma_c)} (VE level, {how}); x0-speed peak at {fmt(self.speed.sigma_c)}; "
                f"{self.queries} queries, {self.uncond_calls} unconditional calls, {self.probe_calls} probe calls")


class ScheduledCFG:
    """CFG for standalone k-diffusion hosts: a denoiser model(x, sigma, **extra_args) whose guidance weight
    follows `schedule` over sigma. `cond_model` and `uncond_model` are the two k-diffusion-style denoisers
    (e.g. functools.partial of one network with its two conditionings). One instance is one sampling run:
    `.run` holds the detected sigma_c and the call counts afterwards."""

    def __init__(self, cond_model, uncond_model, schedule, space="ve", probes=4, probe_scale=0.1):
        self.cond_model, self.uncond_model = cond_model, uncond_model
        self.run = GuidedRun(schedule, space, probes, probe_scale)

    def __call__(self, x, sigma, **extra_args):
        s = float(sigma.reshape(-1)[0])
        d_c = self.cond_model(x, sigma, **extra_args)
        d_u = self.uncond_model(x, sigma, **extra_args) if self.run.needs_uncond(s, x.shape[0], self.run.schedule.peak) else None
        point = self.run.probe_point(x, s, d_c, d_u)
        d_probe = None if point is None else self.uncond_model(point, sigma, **extra_args)
        self.run.observe(x, s, d_c, d_u, d_probe)
        return combine(d_c, d_u, self.run.weights(s, x.shape[0]))
