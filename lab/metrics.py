"""Metrics for A/B comparisons of sampler runs: PSNR, SSIM, paired Student-t intervals, frequency-band
energies and the speed of the x0 prediction. Pure torch; per-sample values as float64 [B] tensors."""
import functools
import math

import torch

from ..samplers.critical import x0_speed_between
from ..samplers.space import resolve
from .runner import rms_error

F64 = torch.float64
PSNR_CAP_DB = 240.0


def same_shape(x, ref, what="x"):
    """A ValueError naming both shapes when x and ref differ."""
    if tuple(x.shape) != tuple(ref.shape):
        raise ValueError(f"{what}: shape {tuple(x.shape)} differs from the reference's {tuple(ref.shape)}")


def rmse(x, ref):
    """Per-sample root-mean-square error [B] (runner.rms_error, with the shapes checked)."""
    same_shape(x, ref)
    return rms_error(x, ref.to(F64))


def psnr(x, ref):
    """Per-sample PSNR in dB: 20 log10(peak / RMSE), peak = the reference sample's range max - min
    (latents have no fixed white level); capped at PSNR_CAP_DB for identical samples."""
    err = rmse(x, ref)
    peak = (ref.flatten(1).amax(1) - ref.flatten(1).amin(1)).to(F64)
    ratio = peak / err.clamp_min(1e-300)
    return (20 * torch.log10(ratio.clamp_min(1e-300))).clamp(-PSNR_CAP_DB, PSNR_CAP_DB)


def _gauss_window(size=11, sigma=1.5):
    r = torch.arange(size, dtype=F64) - (size - 1) / 2
    g = torch.exp(-r ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x, ref, data_range=1.0, size=11, sigma=1.5, k1=0.01, k2=0.03):
    """Per-sample SSIM (Wang, Bovik, Sheikh, Simoncelli 2004) of images [B, H, W, C] in [0, data_range]:
    mean over valid 11x11 Gaussian (sigma 1.5) windows and channels of
    (2 mu_x mu_y + C1)(2 cov_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(var_x + var_y + C2)),
    C1 = (k1 L)^2, C2 = (k2 L)^2 (as skimage's gaussian_weights=True, use_sample_covariance=False)."""
    same_shape(x, ref, "image")
    if x.ndim != 4:
        raise ValueError(f"image: expected [B, H, W, C], got shape {tuple(x.shape)}")
    if min(x.shape[1], x.shape[2]) < size:
        raise ValueError(f"image: SSIM needs at least {size}x{size} pixels, got {x.shape[1]}x{x.shape[2]}")
    b, h, w, c = x.shape
    a = x.detach().to("cpu", F64).permute(0, 3, 1, 2).reshape(b * c, 1, h, w)
    r = ref.detach().to("cpu", F64).permute(0, 3, 1, 2).reshape(b * c, 1, h, w)
    win = _gauss_window(size, sigma)[None, None]
    filt = lambda t: torch.nn.functional.conv2d(t, win)
    mx, my = filt(a), filt(r)
    vx, vy, cxy = filt(a * a) - mx ** 2, filt(r * r) - my ** 2, filt(a * r) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.reshape(b, -1).mean(1)


@functools.lru_cache(maxsize=256)
def t_quantile(p, df):
    """The p-quantile of Student's t with df degrees of freedom (p in (0.5, 1)): the CDF
    1/2 + int_0^t f, f(u) = Gamma((df+1)/2) / (sqrt(df pi) Gamma(df/2)) (1 + u^2/df)^-((df+1)/2),
    integrated by the trapezoid rule on a fine grid in u = tan(theta) and inverted by interpolation."""
    if not 0.5 < p < 1:
        raise ValueError(f"p must lie in (0.5, 1), got {p}")
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    theta = torch.linspace(0, math.pi / 2 * (1 - 1e-9), 200001, dtype=F64)
    u = torch.tan(theta)
    logc = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    dens = torch.exp(logc - (df + 1) / 2 * torch.log1p(u ** 2 / df)) / torch.cos(theta) ** 2
    cdf = 0.5 + torch.cat([torch.zeros(1, dtype=F64), torch.cumulative_trapezoid(dens, theta)])
    k = int(torch.searchsorted(cdf, torch.tensor([p], dtype=F64)))
    w = (p - cdf[k - 1]) / (cdf[k] - cdf[k - 1])
    return float(u[k - 1] + w * (u[k] - u[k - 1]))


