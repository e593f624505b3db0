"""Adams predictor-corrector on the flow velocity, in the schedule's own step variable: the training-free default.

Why iPNDM, DEIS-tAB and gradient estimation beat exponential integrators at 5-10 calls (measured on the lab's
development problems, docs/convergent): they integrate the velocity d = (x - D)/sigma, which along an ODE path
is nearly constant (the paths are nearly straight lines, the geometry AMED builds on, arXiv 2312.00094), so a
low-degree extrapolation of d is accurate over large steps, where the x0 prediction D of an exponential
integrator swings from the data mean to the sample. What spoils them is the extrapolation variable: the exact
variable-step Adams-Bashforth in sigma (the Lagrange polynomial through the last q velocities) overshoots on
Karras or exponential grids, whose steps shrink by a factor 3-5 per step (3-5x the best baseline's error on
the development problems); ComfyUI's ipndm_v is better there only because its coefficients are not the exact
ones. Here every polynomial is in the step index u, the variable in which the schedule itself is smooth:

- state and velocity in the rectified-flow view of any host (z = alpha_f y, t = sigma_VE / (1 + sigma_VE),
  v = (z - D)/t, dz/dt = v; a flow host's own coordinates, the start t = 1 included): the paths are
  straightest there and the velocity is finite from pure noise to the data;
- the predictor z_{i+1} = z_i + sum_k w_k v_k with w_k = int_i^{i+1} L_k(u) T'(u) du, L_k the Lagrange basis
  of the last q indices and T the polynomial through the levels t at those indices and i + 1: variable-step
  Adams-Bashforth of order q in u, for any step sizes;
- after each call at a new level, the step to it is redone with its velocity as one more node (no extra
  call; the Adams-Moulton corrector, as UniPC, arXiv 2302.04867, in PEC mode: the history keeps the velocity
  evaluated at the predicted state): order q + 1 in the bulk. The corrector equation is solved for the
  velocity's linear part z/t (one Newton step with the Jacobian I/t, D frozen; `correct`): where the
  posterior has collapsed (D nearly constant, a memorising model at small sigma) v = (z - D)/t is stiff with
  rate 1/t, and the explicit corrector multiplied the predictor's error by |w_i|/t_i (up to 12 on the
  last steps of a VE Karras grid; 105x the best baseline's error on memorise16); solved, it damps it.
  The corrector's levels are kept `monotone` on its step, so that the divisor of that solve is above 1.
  The velocity of the first call after the start is evaluated at an Euler prediction (error O(h^2)), so
  the start has local error O(h^3) and the global order is min(q + 1, 3) for any one-call-per-step start:
  q = 2 (the default) is of order 3 at every step count; q = 3 measures a higher slope on 24-64 steps
  (pre-asymptotic) and tends to 3.

Chosen on the development problems (lab/bench.py DEVELOPMENT) among: view VE or flow; polynomial variable
sigma, log sigma, t or the step index; order 2-4; corrector on the warm-up steps or on every step; velocity
at the predicted or the corrected state (the flow view, the index and the corrector on every step won by wide
margins, on gaussian, mixture and field); then the corrector explicit or solved for v's linear part (solved won,
on memorise16), the predictor's order chosen per step by which order would have landed nearer the corrected
state (no gain), the level polynomial kept monotone in the predictor too (better on gaussian, mixture and
field, worse on gaussian96 and mixture32, so not shipped), and the history's velocity at the predicted state
(shipped) or at the corrected one, v(z_c) = v(z_p) + (I - dD/dz) delta / t with dD/dz taken as 0, as a fixed
fraction, or from secants between calls: each helped on memorise16 and lost on the Gaussians, whose
corrections delta lie where D follows z; from Stein's identity E|x - D|^2 = sigma^2 (N - tr dD/dx), as the
residual's share of the start's noise to the fourth power, it lowered the synthetic problems' geometric mean
(not field's) and lost on the trained network with CFG (guided D is no posterior mean: the share grew past 1).
Only dD/dz along delta, a Jacobian-vector product (another call), would choose. q = 3 is an option, not the
default: it does not show its proven order on the contract's grids, and with the solved corrector it scores
below q = 2 on the development problems too.
Reported on held-out problems that took no part (docs/convergent, `held-out` column). The last step to 0 is DDIM.
"""

import numpy as np

from .registry import Param, register
from .space import FLOW
from .stepping import Stepper

GAUSS_U, GAUSS_W = np.polynomial.legendre.leggauss(8)


def basis(nodes, u):
    """Lagrange basis of `nodes` at points u: [len(nodes), len(u)]."""
    out = np.ones((len(nodes), len(u)))
    for k, a in enumerate(nodes):
        for b in nodes:
            if b != a:
                out[k] *= (u - b) / (a - b)
    return out


def slopes(nodes, u):
    """Derivatives of the Lagrange basis of `nodes` at points u: [len(nodes), len(u)]."""
    out = np.zeros((len(nodes), len(u)))
    for k, a in enumerate(nodes):
        for j, b in enumerate(nodes):
            if j != k:
                term = np.full(len(u), 1.0 / (a - b))
                for c in nodes:
                    if c != a and c != b:
                        term *= (u - c) / (a - c)
                out[k] += term
    return out


