"""The critical noise level sigma_c of a model or a data set: where large-scale structure is decided.

Gaussian regime (SCIENCE.md §2, derived): D(x; sigma) = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu) in the
VE view, so the denoiser's Jacobian has top eigenvalue g = Lambda / (Lambda + sigma^2), Lambda the top
covariance eigenvalue; g crosses 1/2 at sigma_c^2 = Lambda, the speciation level (Biroli, Bonnaire,
de Bortoli, Mezard, arXiv 2402.18491). Three estimates:
- offline from samples: sigma_c^2 = top eigenvalue of their covariance (`sigma_c_from_data`);
- online from the denoiser (`JVPProbe`, `estimate_sigma_c`): power iteration on finite-difference
  Jacobian-vector products, one extra model call per probed level, warm-started across levels;
  Lambda_hat = sigma^2 g / (1 - g) with g the Rayleigh quotient;
- zero extra calls (`SpeedTracker`): the speed of the x0 prediction ||D_i - D_{i-1}|| / (|dlambda| sqrt N)
  peaks at sigma^2 = Lambda in the Gaussian regime (per mode it is Lambda^2 sigma^2 / (Lambda + sigma^2)^2).
All levels here are VE levels sigma = exp(-lambda); a host level s converts with Space.to_ve.
"""
import math

import torch

from .space import resolve
from .stepping import check_sigmas, ddim

G_CLAMP = 1e-6
WINDOW = 2.0


def _flat(t):
    """[B, N] float64 view of a batch."""
    return t.detach().reshape(t.shape[0], -1).to(torch.float64)


def x0_speed_between(d, d_prev, lam: float, lam_prev: float):
    """Per-sample speed of the x0 prediction ||D - D_prev|| / (|lambda - lambda_prev| sqrt N), float64 [B];
    None where the step in lambda is zero or infinite (a flow model's s = 1, the last step to 0)."""
    dl = abs(lam - lam_prev)
    if not math.isfinite(dl) or dl == 0:
        return None
    diff = _flat(d) - _flat(d_prev)
    return diff.norm(dim=1) / (dl * math.sqrt(diff.shape[1]))


def sigma_c_from_data(samples) -> float:
    """sigma_c = sqrt(top eigenvalue of the sample covariance) of n >= 2 samples [n, ...] (data or clean latents),
    through the top singular value of the centred n x N matrix (cheap when n << N)."""
    if not isinstance(samples, torch.Tensor) or samples.ndim < 2 or samples.shape[0] < 2:
        raise ValueError(f"samples must be a tensor [n, ...] with n >= 2, got {getattr(samples, 'shape', type(samples).__name__)}")
    x = _flat(samples)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("samples must be finite")
    x = x - x.mean(0)
    top = float(torch.linalg.svdvals(x)[0])
    return top / math.sqrt(x.shape[0] - 1)


