"""A solver calibrated to the model at hand: its K levels and per-step multistep coefficients (pure torch).

Form (host coordinates, x = alpha x0 + sigma n, one model call D_j = D(x_j; s_j) per level): step i is
    x_{i+1} = sum_k a_ik x_{i-k} + sum_k b_ik D_{i-k}        (k < STATES for a, k < PREDICTIONS for b),
a linear multistep method whose coefficients satisfy the first-order (consistency) conditions
    sum_k a_ik alpha_{i-k} + sum_k b_ik = alpha_{i+1},        sum_k a_ik sigma_{i-k} = sigma_{i+1},
that is, the step is exact whenever D is constant (the ODE's solution is then x = alpha c + sigma r).
DDIM, DPM-Solver++ / exp_multistep (a = (sigma'/sigma, 0, ..)) and iPNDM (Adams-Bashforth in sigma on
d = (x - D)/sigma, which mixes states and predictions) are all of this form.

Calibration (`calibrate_solver`, at most BUDGET model calls in all, the seeds batched):
1. Reference: exp_multistep of order REFERENCE_ORDER over REFERENCE_CALLS levels (`reference_grid`: Karras in
   VE, uniform in lambda in flow), its states x*(s_j) recorded at every level, in the form of
   `calibrate.Reference` for its level search; a second solve at half the calls checks it: their end states'
   difference d_1 (relative; RMS over the starts, each capped at ROBUST times their median: `check_difference`)
   is the reference's error estimate (`reference_error`, docs/calibrated).
   Above REFERENCE_TOLERANCE, a third solve at a quarter of the calls gives d_2 = |x_quarter - x_half| and the
   observed ratio r = d_2 / d_1 (2^p at order p), and the estimate becomes Richardson's d_1 / (r - 1). When
   the estimate is still above the tolerance (or r <= 1) it is a ValueError giving the figures. In flow,
   Karras levels in t (the grid before REVISION 2) put all of sigma_VE above 11 into the first step at 50
   levels; where the x0 prediction changes there (the trained digits network, whose noise embedding is
   untrained above sigma_VE of about 80, changes it by 40 % between t = 1 and 0.9995) the reference
   converged at order 1.1-1.4 (r = 2.1-2.6) and was refused with 2 latents (d_1 = 0.043); uniform in lambda,
   d_1 = 0.0053 (docs/calibrated/digits_2).
2. Candidate levels, snapped to the reference grid: the dynamic-programming schedule of
   `schedulers.calibrate.search` for exp_multistep on the surrogate with D held at its reference values
   (no Jacobian gain: the reference makes one call per level), then Karras and polyexponential levels with
   their rho chosen by golden-section search (FAMILIES, FAMILY_TRIALS fits each).
3. Fit, per candidate (nfe real calls): the solver runs on the calibration starts; at step i, with the real
   D_i in hand, theta = theta_base + N z (N an orthonormal basis of the null space of the two conditions,
   theta_base the exp_multistep step of order <= 3) minimises, in closed form,
       sum_b |x_{i+1,b}(theta) - x*_b(s_{i+1})|^2 + lam |z|^2,
   lam chosen by leave-one-seed-out cross-validation (large lam = the base method), each seed weighted
   by `robust_weights` (on the lab's 8-D mixture in VE, one calibration start that had gone to another
   mode than its reference set the coefficients for all the others). The state then moves
   on with the fitted step, so each later step is fitted on the states the solver itself reaches
   (trajectory matching, cf. LD3 arXiv 2405.15506, S4S arXiv 2502.17423, PAS arXiv 2411.06503).
   With more starts than FIT_STARTS, the first FIT_STARTS are fitted and the others run along in the same calls
   with the fitted steps (their reference is solved in the same calls too, its end state only kept).
4. The candidate whose final state is nearest the reference end state (mean over every start) is kept, and its
   levels are refined
   with the calls left (`refine`: pattern search in `level_coordinate`, each trial a step-3 fit), as LD3 learns its levels: at
   5-6 calls the best of the fixed families is often far from the best levels (docs/calibrated).
Every fit after the first takes the states and predictions of the first levels it shares with the best run so
far from that run instead of calling the model (`run`'s `known`: every candidate starts at sigma_max, and a
refinement move keeps the levels above the one it moves), so a move of the level at position p costs nfe - p
calls: more trials fit in BUDGET (REVISION 3; 1.7x as many at 5 calls on the tests' 24-D Gaussian).
A `start` (the levels of a solver with one call fewer, or any schedule of nfe steps) joins the candidates
before step 2 (`nested`: with one level inserted at the midpoint of each interval, in `level_coordinate`): the
search then starts from a solver that already holds the smaller one's levels. The pattern search moves one
level at a time, and the budget K's space holds far better levels than it finds from the fixed families
(docs/calibrated/chain/lab: on the lab's Gaussian in VE, 8 calls 4.8e-4 alone against 7.7e-5 chained from 5).
Calibrations that share `reference` (such a chain: lab/studies/calibrated.py `chained`, the node's chain_from)
make step 1 once; each is charged its calls within BUDGET all the same, so it finds the solver it finds alone.
"""
import json
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..schedulers import REGISTRY as SCHEDULERS
from ..schedulers import calibrate as reference_tools
from ..schedulers.registry import check_range
from .multistep import sample_exp_multistep, weights
from .space import resolve
from .stepping import Stepper

