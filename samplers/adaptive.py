"""Error-controlled exponential predictor-corrector with a PI step-size controller and a model-call budget.

Each step is the pair of `pc` (multistep predictor of order p, corrector of order p + 1 from the x0
prediction at the new level, one model call); their difference is the embedded error estimate
(Milne's device, as in UniPC's adaptive use, Zhao et al. 2023), measured per sample in the norm
err = rms((x_c - x_p) / (atol + rtol max(|x_p|, |x_c|))) in the VE view. A step is accepted when err <= 1 and the next
step is h' = h * 0.9 err^(-0.7/k) err_prev^(0.4/k), k = p + 1, clipped to [0.2, 2.5] (PI control,
Gustafsson 1991; Soederlind 2002); a rejected step retries with h * max(0.2, 0.9 err^(-1/k)).
Every level of `sigmas` is hit exactly (callbacks, split schedules and partial denoise keep working); the
last step to 0 is explicit (DDIM). Each sample of a batch has its own steps (per-sample levels in one
batched model call), so a sample's result does not depend on the batch. When the calls left only
cover the schedule levels still ahead, the solver steps to them and accepts: at most
max(budget, len(sigmas) - 1) calls. As rtol, atol -> 0 the result converges to the exact ODE solution.
"""
import math

import torch

from .multistep import advance, push
from .registry import Param, register
from .stepping import Stepper, ddim


def _norm(x_c, x_p, alpha, rtol, atol):
    """rms((x_c - x_p) / (atol + rtol max(|x_p|, |x_c|))) in the VE view x / alpha, so VE and flow runs agree."""
    scale = torch.maximum(x_p.abs(), x_c.abs()).mul_(rtol / alpha).add_(atol)
    return float(((x_c - x_p) / (alpha * scale)).double().pow(2).mean().sqrt())


@register("exp_adaptive", order=3, nfe_per_step=None, params={
    "order": Param(2, 1, 3, 1, "Predictor order p; the corrector (order p + 1) is the result and the difference is "
                               "the error estimate."),
    "rtol": Param(0.01, 1e-8, 1.0, 0.001, "Relative tolerance of the local error (per element, RMS over the "
                                         "latent). Smaller = more steps and closer to the exact ODE solution."),
    "atol": Param(0.002, 1e-10, 1.0, 0.001, "Absolute tolerance of the local error, in latent units."),
    "budget": Param(40, 1, 10000, 1, "Most model calls for the run (never fewer than one per schedule step); "
                                     "steps are stretched to finish within it."),
})
def sample_exp_adaptive(model, x, sigmas, extra_args=None, callback=None, disable=None, space="ve", order=2,
                        rtol=0.01, atol=0.002, budget=40):
    """Adaptive exponential PC: per-sample steps in lambda chosen by a PI controller on the PC error estimate.

    Between the levels of `sigmas` the solver takes as many steps as rtol/atol ask for, within `budget`
    model calls (module docstring). A flow model's first step from s = 1 starts at sigma_VE = 10 at most.
    """
    run = Stepper(model, x, sigmas, extra_args, callback, disable, space)
    sp, lam, n, b = run.space, run.lam, len(run.s) - 1, x.shape[0]
    last = n - 1 if math.isinf(lam[n]) else n
    k = order + 1
    level = [run.s[0]] * b
    cur, nxt, step, err_prev = [lam[0]] * b, [1] * b, [0.4] * b, [1.0] * b
    history = [[] for _ in range(b)]
    reached = {}

    def query(x, levels):
        return run.model(x, torch.tensor(levels, dtype=x.dtype, device=x.device), **run.extra_args)

    def arrive(j, i, xj, d):
        """Sample j is at schedule level i; report level i (the states there, and the latest model output d)
        once every sample has been there, in order."""
        if i == n:
            return
        reached.setdefault(i, [None] * b)[j] = xj
        while reached and all(v is not None for v in reached[min(reached)]):
            idx = min(reached)
            run.report(idx, torch.stack(reached.pop(idx)), d)

    d = query(x, level)
    calls = 1
    for j in range(b):
        history[j] = push([], cur[j], d[j], order)
        arrive(j, 0, x[j], d)
    x = x.clone()
    while any(nxt[j] <= last for j in range(b)):
        left = budget - calls
        target, forced = list(cur), [False] * b
        for j in range(b):
            if nxt[j] > last:
                continue
            goal = lam[nxt[j]]
            if math.isinf(cur[j]):
                t = min(goal, -math.log(10.0) + math.log(step[j] / 0.4))
            else:
                t = min(goal, cur[j] + max(step[j], (lam[last] - cur[j]) / max(left, 1)))
            if left <= last - nxt[j] + 1:
                t, forced[j] = goal, True
            target[j] = t
        x_p, x_c = x.clone(), x.clone()
        for j in range(b):
            if target[j] != cur[j]:
                s, t = level[j], sp.from_ve(math.exp(-target[j]))
                x_p[j] = advance(sp, x[j], history[j], cur[j], target[j], s, t)
        d = query(x_p, [sp.from_ve(math.exp(-t)) if t != c else lv for t, c, lv in zip(target, cur, level)])
        calls += 1
        for j in range(b):
            if target[j] == cur[j]:
                continue
            h = target[j] - cur[j]
            s, t = level[j], sp.from_ve(math.exp(-target[j]))
            x_c[j] = advance(sp, x[j], history[j] + [(target[j], d[j])], cur[j], target[j], s, t)
            err = max(_norm(x_c[j], x_p[j], sp.alpha(t), rtol, atol), 1e-10)
            accept = err <= 1 or forced[j]
            if math.isinf(h):
                step[j] = 0.4 if accept else step[j] * max(0.2, 0.9 / err)
            elif accept:
                step[j] = h * max(0.2, min(2.5, 0.9 * err ** (-0.7 / k) * err_prev[j] ** (0.4 / k)))
            else:
                step[j] = h * max(0.2, 0.9 * err ** (-1 / k))
            if not accept:
                continue
            err_prev[j] = err
            x[j] = x_c[j]
            cur[j], level[j] = target[j], t
            history[j] = push(history[j], target[j], d[j], order)
            if target[j] == lam[nxt[j]]:
                level[j] = run.s[nxt[j]]
                arrive(j, nxt[j], x[j], d)
                nxt[j] += 1
    if last == n - 1:
        x = torch.stack([ddim(sp, x[j], history[j][-1][1], run.s[last], 0.0) for j in range(b)])
    return x
