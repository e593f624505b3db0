"""Euler / DDIM: the first-order step, exact when the x0 prediction is constant."""
from .registry import register
from .stepping import Stepper


@register("euler", order=1, nfe_per_step=1)
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, space="ve"):
    """Euler (DDIM): x' = (sigma'/sigma) x + (alpha' - alpha sigma'/sigma) D(x; s). One call per step, order 1."""
    run = Stepper(model, x, sigmas, extra_args, callback, disable, space)
    for i in run:
        d = run.denoise(x, run.s[i])
        run.report(i, x, d)
        x = run.ddim(x, d, i)
    return x
