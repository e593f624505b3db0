"""Closed-form schedules: n levels from sigma_max down to sigma_min (the final 0 is appended by the registry)."""
import torch

from ..samplers.registry import Param
from .registry import register


def _ramp(n):
    return torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)


@register("karras", params={"rho": Param(7.0, 0.5, 20.0, 0.1, "Curvature: larger spends more steps at low noise (EDM: 7).")})
def karras(n, sigma_min, sigma_max, rho):
    """Karras et al. 2022: sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + _ramp(n) * (lo - hi)) ** rho


@register("exponential")
def exponential(n, sigma_min, sigma_max):
    """Uniform in log sigma: sigma_i = exp(log sigma_max + i/(n-1) (log sigma_min - log sigma_max))."""
    lo, hi = torch.tensor([sigma_min, sigma_max], dtype=torch.float64).log()
    return (hi + _ramp(n) * (lo - hi)).exp()


@register("linear_t")
def linear_t(n, sigma_min, sigma_max):
    """Uniform in the host level: sigma_i = sigma_max + i/(n-1) (sigma_min - sigma_max); for flow models, linear in t."""
    return sigma_max + _ramp(n) * (sigma_min - sigma_max)
