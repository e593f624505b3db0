"""Poisson flow (PFGM, arXiv 2209.11178; PFGM++, arXiv 2302.04265) for a model trained as a diffusion model.

Data in N dims plus D augmented dims; the perturbation kernel p_r(x|y) ∝ (||x - y||^2 + r^2)^(-(N+D)/2)
with the alignment r = sigma sqrt(D) is a multivariate Student-t with D degrees of freedom and scale
sigma, i.e. a Gaussian scale mixture x = y + kappa sigma eps, kappa = sqrt(D / chi2_D) (SCIENCE.md §1).
In N >> 1 dims each sample's kappa is read off the sample and stays constant along the ODE
dx/dsigma = (x - E[y|x]) / sigma, and E[y|x] is the Gaussian (D = inf) denoiser at sigma_eff = kappa sigma.
So a diffusion model runs PFGM++ by (1) starting each sample from the heavy-tailed prior, one chi2_D
draw per sample from the seed, and (2) being queried at the per-sample level kappa sigma ([B] tensors)
while any deterministic solver integrates in the nominal levels. D = inf is diffusion (kappa = 1).

A latent dtype bounds the prior's radius: at D = 1 kappa = sqrt(1/chi2_1) exceeds 1e3 for about 1 sample in
1250 (the chi2_1 density is ~ (2 pi x)^-1/2 at 0), and kappa sigma_0 |n| then overflows float16 (max 65504).
Such a sample's kappa is lowered to the largest value whose start fits the dtype with a margin
(`representable`): its start keeps its direction n / |n| and moves in along the ray, to a radius still
hundreds of data scales out. The ODE from there is the PFGM++ flow of a prior truncated at that radius
(the original PFGM samples from a bounded hemisphere, arXiv 2209.11178 §4) on the per-sample schedule
kappa_max sigma_i; no other sample changes.
"""
import math
import numbers

import numpy as np
import torch

from .registry import REGISTRY, Param, register
from .space import resolve
from .stepping import check_latent, check_output, check_sigmas
from .tracking import TRACK_PARAMS, Tracker, query

SEED_MIX = 0x9E3779B97F4A7C15
DEFAULT_SEED = 0
"""The seed when the host gives none (extra_args without "seed", or None: comfy.sample.sample_custom)."""
HEADROOM = 16.0
"""The start's largest element stays below finfo(dtype).max / HEADROOM, so the model's own arithmetic on the
state (differences, scalings) has room as well."""


def check_seed(seed) -> int:
    """The seed as a Python int: None is DEFAULT_SEED; ints, numpy integers and integer 0-d tensors are taken;
    anything else (bool, float, string, NaN) is a ValueError naming `seed`."""
    if seed is None:
        return DEFAULT_SEED
    if isinstance(seed, torch.Tensor) and seed.ndim == 0 and not seed.dtype.is_floating_point \
            and not seed.dtype.is_complex and seed.dtype != torch.bool:
        return int(seed)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer (or None for {DEFAULT_SEED}), got {seed!r}")
    return int(seed)


def kappas(seed, batch, D):
    """Per-sample scale kappa_k = sqrt(D / chi2_D), chi2_D = 2 Gamma(D/2) drawn by a torch.Generator seeded
    from seed + k (mixed by a fixed odd constant, so it is not the stream the host draws its noise from).
    float64 [B] on the CPU; all ones at D = inf. seed: `check_seed`."""
    D = PARAMS["D"].check("D", D)
    seed = check_seed(seed)
    if math.isinf(D):
        return torch.ones(batch, dtype=torch.float64)
    out = []
    for k in range(batch):
        g = torch.Generator().manual_seed((seed + k) * SEED_MIX % 2 ** 64)
        chi2 = 2 * torch._standard_gamma(torch.tensor([D / 2], dtype=torch.float64), generator=g)
        out.append(math.sqrt(D / max(float(chi2), 1e-300)))
    return torch.tensor(out, dtype=torch.float64)


def host_clean(model, x):
    """The clean latent the host noised, when it tells: ComfyUI's KSAMPLER sets `latent_image` on the
    model it passes (zeros for text-to-image, the encoded image for img2img). None otherwise."""
    c = getattr(model, "latent_image", None)
    return c if isinstance(c, torch.Tensor) and c.shape == x.shape else None


def representable(kappa, noise, dtype):
    """kappa (float64 [B]) lowered where kappa * noise (the start's noise component, [B, ...]) would pass
    finfo(dtype).max / HEADROOM in some element: min(kappa, finfo.max / (HEADROOM max|noise|)) per sample."""
    peak = noise.detach().abs().flatten(1).amax(1).to("cpu", torch.float64) if noise.numel() else kappa * 0
    limit = torch.finfo(dtype).max / HEADROOM / peak.clamp_min(torch.finfo(torch.float64).tiny)
    return torch.minimum(kappa, limit)