F64 = torch.float64
NFE_RANGE = (3, 16)
BUDGET = 400
REFERENCE_CALLS = 100
REFERENCE_ORDER = 4
REFERENCE_TOLERANCE = 2e-2
STATES = 3
PREDICTIONS = 4
BASE_ORDER = 3
ROBUST = 3.0
FIT_STARTS = 32
"""Calibration starts whose reference states are kept at every reference level and fitted (step 3); the starts
beyond them (x_T's rows from FIT_STARTS on) take part in the reference's end state, its check and every candidate's
score only, at the memory of one state each. On the near-memorising mixtures a few in a hundred starts end in
another mode, and 32 scoring starts hold one or two of them: the level search then picks levels by whether those
cross (memorise28 VE 10 calls: first step 80 -> 2.19, 5.5 % of 512 evaluation seeds crossing against the best
baseline's 2.5 %); 256 scoring starts, 32 of them fitted, lowered the geometric mean ratio of 40 development cells
from 0.10 to 0.07 and the worst from 2.04 to 0.82 (docs/calibrated/scoring, lab/studies/calibrated.py)."""
RIDGE = (1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 1e3)
FAMILIES = {"karras": (1.0, 20.0), "polyexponential": (0.5, 4.0)}
"""Level families and the range of their rho, searched by `golden` section in log rho."""
FAMILY_TRIALS = 6
FORMAT = "samplerlab.calibrated_solver/1"
REVISION = 3
"""The calibration procedure's revision, in the node's cache key, so that a solver cached by an earlier one is
recalibrated (2: the flow reference grid, `reference_grid`; 3: trials reuse the calls of the levels they share
with the best run, so more of them fit in BUDGET); the JSON format of a solver is FORMAT."""


def conditions(space, s, i, n_states, n_preds):
    """The first-order conditions of step i as (C [2, P], rhs [2]) over theta = (a_0.., b_0..)."""
    hist = [s[i - k] for k in range(n_states)]
    c = np.zeros((2, n_states + n_preds))
    c[0, :n_states] = [space.alpha(v) for v in hist]
    c[0, n_states:] = 1.0
    c[1, :n_states] = [space.sigma(v) for v in hist]
    return c, np.array([space.alpha(s[i + 1]), space.sigma(s[i + 1])])


