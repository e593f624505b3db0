"""Heun's method of EDM (Karras et al. 2022, Alg. 1), written in (alpha, sigma, lambda) form."""
import math

from .registry import register
from .stepping import Stepper


@register("heun", order=2, nfe_per_step=2)
def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, space="ve"):
    """Heun (EDM): Euler predictor, then x' = x'_euler + alpha' (e^h - 1)/2 (D(x'_euler; s') - D(x; s)). Order 2.

    In the VE view this is the trapezoidal rule x' = x + (sigma' - sigma)(d + d')/2. The last step to 0
    and a flow model's first step from s = 1 (where the VE step is infinite) are Euler steps.
    """
    run = Stepper(model, x, sigmas, extra_args, callback, disable, space)
    for i in run:
        d = run.denoise(x, run.s[i])
        run.report(i, x, d)
        x_euler = run.ddim(x, d, i)
        h = run.h(i)
        if not math.isfinite(h):
            x = x_euler
            continue
        d_next = run.denoise(x_euler, run.s[i + 1])
        x = x_euler.add_(d_next - d, alpha=run.space.alpha(run.s[i + 1]) * math.expm1(h) / 2)
    return x