class JVPProbe:
    """Online power iteration on the VE Jacobian J = dD/dy of a denoiser, one sample at a time ([B] estimates).

    At a probed host level s (alpha > 0): J v = alpha (D(x + delta v) - D(x)) / delta with delta = scale * s * sqrt(N)
    (a perturbation of `scale` times the noise per element), g = <v, J v>, Lambda_hat = sigma_ve^2 g / (1 - g)
    (g clamped to [1e-6, 1 - 1e-6]), then v <- J v / ||J v||. A Rayleigh quotient of the symmetric J is a lower
    bound of its top eigenvalue, so the largest Lambda_hat is kept, but only over informative probes:
    - g >= 1/2 means the level is at or past sigma_c (the sample has left the Gaussian regime): such a probe only
      gives the bound Lambda >= sigma^2, and no lower level is informative, so the sample stops probing;
    - an error dg in g moves Lambda_hat by dLambda / Lambda = dg / (g (1 - g)), least at g = 1/2 and growing as
      sigma^2 / Lambda far above sigma_c, where a model's estimate is an extrapolation (off the levels it was
      trained on, high-sigma probes can over-estimate). A probe is informative when its own estimate is
      self-consistent, sigma / WINDOW <= sigma_hat < sigma, i.e. 1 / (1 + WINDOW^2) <= g < 1/2 (WINDOW = 2: an
      error amplification within 1.6x of its optimum, 6.25 against 4).
    Where to probe: each sample's first two usable levels (the first only aligns v), then only levels
    sigma <= WINDOW * its latest estimate (the least extrapolated one), so the probes walk down to the informative
    window; at most 1 + `probes` per sample (the aligning one and `probes` more), none after a g >= 1/2. A sample without an informative probe keeps the
    largest Lambda_hat of its probes (the former rule, also the provisional estimate a guidance pulse uses before
    the first informative probe). `measured` [B]: some probe had g < 1/2 (elsewhere the estimate is only the bound).
    Each sample's estimate depends on that sample alone.
    """

    def __init__(self, space="ve", probes=4, scale=0.1):
        if not (isinstance(probes, int) and probes >= 1):
            raise ValueError(f"probes must be an integer >= 1, got {probes!r}")
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and 0 < scale <= 1):
            raise ValueError(f"probe_scale must be in (0, 1], got {scale!r}")
        self.space, self.probes, self.scale = resolve(space), probes, float(scale)
        self.v, self.lam_hat, self.measured, self.done, self.levels = None, None, None, 0, []
        self.lam_any = self.lam_inf = self.latest = self.taken = self.useful = self.active = None

    def takes(self, s: float):
        """Per sample, whether host level s is probed for it [B] bool (all, before the first probe)."""
        if self.active is None:
            return None
        return self.active & ((self.taken < 2) | (self.space.to_ve(s) <= WINDOW * self.latest))

    def wants(self, s: float) -> bool:
        """Whether host level s is to be probed for some sample (never at s = 0 nor where alpha = 0)."""
        if not (s > 0 and self.space.alpha(s) > 0):
            return False
        take = self.takes(s)
        return take is None or bool(take.any())

    def _delta(self, x, s):
        return self.scale * s * math.sqrt(x[0].numel())

    def point(self, x, s: float, hint=None):
        """The perturbed input x + delta v at which the model is queried once more. The first v is `hint` (a
        direction the top mode is likely in, e.g. D_c - D_u or D_i - D_{i-1}) where it is non-zero, else x."""
        if self.v is None:
            v = _flat(x) if hint is None else torch.where(_flat(hint).norm(dim=1, keepdim=True) > 0, _flat(hint), _flat(x))
            self.v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-30)
        return x + (self._delta(x, s) * self.v).reshape(x.shape).to(x.dtype)

    def update(self, x, s: float, d, d_probe):
        """One power-iteration step from D(x) and D(x + delta v) at host level s for the samples it `takes`;
        returns Lambda_hat [B]."""
        jv = (_flat(d_probe) - _flat(d)) * (self.space.alpha(s) / self._delta(x, s))
        g = (jv * self.v).sum(1).clamp(G_CLAMP, 1 - G_CLAMP)
        sigma2 = self.space.to_ve(s) ** 2
        lam_hat = torch.where(g < 0.5, sigma2 * g / (1 - g), torch.full_like(g, sigma2))
        if self.active is None:
            zero = torch.zeros_like(g)
            self.active, self.taken, self.useful = zero == 0, zero.long(), zero.long()
            self.lam_any, self.lam_inf, self.latest, self.measured = zero, zero, zero, zero != 0
        on = self.takes(s)
        ok = on & (g >= 1 / (1 + WINDOW ** 2)) & (g < 0.5)
        self.lam_any = torch.where(on, torch.maximum(self.lam_any, lam_hat), self.lam_any)
        self.lam_inf = torch.where(ok, torch.maximum(self.lam_inf, lam_hat), self.lam_inf)
        self.latest = torch.where(on, lam_hat.sqrt(), self.latest)
        self.measured = self.measured | (on & (g < 0.5))
        self.taken, self.useful = self.taken + on.long(), self.useful + ok.long()
        self.active = self.active & ~(on & (g >= 0.5)) & (self.taken <= self.probes)
        self.lam_hat = torch.where(self.useful > 0, self.lam_inf, self.lam_any)
        norm = jv.norm(dim=1, keepdim=True)
        self.v = torch.where(on[:, None] & (norm > 0), jv / norm.clamp_min(1e-300), self.v)
        self.done += 1
        self.levels.append(s)
        return self.lam_hat

    @property
    def sigma_c(self):
        """Per-sample sigma_c = sqrt(Lambda_hat) (VE units) [B] float64, or None before the first probe."""
        return None if self.lam_hat is None else self.lam_hat.sqrt()

    @property
    def finished(self) -> bool:
        """No sample probes any more (each has used its probes or passed sigma_c)."""
        return self.active is not None and not bool(self.active.any())


