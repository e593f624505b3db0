"""Per-sample noise-level tracking against exposure bias (SCIENCE.md §5), for any sampler function.

A sampler's own errors leave a sample at an actual noise level sigma* that differs from the nominal
level it queries the model at. The tracker estimates sigma* per sample and queries the model there:

- `stein` (default): sigma^2 = <x - D(x; sigma), x - c> / N in the VE view, c the sample's mean. By
  Stein's identity E<x - D(x; sigma*), x - c> = N sigma*^2 for any data distribution when D is the
  exact denoiser at the true level, so its fixed point is the true level (tested on the Gaussian).
- `residual`: the fixed point sigma^2 = ||x - D(x; sigma)||^2 / N of SCIENCE.md §5. It misses the
  posterior variance: biased low by sigma^2 * div D / N (for a Gaussian sigma*^2 - lambda at high noise).
- `epsilon`: epsilon scaling (Ning et al. 2023, arXiv 2308.15321), D' = x - (x - D) / eps_scale.

The level is searched within a window sigma * e^(+-track_window) of the level asked for (the
time-shift sampler's window, Li et al. 2023, arXiv 2305.15583). With `track_iterations` = 0 the
estimate from one model call sets the level of the next call (no extra calls); k > 0 refines the
estimate k times per call (k extra calls). Each run starts at the nominal level.
"""
import math

import torch

from .registry import Param, check_params
from .space import resolve

F64 = torch.float64

TRACK_PARAMS = {
    "track": Param("off", choices=("off", "stein", "residual", "epsilon"),
                   tooltip="noise-level tracking: stein (unbiased estimate), residual (biased low), epsilon scaling, off"),
    "track_window": Param(0.1, 0.0, 1.0, 0.01, tooltip="tracked level stays within sigma * exp(+-window)"),
    "track_iterations": Param(0, 0, 4, 1, tooltip="extra model calls per evaluation refining the level (0: use the last estimate)"),
    "eps_scale": Param(1.003, 1.0, 1.1, 0.0005, tooltip="epsilon scaling factor (track = epsilon): D' = x - (x - D) / eps_scale"),
}


def _bcast(v, x):
    return v.reshape(-1, *[1] * (x.ndim - 1))


def scaled_levels(space, s, factor):
    """Host levels whose VE level is factor * (VE level of s), and the input scale alpha(s')/alpha(s).

    VE: (factor s, 1). Flow: t' = f t / (1 + (f - 1) t) and scale 1 / (1 + (f - 1) t), exact at f = 1
    and finite at t = 1 (t' = 1, scale 1/f). s and factor are float64 [B] tensors.
    """
    if not space.flow:
        return factor * s, torch.ones_like(s)
    den = 1 + (factor - 1) * s
    return factor * s / den, 1 / den


def query(model, space, x, sigma, factor, extra_args):
    """D(x; sigma) asked at the per-sample level whose VE level is factor * that of sigma ([B] tensors);
    the state is rescaled to that level's alpha, so the answer is the x0 prediction of the same VE state."""
    s = sigma.detach().to("cpu", F64).reshape(-1).expand(x.shape[0])
    s_new, scale = scaled_levels(space, s, factor)
    if not torch.equal(scale, torch.ones_like(scale)):
        x = x * _bcast(scale, x).to(x.device, x.dtype)
    return model(x, s_new.to(sigma.device, sigma.dtype), **extra_args)


def ve_view(space, s):
    """1 / alpha and the VE level sigma / alpha of host levels s (float64 [B]), so that the VE state of x is
    x / alpha; rows at a flow's s = 1 (alpha = 0) are marked invalid (and get 1 / alpha = 1)."""
    alpha = 1 - s if space.flow else torch.ones_like(s)
    ok = alpha > 0
    safe = torch.where(ok, alpha, torch.ones_like(alpha))
    return 1 / safe, s / safe, ok


def level_estimate(x, d, kind, inv_alpha=None):
    """Per-sample sigma^2 estimate (float64 [B], CPU) of the VE state y = x * inv_alpha (inv_alpha float64 [B],
    default 1) with x0 prediction d: `stein` <y - d, y - mean(y)> / N = (<r, x> - mean(x) sum(r)) inv_alpha / N,
    r = y - d; `residual` ||r||^2 / N. In at least float32; y itself is not formed."""
    wide = torch.promote_types(x.dtype, torch.float32)
    xf = x.flatten(1).to(wide)
    a = torch.ones(x.shape[0], dtype=F64) if inv_alpha is None else inv_alpha
    a = a.to(x.device, wide)
    r = xf.mul(a[:, None]).sub_(d.flatten(1).to(wide))
    n = max(xf.shape[1], 1)
    if kind == "residual":
        est = torch.linalg.vecdot(r, r)
    else:
        est = (torch.linalg.vecdot(r, xf) - xf.mean(1) * r.sum(1)) * a
    return est.to("cpu", F64) / n


class Tracker:
    """A model wrapper that queries the model at each sample's tracked level (state kept for one run).

    Attribute access falls through to the wrapped model, so host samplers that read e.g.
    `model.inner_model` keep working.
    """

    def __init__(self, model, space, track="stein", track_window=0.1, track_iterations=0, eps_scale=1.003):
        self.model, self.space, self.kind = model, resolve(space), track
        self.window, self.iterations, self.eps_scale = track_window, track_iterations, eps_scale
        self.rho = None
        self.history = []

    def __getattr__(self, name):
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)

    def __call__(self, x, sigma, **extra_args):
        s = sigma.detach().to("cpu", F64).reshape(-1).expand(x.shape[0])
        inv_alpha, sig_ve, ok = ve_view(self.space, s)
        if self.kind == "epsilon":
            d = self.model(x, sigma, **extra_args)
            wide = torch.promote_types(x.dtype, torch.float32)
            y = x.to(wide) * _bcast(inv_alpha, x).to(x.device, wide)
            scaled = torch.lerp(d.to(wide), y, 1 - 1 / self.eps_scale)
            return torch.where(_bcast(ok, x).to(x.device), scaled.to(d.dtype), d)
        rho = torch.ones_like(s) if self.rho is None else self.rho
        lo, hi = math.exp(-self.window), math.exp(self.window)
        for _ in range(self.iterations + 1):
            d = query(self.model, self.space, x, sigma, rho, extra_args)
            self.history.append(rho)
            est = level_estimate(x, d, self.kind, inv_alpha)
            rho_est = (est.clamp_min(0).sqrt() / sig_ve).nan_to_num(lo).clamp(lo, hi)
            rho = torch.where(ok, rho_est, rho)
        self.rho = rho
        return d


def with_noise_tracking(fn, space="ve", **options):
    """Sampler function -> sampler function whose model queries follow each sample's tracked level.

    `space` is the level convention of the model the sampler will be given ('ve' or 'flow'); a `space`
    passed at call time overrides it and is forwarded to `fn`. Options are TRACK_PARAMS (checked).
    """
    opts = check_params("noise tracking", TRACK_PARAMS, options)
    base_space = resolve(space)

    def tracked(model, x, sigmas, extra_args=None, callback=None, disable=None, **kw):
        sp = resolve(kw["space"]) if "space" in kw else base_space
        if opts["track"] != "off":
            model = Tracker(model, sp, **opts)
        return fn(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **kw)

    return tracked
