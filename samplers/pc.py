"""Exponential multistep predictor-corrector (UniPC-style, Zhao et al. 2023, arXiv 2302.04867)."""
from .multistep import solve
from .registry import Param, register
from .stepping import Stepper


@register("exp_pc", order=3, nfe_per_step=1, params={
    "order": Param(2, 1, 3, 1, "Order of the predictor (past x0 predictions it extrapolates); the corrector "
                               "adds one: 1 -> 2, 2 -> 3, 3 -> 4 in the bulk (a cold start caps the asymptotic order at 3)."),
    "corrector": Param(True, tooltip="Redo each step with the x0 prediction at the new level (no extra model "
                                     "call; one order more). Off = the plain multistep predictor."),
})
def sample_exp_pc(model, x, sigmas, extra_args=None, callback=None, disable=None, space="ve", order=2, corrector=True):
    """Predictor-corrector: multistep predictor of order p, then x' = (sigma'/sigma) x + alpha'(1 - e^-h) D~_c.

    D~_c integrates the polynomial through the p past x0 predictions and the new one D(x'_pred; s'), which the
    next step needs anyway: order p + 1 at one call per step (multistep.solve). The last step to 0 is DDIM.
    """
    run = Stepper(model, x, sigmas, extra_args, callback, disable, space)
    return solve(run, x, order, "all" if corrector else "none")