def mean_ci_t(v, level=0.95):
    """Mean and the half-width of a Student-t confidence interval (n - 1 degrees of freedom; runner.mean_ci
    uses the normal 1.96, which is too narrow for the 2-8 seeds of an A/B run). Half-width 0 for n = 1."""
    v = torch.as_tensor(v, dtype=F64).flatten()
    n = v.numel()
    if n == 0:
        raise ValueError("v must hold at least one value")
    if n == 1:
        return float(v[0]), 0.0
    return float(v.mean()), t_quantile(0.5 + level / 2, n - 1) * float(v.std()) / math.sqrt(n)


def percentile_ci(reps, level=0.95):
    """(lo, hi): the bootstrap percentile interval of replicates `reps` (any order), the sorted replicates at
    ranks floor((1 - level)/2 (n - 1)) and ceil((1 + level)/2 (n - 1))."""
    r = sorted(reps)
    return r[int((1 - level) / 2 * (len(r) - 1))], r[math.ceil((1 + level) / 2 * (len(r) - 1))]


def bias_shifted_ci(reps, value, level=0.95):
    """(lo, hi): `percentile_ci` shifted by the bootstrap bias estimate mean(reps) - value (Efron & Tibshirani
    1993, Sec. 10.2), so that the interval of a biased estimator lies around `value`."""
    r = sorted(reps)
    bias = sum(r) / len(r) - value
    lo, hi = percentile_ci(r, level)
    return lo - bias, hi - bias


def paired(a, b, level=0.95):
    """Paired comparison of per-sample values a and b (same seeds): mean of a - b, its t-interval
    half-width, and how many samples have a < b."""
    a, b = torch.as_tensor(a, dtype=F64), torch.as_tensor(b, dtype=F64)
    same_shape(a, b, "a")
    mean, ci = mean_ci_t(a - b, level)
    return {"mean_diff": mean, "ci": ci, "lower": int((a < b).sum()), "n": int(a.numel())}


def band_edges(bands=5):
    """Radial frequency band edges in cycles per pixel: 0, then octaves up to the corner frequency
    sqrt(2)/2; with the DC term as its own band this makes `bands` bands."""
    if bands < 2:
        raise ValueError(f"bands must be >= 2, got {bands}")
    return [0.0] + [math.sqrt(0.5) / 2 ** k for k in range(bands - 2, -1, -1)]


def band_energies(x, bands=5):
    """Energy per radial frequency band of samples x [..., H, W] (mean over leading dims):
    E_b = sum over |f| in band of |FFT_ortho(x)|^2 / (number of leading elements); the DC term is band 0,
    band k > 0 holds edges[k-1] < |f| <= edges[k]. Returns (energies [bands'], edges)."""
    if x.ndim < 2:
        raise ValueError(f"x must have at least two (spatial) dimensions, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    edges = band_edges(bands)
    f = torch.sqrt(torch.fft.fftfreq(h, dtype=F64)[:, None] ** 2 + torch.fft.fftfreq(w, dtype=F64)[None, :] ** 2)
    power = torch.fft.fft2(x.detach().to("cpu", F64), norm="ortho").abs().pow(2)
    power = power.reshape(-1, h, w).mean(0)
    out = [power[f == 0].sum()]
    out += [power[(f > lo) & (f <= hi)].sum() for lo, hi in zip(edges[:-1], edges[1:])]
    return torch.stack(out), edges


def x0_speed(x0s, levels, space="ve"):
    """Speed of the x0 prediction between steps (SCIENCE.md 2): s_i = ||D_i - D_{i-1}|| / (|lambda_i -
    lambda_{i-1}| sqrt(N)) for i >= 1, lambda = log(alpha / sigma) of the host levels; None where a lambda
    is infinite (a flow model's s = 1). x0s: [T, ...] predictions at levels[:T]."""
    space = resolve(space)
    if len(levels) < len(x0s):
        raise ValueError(f"levels: need one per prediction ({len(x0s)}), got {len(levels)}")
    lam = [space.lam(float(s)) for s in levels]
    out = []
    for i in range(1, len(x0s)):
        speed = x0_speed_between(x0s[i][None], x0s[i - 1][None], lam[i], lam[i - 1])
        out.append(None if speed is None else float(speed[0]))
    return out


def ratio_boot(a, b, boot=1000, seed=0, level=0.95):
    """mean(a) / mean(b) of per-sample values paired row by row (same seeds) and its paired bootstrap
    percentile interval: each of `boot` seeded replicates resamples the rows of both together."""
    a, b = torch.as_tensor(a, dtype=F64).flatten(), torch.as_tensor(b, dtype=F64).flatten()
    same_shape(a, b, "a")
    if float(b.sum()) == 0:
        raise ValueError("b must not average to 0 (the ratio's denominator)")
    idx = torch.randint(len(a), (boot, len(a)), generator=torch.Generator().manual_seed(seed))
    return float(a.mean() / b.mean()), percentile_ci((a[idx].mean(1) / b[idx].mean(1)).tolist(), level)
