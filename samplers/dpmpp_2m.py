"""DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095), in (alpha, sigma, lambda) form."""
import math

import torch

from .registry import register
from .stepping import Stepper


@register("dpmpp_2m", order=2, nfe_per_step=1)
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None, space="ve"):
    """DPM-Solver++(2M): x' = (sigma'/sigma) x + alpha'(1 - e^-h)[(1 + 1/2r) D_i - (1/2r) D_{i-1}], r = h_{i-1}/h.

    One call per step, order 2. The first step, the last step to 0 and any step after an infinite one
    (a flow model's start at s = 1) are first order.
    """
    run = Stepper(model, x, sigmas, extra_args, callback, disable, space)
    d_prev, h_prev = None, math.inf
    for i in run:
        d = run.denoise(x, run.s[i])
        run.report(i, x, d)
        h = run.h(i)
        if d_prev is None or not math.isfinite(h) or not math.isfinite(h_prev):
            x = run.ddim(x, d, i)
        else:
            x = run.ddim(x, torch.lerp(d_prev, d, 1 + h / (2 * h_prev)), i)
        d_prev, h_prev = d, h
    return x
