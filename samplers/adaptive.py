"""Error-controlled exponential predictor-corrector with a PI step-size controller and a model-call budget.

Each step is the pair of `pc` (multistep predictor of order p, corrector of order p + 1 from the x0
prediction at the new level, one model call); their difference is the embedded error estimate
(Milne's device, as in UniPC's adaptive use, Zhao et al. 2023), measured per sample in the norm
err = rms((x_c - x_p) / (atol + rtol max(|x_p|, |x_c|))) in the VE view. A step is accepted when err <= 1 and the next
step is h' = h * 0.9 err^(-0.7/k) err_prev^(0.4/k), k = p + 1, clipped to [0.2, 2.5] (PI control,
Gustafsson 1991; Soederlind 2002); a rejected step retries with h * max(0.2, 0.9 err^(-1/k)).
Every level of `sigmas` is hit exactly (callbacks, split schedules and partial denoise keep working); the
last step to 0 is explicit (DDIM). Each sample of a batch has its own steps (per-sample levels in one
batched model call), so a sample's result does not depend on the batch.

The budget: a step is never shorter than the even share of the lambda still ahead over the calls left,
and when the calls left only cover the schedule levels still ahead, the solver steps to them and accepts:
at most max(budget, len(sigmas) - 1) calls. A rejection that cannot buy a shorter retry (the retry's
share of the budget is at least this step, or a schedule level cuts both) is futile and the step is
accepted instead, as is a flow model's first step from s = 1 once moving it further out would leave the
remaining steps set by the budget rather than by the tolerance. So a tolerance the budget cannot afford
spends its calls on accepted steps (spread evenly in lambda where the error asks for more) instead of on
rejections. As rtol, atol -> 0 with an unbinding budget the result converges to the exact ODE solution.

The state, the x0 predictions and the corrector run as batched tensor ops in at least float32 with
per-sample float64 coefficient vectors; the step control is float64 numpy over the batch; levels go to the
model in at least float32 (`Stepper.denoise`).
"""
import math

import numpy as np
import torch

from .multistep import batch_weights
from .registry import Param, register
from .stepping import Stepper

START_STEP = 0.4
"""The first step in lambda, and the step after a flow model's first step from s = 1 (to sigma_VE = 10)."""
START_SHARE = 0.25
"""A flow model's first step from s = 1 is accepted once moving it out again would leave the remaining lambda
span more than this per remaining call. Chosen among 0.15, 0.25, 0.4 on the gaussian and mixture problems
(rtol ladder 1e-1..1e-8, budgets 15-40); tests/test_reliability_adaptive.py checks the ladder on others."""


def _alpha(space, s):
    """alpha(s) of host levels s (float64 array)."""
    return 1.0 - s if space.flow else np.ones_like(s)


def _from_ve(space, lam):
    """The host levels of lambdas `lam` (float64 array): sigma_VE = e^-lambda, flow t = sigma_VE / (1 + sigma_VE)."""
    sigma = np.exp(-lam)
    return sigma / (1.0 + sigma) if space.flow else sigma


