"""Parametrisations of the host's noise level s: x_s = alpha(s) * x0 + sigma(s) * noise.

VE (EPS, V, EDM models): alpha = 1, sigma = s.  Rectified flow (CONST models): alpha = 1 - s, sigma = s.
Every solver is written once in terms of alpha, sigma and lambda = log(alpha / sigma); the VE view of
any state is y = x / alpha at level sigma_ve = sigma / alpha = exp(-lambda) (SCIENCE.md, notation).
"""
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Space:
    name: str
    flow: bool

    def alpha(self, s: float) -> float:
        return 1.0 - s if self.flow else 1.0

    def sigma(self, s: float) -> float:
        return s

    def max_level(self) -> float:
        return 1.0 if self.flow else math.inf

    def lam(self, s: float) -> float:
        """lambda = log(alpha / sigma); +inf at s = 0, -inf at a flow's s = 1, never log(0)."""
        a = self.alpha(s)
        if s == 0.0:
            return math.inf
        if a == 0.0:
            return -math.inf
        return math.log(a) - math.log(s)

    def to_ve(self, s: float) -> float:
        """The VE level exp(-lambda) of host level s."""
        a = self.alpha(s)
        return math.inf if a == 0.0 else s / a

    def from_ve(self, sigma_ve: float) -> float:
        """The host level whose VE level is sigma_ve."""
        if not self.flow:
            return sigma_ve
        return 1.0 if math.isinf(sigma_ve) else sigma_ve / (1.0 + sigma_ve)


VE = Space("ve", flow=False)
FLOW = Space("flow", flow=True)
SPACES = {"ve": VE, "flow": FLOW}


def resolve(space) -> Space:
    """A Space from a Space or its name ('ve' or 'flow')."""
    if isinstance(space, Space):
        return space
    if space not in SPACES:
        raise ValueError(f"space must be one of {sorted(SPACES)}, got {space!r}")
    return SPACES[space]
