"""Poisson flow (PFGM, arXiv 2209.11178; PFGM++, arXiv 2302.04265) for a model trained as a diffusion model.

Data in N dims plus D augmented dims; the perturbation kernel p_r(x|y) ∝ (||x - y||^2 + r^2)^(-(N+D)/2)
with the alignment r = sigma sqrt(D) is a multivariate Student-t with D degrees of freedom and scale
sigma, i.e. a Gaussian scale mixture x = y + kappa sigma eps, kappa = sqrt(D / chi2_D) (SCIENCE.md §1).
In N >> 1 dims each sample's kappa is read off the sample and stays constant along the ODE
dx/dsigma = (x - E[y|x]) / sigma, and E[y|x] is the Gaussian (D = inf) denoiser at sigma_eff = kappa sigma.
So a diffusion model runs PFGM++ by (1) starting each sample from the heavy-tailed prior, one chi2_D
draw per sample from the seed, and (2) being queried at the per-sample level kappa sigma ([B] tensors)
while any deterministic solver integrates in the nominal levels. D = inf is diffusion (kappa = 1).
"""
import math

import torch

from .registry import REGISTRY, Param, register
from .space import resolve
from .stepping import check_sigmas
from .tracking import TRACK_PARAMS, Tracker, query

SEED_MIX = 0x9E3779B97F4A7C15


def kappas(seed, batch, D):
    """Per-sample scale kappa_k = sqrt(D / chi2_D), chi2_D = 2 Gamma(D/2) drawn by a torch.Generator seeded
    from seed + k (mixed by a fixed odd constant, so it is not the stream the host draws its noise from).
    float64 [B] on the CPU; all ones at D = inf."""
    D = PARAMS["D"].check("D", D)
    if math.isinf(D):
        return torch.ones(batch, dtype=torch.float64)
    out = []
    for k in range(batch):
        g = torch.Generator().manual_seed((int(seed) + k) * SEED_MIX % 2 ** 64)
        chi2 = 2 * torch._standard_gamma(torch.tensor([D / 2], dtype=torch.float64), generator=g)
        out.append(math.sqrt(D / max(float(chi2), 1e-300)))
    return torch.tensor(out, dtype=torch.float64)


def host_clean(model, x):
    """The clean latent the host noised, when it tells: ComfyUI's KSAMPLER sets `latent_image` on the
    model it passes (zeros for text-to-image, the encoded image for img2img). None otherwise."""
    c = getattr(model, "latent_image", None)
    return c if isinstance(c, torch.Tensor) and c.shape == x.shape else None


def poisson_start(model, space, x, s0, kappa, extra_args):
    """Turn the host's Gaussian start x = alpha0 c + n0 into the PFGM++ start alpha0 c + kappa n0, per sample.

    c is the host's clean latent when known (then this equals drawing the prior's noise kappa * n directly,
    the Poisson noise node's route); otherwise c = D(x; s0), which makes this one DDIM step of the
    diffusion ODE from sigma0 to kappa sigma0 (one extra model call). Samples with kappa = 1 stay as given.
    """
    if torch.all(kappa == 1):
        return x
    c = host_clean(model, x)
    if c is None:
        c = model(x, x.new_full([x.shape[0]], s0, dtype=torch.promote_types(x.dtype, torch.float32)), **extra_args)
    shift = space.alpha(s0) * c.to(x.dtype)
    k = kappa.reshape(-1, *[1] * (x.ndim - 1)).to(x.device)
    out = (shift + k * (x - shift)).to(x.dtype)
    return torch.where(k == 1, x, out)


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
}


@register("poisson_flow", order=2, nfe_per_step=1, stochastic=True, params=PARAMS)
def sample_poisson_flow(model, x, sigmas, extra_args=None, callback=None, disable=None, space="ve",
                        D=2048.0, solver="dpmpp_2m", noise="gaussian", **track):
    """Poisson flow (PFGM++): heavy-tailed prior kappa = sqrt(D/chi2_D) per sample, model queried at kappa*sigma.

    r = sigma sqrt(D) (alignment); the inner solver (order and calls per step are its own; default
    dpmpp_2m) integrates dx/dsigma = (x - D(x; kappa sigma)) / sigma, i.e. the diffusion ODE on the
    per-sample schedule kappa * sigmas. Seed from extra_args['seed'] (0 if absent), sample k uses seed + k.
    """
    sp = resolve(space)
    s = check_sigmas(sigmas, sp)
    extra = {} if extra_args is None else extra_args
    kappa = kappas(extra.get("seed", 0), x.shape[0], D)
    if noise == "gaussian":
        x = poisson_start(model, sp, x, s[0], kappa, extra)
    inner = Tracker(model, sp, **track) if track["track"] != "off" else model

    def flow_model(x, sigma, **kw):
        return query(inner, sp, x, sigma, kappa, kw)

    return REGISTRY[solver].fn(flow_model, x, sigmas, extra_args=extra_args, callback=callback,
                               disable=disable, space=space)
