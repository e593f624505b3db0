"""Shaped schedules: polyexponential, a critical-window schedule and a Poisson-flow-aligned schedule.

Host levels s are VE sigma (EPS/V/EDM models) or flow time t in [0, 1] (CONST models); the two that
need the physics (a noise level sigma_c, the PFGM++ kernel) read the parametrisation through `space`.
"""
import math

import torch

from ..samplers.registry import Param
from .basic import _ramp
from .registry import first_tie, register

F64 = torch.float64
RHO = Param(7.0, 0.5, 20.0, 0.1, "Curvature of the Karras base schedule (EDM: 7).")


@register("polyexponential", params={"rho": Param(1.0, 0.1, 10.0, 0.1, "1 = exponential; larger spends more steps at low noise.")})
def polyexponential(n, sigma_min, sigma_max, rho):
    """k-diffusion's polyexponential: log sigma_i = log sigma_min + (1 - i/(n-1))^rho (log sigma_max - log sigma_min).

    For rho > 1 the ramp flattens at sigma_min (the last gap is (1/(n-1))^rho of the log range), so a large rho
    at many steps repeats levels in float32: a ValueError naming rho and the largest rho that works there.
    """
    lo, hi = math.log(sigma_min), math.log(sigma_max)

    def levels(r):
        return (lo + (1 - _ramp(n)) ** r * (hi - lo)).exp()

    if first_tie(levels(rho)) is not None and first_tie(levels(1.0)) is None:
        ok, bad = 1.0, rho
        for _ in range(20):
            mid = (ok + bad) / 2
            ok, bad = (mid, bad) if first_tie(levels(mid)) is None else (ok, mid)
        raise ValueError(f"rho: polyexponential with rho = {rho} at {n} steps on [{sigma_min}, {sigma_max}] repeats levels near "
                         f"sigma_min in float32; rho must be in [0.1, {math.floor(ok * 100) / 100}] at {n} steps")
    return levels(rho)


def _log_ve(space, levels):
    """log of the VE level sigma / alpha of host levels (+inf at a flow's t = 1)."""
    return levels.log() - (1 - levels).log() if space.flow else levels.log()


def _quantiles(cdf, u, n):
    """Positions u where the increasing cdf(u) (cdf[0] = 0, cdf[-1] = 1) crosses i/(n-1), by linear interpolation."""
    q = _ramp(n)
    k = torch.searchsorted(cdf, q).clamp(1, len(u) - 1)
    lo, hi = cdf[k - 1], cdf[k]
    w = ((q - lo) / (hi - lo).clamp_min(1e-300)).clamp(0, 1)
    return u[k - 1] + w * (u[k] - u[k - 1])


@register("critical_window", params={
    "t_c": Param(0.5, 0.01, 0.99, 0.01, "Critical level as normalised time t = sigma/(1 + sigma) of the VE level "
                                        "(a flow model's own t): 0.5 is sigma = 1, SNR 1 for unit-variance latents."),
    "share": Param(0.5, 0.01, 0.99, 0.01, "Share of the steps moved into the window around t_c (0 would be Karras)."),
    "width": Param(0.5, 0.05, 3.0, 0.05, "Half-width b of the window in log sigma (Gaussian in log sigma)."),
    "rho": RHO})
def critical_window(n, sigma_min, sigma_max, t_c, share, width, rho, space):
    """Karras positions warped so that `share` of the steps sit in a Gaussian window in log sigma around sigma_c:
    u_i = F^-1(i/(n-1)), F(u) = (1 - share) u + share G(u), G the window's mass above the Karras level at u.

    sigma_c = t_c / (1 - t_c) in VE units (SCIENCE.md §2: the speciation level sigma_c^2 = Lambda, the top
    data covariance eigenvalue; flow t = sigma/(1 + sigma)). Levels follow the Karras map of u, so the ends
    are exactly sigma_max and sigma_min and the order is strictly descending.
    """
    if n == 1:
        return torch.tensor([sigma_max], dtype=F64)
    u = torch.linspace(0, 1, 8193, dtype=F64)
    log_ve = _log_ve(space, karras_at(u, sigma_min, sigma_max, rho))
    z = (log_ve - math.log(t_c / (1 - t_c))) / width
    mass = torch.special.ndtr(z)
    total = float(mass[0] - mass[-1])
    if total < 1e-9:
        raise ValueError(f"t_c: the window around t_c = {t_c} (width {width}) lies outside this model's range [{sigma_min}, {sigma_max}]")
    cdf = (1 - share) * u + share * (mass[0] - mass) / total
    return karras_at(_quantiles(cdf, u, n), sigma_min, sigma_max, rho)


def karras_at(u, sigma_min, sigma_max, rho):
    """The Karras level at positions u in [0, 1] (u = i/(n-1) is the Karras schedule)."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + u * (lo - hi)) ** rho


def kappa_band(D, q):
    """(kappa_lo, kappa_hi): the q and 1 - q quantiles of the PFGM++ scale kappa = sqrt(D / chi2_D), from the
    Wilson-Hilferty chi-square quantile chi2_p ~ D (1 - 2/(9D) + z_p sqrt(2/(9D)))^3; (1, 1) at D = inf."""
    if math.isinf(D):
        return 1.0, 1.0
    z = float(torch.special.ndtri(torch.tensor(1 - q, dtype=F64)))
    c = 2 / (9 * D)
    chi = [D * max(1 - c + s * z * math.sqrt(c), 1e-3) ** 3 for s in (1, -1)]
    return math.sqrt(D / chi[0]), math.sqrt(D / chi[1])


@register("poisson_aligned", params={
    "D": Param(2048.0, 1.0, None, 1.0, "PFGM++ augmented dimensions of the Poisson-flow sampler (r = sigma sqrt(D)); inf = diffusion."),
    "q": Param(0.01, 0.0001, 0.25, 0.001, "Share of samples whose last per-sample level kappa sigma may fall below the model's sigma_min."),
    "rho": RHO})
def poisson_aligned(n, sigma_min, sigma_max, D, q, rho, space):
    """Karras in r = sigma sqrt(D) (the same spacing as in sigma) down to sigma_min / kappa_lo, not sigma_min.

    The Poisson-flow sampler queries the model at kappa sigma per sample, kappa = sqrt(D/chi2_D) (PFGM++, arXiv
    2302.04265; SCIENCE.md §1): with the floor raised by 1/kappa_lo (VE units), all but a share q of the
    samples end at a level the model was trained on; the start stays sigma_max (high noise forgives).
    """
    lo, _ = kappa_band(D, q)
    bottom = space.from_ve(space.to_ve(sigma_min) / lo)
    if not bottom < sigma_max:
        raise ValueError(f"D: with D = {D} and q = {q} the aligned floor {bottom} is not below sigma_max = {sigma_max}")
    return karras_at(_ramp(n), bottom, sigma_max, rho)