def weights(nodes, levels, i: int) -> list:
    """w_k = int_i^{i+1} L_k(u) T'(u) du for the velocity nodes `nodes` (step indices) and T the polynomial
    through {index: level t} `levels` (8-point Gauss-Legendre: exact to degree 15)."""
    u = i + (GAUSS_U + 1) / 2
    idx = sorted(levels)
    dt = np.asarray([levels[k] for k in idx]) @ slopes(idx, u)
    return (basis(nodes, u) @ (GAUSS_W / 2 * dt)).tolist()


def advance(z, history, levels, i: int):
    """z + sum_k w_k v_k over history [(index, v), ...] from index i to i + 1 (`weights`)."""
    w = weights([k for k, _ in history], levels, i)
    out = z.clone()
    for wk, (_, vk) in zip(w, history):
        out.add_(vk, alpha=wk)
    return out


def monotone(levels, i: int) -> dict:
    """The levels {index: t} nearest the step i -> i + 1 whose interpolating polynomial T is monotone on it
    (no root of T' inside): the farthest level is dropped until it is (two levels: T linear). Where the
    schedule's steps shrink fast (a 5-step VE exponential grid's last step: 0.0275 -> 0.002) the polynomial
    through three levels dips below 0 inside the step and the weights integrate over levels outside it."""
    idx = sorted(levels)
    while len(idx) > 2:
        slope = np.polynomial.Polynomial.fit(idx, [levels[k] for k in idx], len(idx) - 1).deriv()
        if not any(abs(r.imag) < 1e-12 and i < r.real < i + 1 for r in slope.roots()):
            break
        idx.remove(max(idx, key=lambda k: abs(k - i - 0.5)))
    return {k: levels[k] for k in idx}


def correct(z, history, new, d, t, i: int):
    """The Adams-Moulton step from index i - 1 to i through history [(index, v), ...] and the new node (i, v_i),
    with v_i's linear part taken at the corrected state: z_c = R + w_i (z_c - d)/t_i, so
    z_c = (R - w_i d / t_i) / (1 - w_i / t_i), R = z + sum_{k<i} w_k v_k.

    The corrector equation is implicit in v_i = (z_c - D(z_c))/t_i; this is one Newton step for it from the
    predicted state with the Jacobian of v's explicit part, I/t_i (D frozen at the predicted state). Its
    local error differs from the exact corrector's by w_i (D(z_c) - D(z_p))/t_i = O(h^{q+2}), so the order is
    kept; the stiff part z/t is damped as by an implicit method instead of amplified by |w_i|/t_i (above 1
    on the last steps of 6 of the bench's 8 VE grids, Karras and exponential with 5-10 steps; 12 on 5 Karras
    steps). With the levels `monotone` on the step, w_i = int L_i T' du has the sign of t_i - t_{i-1} < 0 (L_i >= 0 there),
    so the divisor 1 - w_i/t_i is above 1."""
    nodes = history + [new]
    w = weights([k for k, _ in nodes], monotone({k: t[k] for k, _ in nodes}, i - 1), i - 1)
    out = z.clone()
    for wk, (_, vk) in zip(w, history):
        out.add_(vk, alpha=wk)
    return out.add_(d, alpha=-w[-1] / t[i]).div_(1.0 - w[-1] / t[i])


@register("adams", order=3, nfe_per_step=1, params={
    "order": Param(2, 1, 3, 1, "Order of the predictor (past velocities it extrapolates); the corrector adds one: "
                               "1 -> 2, 2 -> 3; the start caps the order at 3 (3 is sharper at 5-10 calls on some problems)."),
})
def sample_adams(model, x, sigmas, extra_args=None, callback=None, disable=None, space="ve", order=2):
    """Adams PC on v = (z - D)/t in the flow view: z' = z + sum_k w_k v_k, w_k = int L_k(u) t'(u) du in the step index u.

    One call per step; the predictor extrapolates the last `order` velocities, the corrector redoes each step
    with the velocity at its end (no extra call). VE and flow hosts give the same sample; the last step to 0 is DDIM.
    """
    run = Stepper(model, x, sigmas, extra_args, callback, disable, space)
    t = [FLOW.from_ve(run.space.to_ve(s)) for s in run.s]
    history, prev = [], None
    for i in run:
        d = run.denoise(x, run.s[i])
        scale = t[i] / run.s[i]
        z = x * scale
        v = (z - d) / t[i]
        if prev is not None:
            z = correct(prev, history, (i, v), d, t, i)
            x = z / scale
        run.report(i, x, d)
        history = (history + [(i, v)])[-order:]
        if t[i + 1] == 0:
            x, prev = run.ddim(x, d, i), None
        else:
            prev = z
            nodes = [k for k, _ in history] + [i + 1]
            x = advance(z, history, {k: t[k] for k in nodes}, i) * (run.s[i + 1] / t[i + 1])
    return x