def base_step(space, s, i, n_states, n_preds):
    """exp_multistep's step (DDIM with the theta-polynomial weights of the last min(i + 1, BASE_ORDER)
    predictions; DDIM on the last step to 0) as theta."""
    ratio = space.sigma(s[i + 1]) / space.sigma(s[i])
    theta = np.zeros(n_states + n_preds)
    theta[0] = ratio
    q = min(i + 1, BASE_ORDER, n_preds)
    lam = [space.lam(v) for v in s]
    w = [1.0] if s[i + 1] == 0 or q == 1 else weights([lam[i - k] for k in range(q)], lam[i], lam[i + 1])
    theta[n_states:n_states + len(w)] = np.asarray(w) * (space.alpha(s[i + 1]) - space.alpha(s[i]) * ratio)
    return theta


def null_basis(c):
    """An orthonormal basis [P, P - rank] of {theta : C theta = 0}."""
    _, sv, vh = np.linalg.svd(c)
    rank = int((sv > 1e-12 * sv.max()).sum())
    return vh[rank:].T


def ridge_fit(gram, rhs, sq):
    """z minimising sum_b (z'G_b z - 2 z'g_b + |t_b|^2) + lam |z|^2, lam from RIDGE (relative to the mean
    diagonal) by leave-one-seed-out error; with one seed, the median of RIDGE. Returns (z, lam)."""
    total_g, total_r = gram.sum(0), rhs.sum(0)
    q = total_g.shape[0]
    scale = max(float(np.trace(total_g)) / q, 1e-300)
    eye = np.eye(q)
    b = gram.shape[0]
    if b < 2:
        lam = scale * RIDGE[len(RIDGE) // 2]
        return np.linalg.solve(total_g + lam * eye, total_r), lam
    best = None
    for rel in RIDGE:
        lam = scale * rel
        z = np.linalg.solve(total_g - gram + lam * (b - 1) / b * eye, (total_r - rhs)[..., None])[..., 0]
        err = float((np.einsum("bq,bqr,br->b", z, gram, z) - 2 * np.einsum("bq,bq->b", z, rhs) + sq).sum())
        if best is None or err < best[0]:
            best = (err, lam)
    lam = best[1]
    return np.linalg.solve(total_g + lam * eye, total_r), lam


def robust_weights(norms):
    """Per-seed weights min(1, ROBUST median(r) / r_b) of the residual norms r_b (Huber's weights on the seeds,
    the threshold in units of the median): a calibration start whose state has left for another mode than its
    reference (r_b far above the rest) pulls the fit with the weight of a typical seed, not with r_b^2."""
    return np.minimum(1.0, ROBUST * np.median(norms) / np.maximum(norms, 1e-300))


def fit_step(space, s, i, xs, ds, target):
    """The coefficients of step i (module docstring, step 3) from histories xs, ds (newest first, flat
    float64 [B, N] each) and the reference states `target` [B, N] at level s[i + 1]."""
    c, _ = conditions(space, s, i, len(xs), len(ds))
    theta = base_step(space, s, i, len(xs), len(ds))
    null = null_basis(c)
    if null.shape[1] == 0:
        return theta
    v = torch.stack(xs + ds, 1)  # [B, P, N]
    resid = target - torch.einsum("bpn,p->bn", v, torch.from_numpy(theta))
    a = torch.einsum("bpn,pq->bqn", v, torch.from_numpy(null))
    gram = torch.einsum("bqn,brn->bqr", a, a).numpy()
    rhs = torch.einsum("bqn,bn->bq", a, resid).numpy()
    sq = resid.pow(2).sum(1).numpy()
    w = robust_weights(np.sqrt(sq))
    z, _ = ridge_fit(gram * w[:, None, None], rhs * w[:, None], sq * w)
    return theta + null @ z


def combine(theta, n_states, xs, ds):
    """sum_k a_k xs[k] + sum_k b_k ds[k] (newest first), in the tensors' dtype, float64 scalars."""
    out = xs[0].mul(float(theta[0]))
    for k, coef in enumerate(theta[1:n_states], 1):
        out.add_(xs[k], alpha=float(coef))
    for k, coef in enumerate(theta[n_states:]):
        out.add_(ds[k], alpha=float(coef))
    return out


def history_sizes(i):
    return min(i + 1, STATES), min(i + 1, PREDICTIONS)


@dataclass
class Calibrated:
    """A calibrated solver: host levels `sigmas` (nfe + 1, ending in 0) and per-step coefficients
    (a_0.., b_0..) with the sizes of `history_sizes`."""

    space: str
    sigmas: list
    coefficients: list
    model_calls: int = 0
    reference_error: float = 0.0
    fit_error: float = 0.0
    seconds: float = 0.0
    schedule: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def nfe(self):
        return len(self.sigmas) - 1

    def sample(self, model, x, extra_args=None, callback=None, disable=None):
        """Run the solver from x at sigmas[0] to 0: exactly nfe model calls, callback once per step."""
        return run(self, model, x, extra_args, callback, disable)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        """The solver written by `to_json`; a ValueError if it is another format or breaks the conditions."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
            raise ValueError(f"not a calibrated solver of format {FORMAT}")
        try:
            cal = cls(**data)
        except TypeError as e:
            raise ValueError(f"calibrated solver JSON has unexpected fields: {e}") from None
        check(cal)
        return cal


def check(cal):
    """A ValueError unless cal's levels descend to 0 and every step meets the first-order conditions."""
    space = resolve(cal.space)
    s = [float(v) for v in cal.sigmas]
    if not NFE_RANGE[0] <= len(s) - 1 <= NFE_RANGE[1] or s[-1] != 0 or not all(a > b for a, b in zip(s, s[1:])):
        raise ValueError(f"calibrated sigmas must be {NFE_RANGE[0]}..{NFE_RANGE[1]} + 1 descending levels ending in 0, got {s}")
    if len(cal.coefficients) != len(s) - 1:
        raise ValueError(f"calibrated solver needs {len(s) - 1} coefficient rows, got {len(cal.coefficients)}")
    for i, theta in enumerate(cal.coefficients):
        n_states, n_preds = history_sizes(i)
        if len(theta) != n_states + n_preds or not all(math.isfinite(v) for v in theta):
            raise ValueError(f"calibrated step {i} needs {n_states + n_preds} finite coefficients, got {theta}")
        c, rhs = conditions(space, s, i, n_states, n_preds)
        if not np.allclose(c @ np.asarray(theta), rhs, rtol=1e-6, atol=1e-9):
            raise ValueError(f"calibrated step {i} breaks the first-order conditions: {c @ np.asarray(theta)} != {rhs}")


def run(cal, model, x, extra_args=None, callback=None, disable=None, fit=None, known=(), seen=None):
    """The solver loop; with fit(i, xs, ds) -> theta the coefficients are fitted on the way (calibration).
    known: the (state, prediction) pairs of the first levels of an earlier run from the same x on the same
    first levels, taken instead of model calls; seen, a list, collects this run's pairs."""
    sig = torch.tensor(cal.sigmas, dtype=F64)
    steps = Stepper(model, x, sig, extra_args, callback, disable, cal.space)
    xs, ds = [], []
    for i in steps:
        x, d = known[i] if i < len(known) else (x, steps.denoise(x, steps.s[i]))
        if seen is not None:
            seen.append((x, d))
        steps.report(i, x, d)
        n_states, n_preds = history_sizes(i)
        xs, ds = ([x] + xs)[:n_states], ([d] + ds)[:n_preds]
        theta = fit(i, xs, ds) if fit is not None else cal.coefficients[i]
        x = combine(theta, n_states, xs, ds)
    return x


def flat(x):
    return x.detach().to("cpu", F64).flatten(1)


def snap(grid, levels):
    """Indices into the descending host grid (last 0) nearest each level in log level, strictly increasing,
    the first 0 and the last the final 0; None when the grid cannot hold them."""
    inner = np.log(np.asarray(grid[1:-1]))
    k = len(levels) - 1
    if k > len(grid) - 1:
        return None
    idx = [0]
    for v in levels[1:-1]:
        j = 1 + int(np.abs(inner - math.log(v)).argmin())
        idx.append(max(j, idx[-1] + 1))
    idx.append(len(grid) - 1)
    for p in range(len(idx) - 2, 0, -1):
        idx[p] = min(idx[p], idx[p + 1] - 1)
    return idx if all(a < b for a, b in zip(idx, idx[1:])) and idx[1] > 0 else None


def checked_model(model, counter):
    """model, counting calls and raising a ValueError naming the level where its output is not finite."""

    def call(x, sigma, **kw):
        counter[0] += 1
        d = model(x, sigma, **kw)
        if not bool(torch.isfinite(d).all()):
            raise ValueError(f"the model's output is not finite at level sigma = {float(sigma.reshape(-1)[0]):.6g} "
                             f"(model call {counter[0]} of the calibration)")
        return d

    return call


def reference_grid(calls, sigma_min, sigma_max, space):
    """The reference's host levels [calls + 1] (the last 0): Karras (rho 7) in VE; uniform in lambda for a flow
    model, whose top t = 1 is lambda = -inf: from there one step to t = 1 - 1/calls^2 (shrinking with the
    calls, so that the check sees its error), then calls - 1 levels uniform in lambda down to sigma_min.
    Karras levels in t take all of sigma_VE above t_1 / (1 - t_1) (11 at 50 levels) in one step (module
    docstring, step 1)."""
    if not space.flow:
        return SCHEDULERS["karras"].fn(calls, sigma_min, sigma_max, space=space.name)
    top = space.alpha(sigma_max) == 0
    start = 1 - calls ** -2.0 if top else sigma_max
    if not sigma_min < start:
        raise ValueError(f"sigma_min of a flow model must be < {start:.9g} for a reference of {calls} calls, got {sigma_min}")
    lam = torch.linspace(space.lam(start), space.lam(sigma_min), calls - int(top), dtype=F64)
    return torch.cat([torch.ones(int(top), dtype=F64), torch.sigmoid(-lam), torch.zeros(1, dtype=F64)])


def reference_solve(model, x_T, sigma_min, sigma_max, space, extra_args, calls, callback=None):
    """(host grid [calls + 1], end state): exp_multistep of order REFERENCE_ORDER from x_T on `reference_grid`
    (float32 at least: a bf16 latent would round 1 - 1/calls^2 to 1), callback per step."""
    grid = reference_grid(calls, sigma_min, sigma_max, space).to(torch.promote_types(x_T.dtype, torch.float32))
    return grid, sample_exp_multistep(model, x_T, grid, extra_args=extra_args, callback=callback, disable=True,
                                      space=space.name, order=REFERENCE_ORDER)


def trajectory(model, x_T, sigma_min, sigma_max, space, extra_args, calls, progress):
    """The reference (module docstring, step 1): host grid [M + 1] (`reference_grid`, M = calls), flat states
    [M + 1, F, N] of the first F = min(B, FIT_STARTS) starts at its levels (the last their end states), the end
    states of all B starts [B, N], and the surrogate `calibrate.Reference` of the F (gains 0: D held at its
    reference value per level) for the level search."""
    xs, ds = [], []

    def record(info):
        xs.append(flat(info["x"][:FIT_STARTS]))
        ds.append(flat(info["denoised"][:FIT_STARTS]))
        if progress is not None:
            progress(len(xs), calls)

    grid, end = reference_solve(model, x_T, sigma_min, sigma_max, space, extra_args, calls, record)
    end = flat(end)
    states = torch.stack(xs + [end[:FIT_STARTS]])
    coords = reference_tools.orthonormal_coordinates(torch.cat([states, torch.stack(ds)]))
    ref = reference_tools.Reference(grid.tolist(), coords[:len(states)], coords[len(states):],
                                    torch.zeros(len(ds), len(xs[0]), dtype=F64), calls, states[-1])
    return grid.tolist(), states, end, ref


def golden(f, lo, hi, trials):
    """Golden-section search for the least f(rho), rho in [lo, hi], in log rho, with `trials` >= 2 evaluations;
    returns nothing: the caller keeps what f evaluated (calibrate_solver's fitted candidates)."""
    g = (math.sqrt(5) - 1) / 2
    a, b = math.log(lo), math.log(hi)
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(math.exp(c)), f(math.exp(d))
    for _ in range(trials - 2):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(math.exp(d))


def level_coordinate(grid, space):
    """Per reference level, the coordinate in which `refine` moves levels: the index in a Karras (rho 7) grid of
    the same size and range, which in VE is the grid index itself; in flow (a grid uniform in lambda, a third
    of its levels above t = 0.988) the continuous Karras-in-t index, so that the search's steps are the same
    fractions of the range as on the Karras-in-t reference of REVISION 1."""
    n = len(grid) - 2
    if not space.flow:
        return np.arange(n + 2, dtype=np.float64)
    u = np.asarray(grid, dtype=np.float64) ** (1 / 7)
    return (u[0] - u) / (u[0] - u[-2]) * n


def refine(best, fitted, affordable, coord):
    """Pattern search on the levels with real calls: move one inner level a fraction f of the way to either
    neighbour (in `coord`, rounded to whole units, then the nearest reference level) and keep the move when
    the fitted solver's final error falls; halve f when no move helps; stop when the budget cannot afford the
    next trial (affordable(path)) or no move is left."""
    f = 0.5
    while True:
        improved, moves = False, 0
        for pos in range(1, len(best.sigmas) - 1):
            path = best.meta["path"]
            here = coord[path[pos]]
            for nb in (path[pos - 1], path[pos + 1]):
                step = round(f * abs(coord[nb] - here))
                j = int(np.abs(coord - (here + math.copysign(step, coord[nb] - here))).argmin())
                if j == path[pos] or not path[pos - 1] < j < path[pos + 1]:
                    continue
                trial_path = path[:pos] + [j] + path[pos + 1:]
                if not affordable(trial_path):
                    return best
                moves += 1
                trial = fitted(f"{best.schedule.split(' +')[0]} + refined", trial_path)
                if trial.fit_error < best.fit_error:
                    best, improved = trial, True
                    break
        if not moves:
            return best
        if not improved:
            f /= 2


def nested(path, coord, nfe):
    """The candidate paths of nfe + 1 levels that a start path holds: itself when it has nfe + 1 levels; with
    nfe levels, one per interval with a level inserted at the interval's midpoint in `coord` (where the grid
    has a level inside it)."""
    if len(path) == nfe + 1:
        return [list(path)]
    out = []
    for a, b in zip(path, path[1:]):
        j = int(np.abs(coord - (coord[a] + coord[b]) / 2).argmin())
        if a < j < b:
            out.append(sorted(path + [j]))
    return out


def check_start(start, nfe):
    """start as a list of floats: host levels descending to 0, nfe or nfe + 1 of them (a schedule of nfe - 1 or
    nfe steps, its first level taken as sigma_max); otherwise a ValueError naming it."""
    levels = [float(v) for v in start]
    if len(levels) not in (nfe, nfe + 1) or levels[-1] != 0 or not all(a > b for a, b in zip(levels, levels[1:])):
        raise ValueError(f"start must be {nfe} or {nfe + 1} host levels descending to 0 (a schedule of {nfe - 1} or {nfe} "
                         f"steps) for nfe = {nfe}, got {levels}")
    return levels


def check_difference(a, b, scale):
    """|a - b| / scale, RMS over the starts (flat [B, N] each), each start's difference d_b capped at ROBUST times their
    median (d_b times its `robust_weights` weight): a start near a basin boundary, whose coarser solve ends in another mode
    (on memorise16 in flow, 256 calibration starts: the plain RMS 0.088, capped 9.7e-05), says where
    the boundary lies, not that the solve does not converge; a model that does not converge moves every start
    (the ELS machine)."""
    d = ((a - b).pow(2).mean(1).sqrt() / scale).double().numpy()
    return float(np.sqrt(np.mean((d * robust_weights(d)) ** 2)))


def solve_reference(counted, x_T, sigma_min, sigma_max, space, extra_args, reference_calls, progress):
    """Step 1 of the module docstring: (host grid, states, end states, surrogate, error estimate) of the reference
    and its check (`trajectory`'s first four); a ValueError when it does not converge."""
    grid, states, end, ref = trajectory(counted, x_T, sigma_min, sigma_max, space, extra_args, reference_calls,
                                        (lambda done, total: progress("reference", done, total)) if progress else None)
    scale = max(float(end.pow(2).mean().sqrt()), 1e-30)

    def solve(calls, stage):
        report = (lambda info: progress(stage, info["i"] + 1, calls)) if progress is not None else None
        return flat(reference_solve(counted, x_T, sigma_min, sigma_max, space, extra_args, calls, report)[1])

    half = solve(reference_calls // 2, "check")
    ref_error = check_difference(half, end, scale)
    if not ref_error <= REFERENCE_TOLERANCE:
        ratio = check_difference(solve(reference_calls // 4, "order"), half, scale) / ref_error
        estimate = ref_error / (ratio - 1) if ratio > 1 else math.inf
        if not estimate <= REFERENCE_TOLERANCE:
            raise ValueError(f"the reference solve does not converge: |x_{reference_calls} - x_{reference_calls // 2}| "
                             f"(end states of {reference_calls} and {reference_calls // 2} calls) is {ref_error:.3g} of |x|, "
                             f"and {ratio:.3g} times that from {reference_calls // 4} calls: its error is estimated at "
                             f"{estimate:.3g} of |x|, above {REFERENCE_TOLERANCE}")
        ref_error = estimate
    return grid, states, end, ref, ref_error


def calibrate_solver(model, x_T, sigma_min, sigma_max, nfe, space="ve", extra_args=None, progress=None,
                     reference_calls=REFERENCE_CALLS, start=None, reference=None):
    """The calibrated solver of `model` with `nfe` calls (NFE_RANGE) from calibration starts x_T [B, ...] at
    sigma_max (module docstring). progress(stage, done, total) is called along the way and may raise to
    cancel; stages "reference", "check", "order" (only when the check needs it, module docstring) and "fit".
    start: levels to search from besides the fixed families (`check_start`, `nested`), such as the sigmas of
    a solver calibrated with nfe - 1 calls. reference: a dict shared by calibrations of one model from the same
    starts (a chain): the first fills it with its reference, the later ones take it from there instead of solving
    again (a ValueError if it was solved from other starts, levels, space or reference_calls); each is still charged
    its reference's calls within BUDGET, so it finds the same solver, and meta["reference_reused"] says how many of
    its model_calls it did not make. At most BUDGET model calls."""
    if isinstance(nfe, bool) or not isinstance(nfe, int) or not NFE_RANGE[0] <= nfe <= NFE_RANGE[1]:
        raise ValueError(f"nfe must be an integer in [{NFE_RANGE[0]}, {NFE_RANGE[1]}], got {nfe!r}")
    check_range(nfe, sigma_min, sigma_max)
    start = None if start is None else check_start(start, nfe)
    if not isinstance(x_T, torch.Tensor) or x_T.ndim < 2:
        raise ValueError("x_T must be a tensor [B, ...] of calibration start states")
    if isinstance(reference_calls, bool) or not isinstance(reference_calls, int) or not 20 <= reference_calls <= 200:
        raise ValueError(f"reference_calls must be an integer in [20, 200], got {reference_calls!r}")
    space = resolve(space)
    t0, counter = time.perf_counter(), [0]
    counted = checked_model(model, counter)
    key = (float(sigma_min), float(sigma_max), space.name, reference_calls)
    reused = reference is not None and "key" in reference
    if reused:
        if reference["key"] != key or not torch.equal(reference["x_T"], x_T.detach().cpu()):
            raise ValueError("the shared reference was solved from other start states, levels, space or reference_calls "
                             f"({reference['key']} against {key})")
        grid, states, end, ref, ref_error = reference["solved"]
        counter[0] = reference["calls"]
    else:
        grid, states, end, ref, ref_error = solve_reference(counted, x_T, sigma_min, sigma_max, space, extra_args,
                                                            reference_calls, progress)
        if reference is not None:
            reference.update(key=key, x_T=x_T.detach().cpu().clone(), solved=(grid, states, end, ref, ref_error),
                             calls=counter[0])
    used, tried, lead = counter[0], {}, {"path": [], "seen": []}

    def shared(path):
        """How many first levels `path` shares with the best run so far (`lead`): their calls are reused."""
        return next((p for p, (a, b) in enumerate(zip(path, lead["path"])) if a != b), min(len(path), len(lead["path"])))

    def affordable(path):
        return tuple(path) in tried or BUDGET - counter[0] >= nfe - shared(path)

    def fitted(label, path):
        if tuple(path) in tried:
            return tried[tuple(path)]
        levels = [grid[j] for j in path]
        cal = Calibrated(space.name, levels, [], schedule=label, meta={"path": list(path)})
        seen = []

        def fit(i, xs, ds):
            theta = fit_step(space, levels, i, [flat(v[:FIT_STARTS]) for v in xs], [flat(v[:FIT_STARTS]) for v in ds],
                             states[path[i + 1]])
            cal.coefficients.append([float(v) for v in theta])
            return theta

        with torch.no_grad():
            out = run(cal, counted, x_T, extra_args, disable=True, fit=fit, known=lead["seen"][:shared(path)], seen=seen)
        cal.fit_error = float((flat(out) - end).pow(2).mean(1).sqrt().mean())
        if not math.isfinite(cal.fit_error):
            raise ValueError(f"the calibrated solver's end state is not finite for the {label} levels")
        if not lead["path"] or cal.fit_error < lead["error"]:
            lead.update(path=list(path), seen=seen, error=cal.fit_error)
        if progress is not None:
            progress("fit", counter[0] - used, BUDGET - used)
        tried[tuple(path)] = cal
        return cal

    def family(name):
        def error(rho):
            path = snap(grid, SCHEDULERS[name].fn(nfe, sigma_min, sigma_max, space=space.name, rho=rho).tolist())
            if path is None or not affordable(path):
                return math.inf
            return fitted(f"{name}(rho={rho:.3g})", path).fit_error
        return error

    coord = level_coordinate(grid, space)
    for path in nested(snap(grid, start), coord, nfe) if start is not None else ():
        if affordable(path):
            fitted("start" if len(start) == nfe + 1 else "nested", path)
    try:
        fitted("search", reference_tools.search(ref, "exp_multistep", nfe, space.name)[0])
    except (ValueError, KeyError):
        pass
    for name, (lo, hi) in FAMILIES.items():
        golden(family(name), lo, hi, FAMILY_TRIALS)
    best = min(tried.values(), key=lambda c: c.fit_error)
    best = refine(best, fitted, affordable, coord)
    if progress is not None:
        progress("fit", BUDGET - used, BUDGET - used)
    best.model_calls, best.reference_error = counter[0], ref_error
    best.seconds = time.perf_counter() - t0
    best.meta = {"seeds": int(x_T.shape[0]), "reference_calls": reference_calls, "candidates": len(tried),
                 **({"start": start} if start is not None else {}),
                 **({"reference_reused": reference["calls"]} if reused else {})}
    check(best)
    return best
