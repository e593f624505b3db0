"""The least error that any sampler calling the model once at each level of a schedule can reach on Gaussian data.

For data N(mu, Sigma) the denoiser is affine, D(x; a, s) = mu + a Sigma (a^2 Sigma + s^2)^-1 (x - a mu). A
sampler whose next state is a linear combination of its states and x0 predictions (Euler, DPM-Solver++, UniPC,
DEIS, iPNDM, every multistep method here) therefore ends at m mu + R(Sigma) v, v = x_T - a_T mu, where each x0
prediction multiplies by one resolvent a_j Sigma (a_j^2 Sigma + s_j^2)^-1. Products of resolvents at distinct
levels split into simple fractions, so R lies in the (N + 1)-dimensional span of 1 and c_j / (Sigma + c_j),
c_j = (s_j / a_j)^2 over the N levels where the model is called (a flow model's a = 0 start adds nothing). The
exact solution is a_e mu + T(Sigma) v, T = sqrt((a_e^2 Sigma + s_e^2) / (a_T^2 Sigma + s_T^2)).

`bound` minimises the mean per-sample RMS error over that span (and a free multiple of mu) in Sigma's
eigenbasis: no such sampler does better on those levels, even one that knows Sigma, and a final recombination
of a run's own x_T and x0 predictions attains it (tests/test_bound.py). Where the bound is above a target, the
target cannot be met on that schedule.
"""
import torch

from ..samplers.space import resolve

F64 = torch.float64


def least_error(columns, target, iterations=200):
    """min over shared real coefficients c of mean_b ||columns[b] @ c - target[b]|| / sqrt(n), and c.

    columns [B, n, K], target [B, n] (real or complex; complex entries, an orthonormal basis of a real space).
    The objective is convex; iteratively reweighted least squares (weights 1 / residual norm per sample,
    Weiszfeld) solves it, on each sample's QR factors columns[b] = Q_b R_b: ||columns[b] c - target[b]||^2 =
    ||R_b c - Q_b^T target[b]||^2 + ||(I - Q_b Q_b^T) target[b]||^2, so an iteration costs B K^2, not B n K;
    the error returned is the direct one of the best iterate (the split loses digits where the columns are
    nearly dependent).
    """
    n = columns.shape[1]
    if columns.is_complex():
        columns, target = torch.cat([columns.real, columns.imag], 1), torch.cat([target.real, target.imag], 1)
    columns, target = columns.to(F64), target.to(F64)
    scale = columns.flatten(0, 1).norm(dim=0).clamp_min(1e-300)
    a = columns / scale
    q, r = torch.linalg.qr(a)
    proj = (q.transpose(1, 2) @ target[..., None])[..., 0]
    rest = (target - (q @ proj[..., None])[..., 0]).pow(2).sum(1)
    w = torch.ones(columns.shape[0], dtype=F64)
    best = (float("inf"), None)
    for _ in range(iterations):
        root = w.sqrt()[:, None, None]
        c = torch.linalg.lstsq((r * root).flatten(0, 1), (proj[..., None] * root).flatten(0, 1),
                               rcond=1e-15, driver="gelsd").solution[:, 0]
        norms = ((r @ c - proj).pow(2).sum(1) + rest).sqrt()
        if float(norms.mean()) < best[0]:
            best = (float(norms.mean()), c)
        w_new = 1 / norms.clamp_min(1e-300)
        if torch.allclose(w_new / w_new.sum(), w / w.sum(), rtol=1e-10, atol=0):
            break
        w = w_new
    c = best[1]
    return float((a @ c - target).norm(dim=1).mean()) / n ** 0.5, c / scale


def bound(problem, x_T, sigmas, space="ve"):
    """The on-schedule lower bound (module docstring) of the mean per-sample RMS error of the run from x_T over
    host levels `sigmas` (the model called at every level but the last), for a problem with `modes`; the target
    is the problem's own exact solution."""
    sp = resolve(space)
    s = [float(v) for v in sigmas]
    a_T, a_e = sp.alpha(s[0]), sp.alpha(s[-1])
    p, v = problem.modes(x_T.to(F64) - a_T * problem.mu)
    mu = problem.modes(problem.mu.expand_as(x_T).to(F64))[1]
    cols = [v, mu]
    for level in s[:-1]:
        a, sig = sp.alpha(level), sp.sigma(level)
        if a > 0 and sig > 0:
            c = (sig / a) ** 2
            cols.append(v * (c / (p + c)))
    target = problem.modes(problem.exact(x_T, s[0], s[-1], space) - a_e * problem.mu)[1]
    return least_error(torch.stack(cols, -1), target)[0]