class SpeedTracker:
    """Zero-call detector: per sample, the level of peak x0-prediction speed ||D_i - D_{i-1}|| / (|lambda_i - lambda_{i-1}| sqrt N),
    located at the VE level exp(-(lambda_i + lambda_{i-1}) / 2) between the two queries."""

    def __init__(self, space="ve"):
        self.space = resolve(space)
        self.prev, self.best, self.peak = None, None, None

    def update(self, d, s: float):
        lam = self.space.lam(s)
        speed = None if self.prev is None else x0_speed_between(d, self.prev[0], lam, self.prev[1])
        if speed is not None:
            level = torch.full_like(speed, math.exp(-(lam + self.prev[1]) / 2))
            if self.best is None:
                self.best, self.peak = speed, level
            else:
                better = speed > self.best
                self.best, self.peak = torch.where(better, speed, self.best), torch.where(better, level, self.peak)
        self.prev = (d, lam)

    @property
    def sigma_c(self):
        """Per-sample VE level of the fastest change [B] float64, or None before two queries."""
        return self.peak


def probe_sigma_c(model, x, sigmas, space="ve", probes=4, scale=0.1, extra_args=None):
    """The JVPProbe after probing the denoiser `model(x, sigma_batch, **extra_args)` from the noised start x at
    sigmas[0]: x follows first-order (DDIM) steps and levels after the first are probed as JVPProbe chooses, at most
    1 + `probes` per sample (2 calls each; the first direction is D_i - D_{i-1}, one power-iteration step on the noise in the Gaussian
    regime). No level after the first: a ValueError naming sigmas."""
    space = resolve(space)
    s = check_sigmas(sigmas, space)
    probe = JVPProbe(space, probes, scale)
    extra_args = {} if extra_args is None else extra_args
    ones, prev = x.new_ones([x.shape[0]]), None
    for i in range(len(s) - 1):
        if probe.finished:
            break
        d = model(x, ones * s[i], **extra_args)
        if probe.wants(s[i]) and prev is not None:
            probe.update(x, s[i], d, model(probe.point(x, s[i], d - prev), ones * s[i], **extra_args))
        x, prev = ddim(space, x, d, s[i], s[i + 1]), d
    if probe.sigma_c is None:
        raise ValueError(f"sigmas must hold at least one level with 0 < s < {space.max_level()} after the first to probe, got {s}")
    return probe


def unmeasured_reason(probe):
    """Why no sample's sigma_c was measured (every probe had g >= 1/2), or None when some sample's was."""
    if bool(probe.measured.any()):
        return None
    levels = ", ".join(f"{probe.space.to_ve(v):.4g}" for v in probe.levels)
    return (f"sigma_c cannot be measured: at every probed level (VE sigma {levels}) the denoiser's gain is >= 1/2, so "
            f"each lies at or below sigma_c and gives only the bound sigma_c >= {max(probe.space.to_ve(v) for v in probe.levels):.4g}; "
            "probe higher levels (the first level only starts the direction)")


def estimate_sigma_c(model, x, sigmas, space="ve", probes=4, scale=0.1, extra_args=None):
    """Per-sample sigma_c [B] (VE units, float64) by `probe_sigma_c`; where a sample's probes all had g >= 1/2 its
    value is the bound sigma_c >= its highest probed level, and a ValueError naming sigmas when that holds for
    every sample (nothing measured). Reusable by schedules: sigma_c of the model at hand before sampling."""
    probe = probe_sigma_c(model, x, sigmas, space, probes, scale, extra_args)
    reason = unmeasured_reason(probe)
    if reason is not None:
        raise ValueError(f"sigmas: {reason}")
    return probe.sigma_c