class History:
    """Per-sample ring of the last K = order + 1 x0 predictions, [B, K, N] in the working dtype, with their
    lambdas [B, K] float64 and each sample's count and next free slot."""

    def __init__(self, d, lam0, order):
        b, self.k = d.shape[0], order + 1
        self.d = d.new_zeros((b, self.k, d.shape[1]))
        self.lam = np.zeros((b, self.k))
        self.count, self.pos, self.order = np.zeros(b, int), np.zeros(b, int), order
        self.write(np.arange(b), d, np.full(b, lam0))
        self.accept(np.ones(b, bool))

    def write(self, idx, d, lam):
        """Put d[idx] at lambdas lam[idx] into the free slot of samples idx (not yet part of the history)."""
        if len(idx):
            rows = torch.from_numpy(idx * self.k + self.pos[idx]).to(self.d.device)
            self.d.view(-1, self.d.shape[2]).index_copy_(0, rows, d.index_select(0, rows // self.k))
            self.lam[idx, self.pos[idx]] = lam[idx]

    def accept(self, mask):
        """The free slot becomes the newest node of the samples in mask (the oldest beyond `order` drops out)."""
        self.count = np.where(mask, np.minimum(self.count + 1, self.order), self.count)
        self.pos = np.where(mask, (self.pos + 1) % self.k, self.pos)

    def valid(self, extra):
        """[B, K]: the slots in each sample's history, plus its free slot where `extra`."""
        age = (self.pos[:, None] - np.arange(self.k)[None]) % self.k
        return ((age >= 1) & (age <= self.count[:, None])) | ((age == 0) & extra[:, None])

    def newest(self):
        """[B, N]: each sample's latest accepted x0 prediction."""
        rows = np.arange(len(self.pos)) * self.k + (self.pos - 1) % self.k
        return self.d.view(-1, self.d.shape[2]).index_select(0, torch.from_numpy(rows).to(self.d.device))


def _advance(space, x, hist, valid, lam_s, lam_t, s, t):
    """Per-sample fused multistep step (multistep.advance): x' = (sigma_t/sigma_s) x + (alpha_t - alpha_s
    sigma_t/sigma_s) sum_k w_k D_k, w from batch_weights over the valid slots; samples with lam_s == lam_t stay."""
    move = lam_t != lam_s
    w = np.zeros(valid.shape)
    if move.any():
        w[move] = batch_weights(hist.lam[move], valid[move], lam_s[move], lam_t[move])
    ratio = np.where(move, t / np.where(move, s, 1.0), 1.0)
    c = np.where(move, _alpha(space, t) - _alpha(space, s) * ratio, 0.0)
    dev, dt = x.device, x.dtype
    coef = torch.from_numpy(c[:, None] * w).to(dev, dt).unsqueeze(1)
    return torch.baddbmm(x.mul(torch.from_numpy(ratio).to(dev, dt)[:, None]).unsqueeze(1), coef, hist.d).squeeze(1)


def _toward(cur, goal, h, share):
    """The next lambda from cur with step h toward the schedule level goal: the goal itself when it is within
    1.1 h, half-way (at least `share`) when within 2 h, so that no sliver step is left before a level."""
    gap = goal - cur
    return np.where(gap <= 1.1 * h, goal, np.where(gap < 2 * h, cur + np.maximum(gap / 2, np.minimum(share, gap)),
                                                   cur + h))


def _norm(x_c, x_p, alpha, rtol, atol):
    """Per-sample rms((x_c - x_p) / (atol + rtol max(|x_p|, |x_c|))) in the VE view x / alpha, float64 [B]."""
    a = torch.from_numpy(alpha).to(x_c.device, x_c.dtype)[:, None]
    scale = torch.maximum(x_p.abs(), x_c.abs()).mul_(rtol).add_(a * atol)
    r = (x_c - x_p).div_(scale)
    n = max(r.shape[1], 1)
    return (torch.linalg.vector_norm(r, dim=1).double() / math.sqrt(n)).cpu().numpy()


class Reports:
    """The per-level callback: level i is reported once every sample has passed it, with each sample's own
    state and x0 prediction there (samples that ran ahead are buffered)."""

    def __init__(self, run, x, shape, n):
        self.run, self.shape, self.n, self.next = run, shape, n, 0
        self.x_like, self.d_like, self.held = x, None, {}

    def arrive(self, levels, idx, x, d):
        """Samples idx reached schedule levels levels[idx] with states x and x0 predictions d (batch tensors)."""
        if self.run.callback is None:
            return
        self.d_like = d
        for i in np.unique(levels[idx]):
            if i >= self.n:
                continue
            j = idx[levels[idx] == i]
            xs, ds = self.held.setdefault(int(i), (torch.zeros_like(self.x_like), torch.zeros_like(d)))
            t = torch.from_numpy(j).to(x.device)
            xs.index_copy_(0, t, x.index_select(0, t).to(xs.dtype))
            ds.index_copy_(0, t, d.index_select(0, t))

    def release(self, passed):
        """Report the levels below `passed` (the lowest schedule index any sample has still to reach)."""
        if self.run.callback is None:
            return
        while self.next < min(passed, self.n):
            empty = (torch.zeros_like(self.x_like), torch.zeros_like(self.x_like if self.d_like is None else self.d_like))
            xs, ds = self.held.pop(self.next, empty)
            self.run.report(self.next, xs.view(self.shape), ds.view(self.shape))
            self.next += 1


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
    sp, n, b, shape = run.space, len(run.s) - 1, x.shape[0], x.shape
    flat = (b, math.prod(shape[1:]))
    lam, levels = np.array(run.lam), np.array(run.s)
    last = n - 1 if math.isinf(lam[n]) else n
    k = order + 1
    wide = torch.promote_types(x.dtype, torch.float32)

    def query(state, at):
        d = run.denoise(state.view(shape).to(x.dtype), at)
        return d, d.reshape(flat).to(wide)

    level, cur = np.full(b, levels[0]), np.full(b, lam[0])
    nxt, step, err_prev, raised = np.ones(b, int), np.full(b, START_STEP), np.ones(b), np.ones(b)
    xw = x.reshape(flat).to(wide)
    d, dw = query(xw, level)
    calls = 1
    hist = History(dw, lam[0], order)
    reports = Reports(run, x.reshape(flat), shape, n)
    reports.arrive(np.zeros(b, int), np.arange(b), xw, d.reshape(flat))
    reports.release(1 if b else n)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        while (active := nxt <= last).any():
            left = budget - calls
            goal = lam[np.minimum(nxt, last)]
            start = np.isinf(cur)
            share = (lam[last] - cur) / max(left, 1)
            t = np.where(start, np.minimum(goal, -math.log(10.0) + np.log(step / START_STEP)),
                         _toward(cur, goal, np.maximum(step, share), share))
            forced = left <= last - nxt + 1
            target = np.where(active, np.where(forced, goal, t), cur)
            s_t = np.where(active, _from_ve(sp, target), level)
            x_p = _advance(sp, xw, hist, hist.valid(np.zeros(b, bool)), cur, target, level, s_t)
            d, dw = query(x_p, s_t)
            calls += 1
            hist.write(np.flatnonzero(active), dw, target)
            x_c = _advance(sp, xw, hist, hist.valid(active), cur, target, level, s_t)
            raw = np.maximum(_norm(x_c, x_p, _alpha(sp, s_t), rtol, atol), 1e-10)
            err = raw / raised
            h = target - cur
            retry = np.where(start, step * np.maximum(0.2, 0.9 / err), h * np.maximum(0.2, 0.9 * err ** (-1 / k)))
            share_next = (lam[last] - cur) / max(left - 1, 1)
            t_retry = np.where(start, np.minimum(goal, -math.log(10.0) + np.log(retry / START_STEP)),
                               _toward(cur, goal, np.maximum(retry, share_next), share_next))
            futile = np.where(start, (lam[last] - t_retry) / max(left - 1, 1) >= START_SHARE, t_retry >= target)
            accept = active & ((err <= 1) | forced | futile)
            bound = accept & (err > 1) & ~forced & ~start
            raised = np.where(bound, raw, raised)
            err = np.where(bound, 1.0, err)
            grow = h * np.clip(0.9 * err ** (-0.7 / k) * err_prev ** (0.4 / k), 0.2, 2.5)
            step = np.where(active, np.where(start, np.where(accept, START_STEP, retry),
                                             np.where(accept, grow, retry)), step)
            err_prev = np.where(accept, err, err_prev)
            acc = torch.from_numpy(accept).to(xw.device)[:, None]
            xw = torch.where(acc, x_c, xw)
            hist.accept(accept)
            arrived = accept & (target == lam[np.minimum(nxt, last)])
            cur = np.where(accept, target, cur)
            level = np.where(arrived, levels[np.minimum(nxt, n)], np.where(accept, s_t, level))
            reports.arrive(nxt, np.flatnonzero(arrived), xw, d.reshape(flat))
            nxt = np.where(arrived, nxt + 1, nxt)
            reports.release(int(nxt.min()) if b else n)
    if last == n - 1:
        xw = hist.newest()
    reports.release(n)
    return xw.view(shape).to(x.dtype)