def poisson_start(model, space, x, s0, kappa, extra_args):
    """Turn the host's Gaussian start x = alpha0 c + n0 into the PFGM++ start alpha0 c + kappa n0, per sample;
    returns it and the kappas used (`representable` in x's dtype: module docstring).

    c is the host's clean latent when known (then this equals drawing the prior's noise kappa * n directly,
    the Poisson noise node's route); otherwise c = D(x; s0), which makes this one DDIM step of the
    diffusion ODE from sigma0 to kappa sigma0 (one extra model call). Samples with kappa = 1 stay as given.
    """
    if torch.all(kappa == 1):
        return x, kappa
    c = host_clean(model, x)
    if c is None:
        c = check_output(model(x, x.new_full([x.shape[0]], s0, dtype=torch.promote_types(x.dtype, torch.float32)),
                               **extra_args), x)
    wide = torch.promote_types(x.dtype, torch.float32)
    shift = space.alpha(s0) * c.to(wide)
    noise = x.to(wide) - shift
    kappa = representable(kappa, noise, x.dtype)
    k = kappa.reshape(-1, *[1] * (x.ndim - 1)).to(x.device)
    out = (shift + k.to(wide) * noise).to(x.dtype)
    return torch.where(k == 1, x, out), kappa


class SolverChoices:
    """The registry's deterministic samplers, read at each use (solvers registered later are included)."""

    def names(self):
        return sorted(n for n, spec in REGISTRY.items() if not spec.stochastic)

    def __contains__(self, name):
        return name in self.names()

    def __iter__(self):
        return iter(self.names())

    def __len__(self):
        return len(self.names())

    def __getitem__(self, i):
        return self.names()[i]

    def __repr__(self):
        return repr(tuple(self.names()))


PARAMS = {
    "D": Param(2048.0, 1.0, None, 1.0, tooltip="augmented dimensions: 1 = PFGM (heavy-tailed), larger = closer to diffusion, inf = diffusion"),
    "solver": Param("dpmpp_2m", choices=SolverChoices(), tooltip="deterministic inner solver integrating the flow"),
    "noise": Param("gaussian", choices=("gaussian", "poisson"),
                   tooltip="gaussian: host noise is Gaussian (KSampler), rescaled here per sample; poisson: it came from the Poisson noise node (same seed and D)"),
    **TRACK_PARAMS,
    "trained": Param("diffusion", choices=("diffusion", "at_D"),
                     tooltip="diffusion: the model was trained as a diffusion/flow model, queried at kappa*sigma; at_D: a PFGM++ checkpoint trained at this D, queried at sigma"),
}
"""`trained` comes last: saved workflows list a node's widget values by position."""


@register("poisson_flow", order=2, nfe_per_step=1, stochastic=True, params=PARAMS)
def sample_poisson_flow(model, x, sigmas, extra_args=None, callback=None, disable=None, space="ve",
                        D=2048.0, solver="dpmpp_2m", noise="gaussian", trained="diffusion", **track):
    """Poisson flow (PFGM++): heavy-tailed prior kappa = sqrt(D/chi2_D) per sample, model queried at kappa*sigma.

    r = sigma sqrt(D) (alignment); the inner solver (order and calls per step are its own; default
    dpmpp_2m) integrates dx/dsigma = (x - D(x; kappa sigma)) / sigma, i.e. the diffusion ODE on the
    per-sample schedule kappa * sigmas. trained = "at_D": the model is a PFGM++ network trained at this D,
    whose x0 prediction already is the posterior mean under the D kernel: it is queried at sigma itself and the
    solver integrates the PFGM++ ODE dx/dsigma = (x - D(x; sigma)) / sigma from the heavy-tailed start (the
    reference sampler of arXiv 2302.04265: EDM's ODE, only the start differs). Seed from extra_args['seed'] (DEFAULT_SEED = 0 if absent or None;
    otherwise an integer), sample k uses seed + k. A kappa whose start would overflow x's dtype is lowered
    (module docstring).
    """
    sp = resolve(space)
    s = check_sigmas(sigmas, sp)
    check_latent(x)
    extra = {} if extra_args is None else extra_args
    kappa = kappas(extra.get("seed"), x.shape[0], D)
    if noise == "gaussian":
        x, kappa = poisson_start(model, sp, x, s[0], kappa, extra)
    inner = Tracker(model, sp, **track) if track["track"] != "off" else model
    level = kappa if trained == "diffusion" else torch.ones_like(kappa)

    def flow_model(x, sigma, **kw):
        return query(inner, sp, x, sigma, level, kw)

    return REGISTRY[solver].fn(flow_model, x, sigmas, extra_args=extra_args, callback=callback,
                               disable=disable, space=space)
