"""What every solver shares: checked noise levels, model queries, callbacks and the first-order step.

A solver is a loop over `Stepper`; it advances the host state x from level s to t with
`ddim(x, d, s, t)` plus its own higher-order corrections, all with float64 scalar coefficients.
"""
import math

import torch
from tqdm.auto import trange

from .space import resolve


def check_sigmas(sigmas, space) -> list:
    """The levels of `sigmas` as float64 Python floats, or a ValueError naming what is wrong."""
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1:
        shape = tuple(sigmas.shape) if isinstance(sigmas, torch.Tensor) else type(sigmas).__name__
        raise ValueError(f"sigmas must be a 1-D tensor of noise levels, got {shape}")
    if len(sigmas) < 2:
        raise ValueError(f"sigmas must hold at least two levels (start and end), got {len(sigmas)}")
    s = sigmas.detach().to("cpu", torch.float64).tolist()
    if not all(math.isfinite(v) for v in s):
        raise ValueError(f"sigmas must be finite, got {s}")
    if min(s) < 0:
        raise ValueError(f"sigmas must be >= 0, got {min(s)}")
    for i in range(len(s) - 1):
        if not s[i + 1] < s[i]:
            raise ValueError(f"sigmas must be strictly descending, got {s[i]} then {s[i + 1]} at index {i}")
    if s[0] > space.max_level():
        raise ValueError(f"sigmas of a {space.name} model must lie in [0, {space.max_level()}], got {s[0]}")
    return s


def check_latent(x):
    """A ValueError naming the latent unless x is a floating tensor with only finite values."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"the latent x must be a tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"the latent x must be a floating-point tensor (float16/bfloat16/float32/float64), got {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"the latent x must have a batch dimension, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"the latent x must be finite, got {bad} NaN/inf value(s) of {x.numel()} ({x.dtype})")


def check_output(d, x):
    """The model's x0 prediction d, or a ValueError when it does not have the shape of the latent x
    (a broadcastable shape would otherwise spread silently over the batch)."""
    if not isinstance(d, torch.Tensor) or d.shape != x.shape:
        got = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
        raise ValueError(f"the model must return an x0 prediction of the latent's shape {tuple(x.shape)}, got {got}")
    return d


def ddim(space, x, d, s: float, t: float):
    """First-order step from level s to t with x0 prediction d: x' = (sigma_t/sigma_s) x + (alpha_t - alpha_s sigma_t/sigma_s) d.

    This is exact when d does not change (DDIM, Song et al. 2021; Euler in the VE view, Karras et al. 2022);
    it equals x' = (sigma_t/sigma_s) x + alpha_t (1 - e^-h) d with h = lambda_t - lambda_s.
    """
    ratio = space.sigma(t) / space.sigma(s)
    return x.mul(ratio).add_(d, alpha=space.alpha(t) - space.alpha(s) * ratio)


class Stepper:
    """One sampling run over host levels `sigmas`: iterate it for the step indices."""

    def __init__(self, model, x, sigmas, extra_args=None, callback=None, disable=None, space="ve"):
        self.space = resolve(space)
        self.s = check_sigmas(sigmas, self.space)
        check_latent(x)
        self.lam = [self.space.lam(v) for v in self.s]
        self.sigmas, self.model, self.callback, self.disable = sigmas, model, callback, disable
        self.extra_args = {} if extra_args is None else extra_args
        self.ones = x.new_ones([x.shape[0]], dtype=torch.promote_types(x.dtype, torch.float32))

    def __iter__(self):
        return iter(trange(len(self.s) - 1, disable=self.disable))

    def denoise(self, x, s):
        """The model's x0 prediction D(x; s), queried with a [B] tensor of levels (at least float32, so
        half-precision latents do not round the level): s one level (float) or one per sample ([B] tensor
        or sequence). The answer must have x's shape (`check_output`)."""
        if isinstance(s, (int, float)):
            levels = self.ones * s
        else:
            levels = torch.as_tensor(s, dtype=torch.float64).to(self.ones.device, self.ones.dtype)
        return check_output(self.model(x, levels, **self.extra_args), x)

    def report(self, i: int, x, denoised):
        """The per-step callback ComfyUI's previews, progress and cancellation hang on."""
        if self.callback is not None:
            sigma = self.sigmas[i]
            self.callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})

    def ddim(self, x, d, i: int):
        """First-order step from level i to level i + 1."""
        return ddim(self.space, x, d, self.s[i], self.s[i + 1])

    def h(self, i: int) -> float:
        """lambda_{i+1} - lambda_i (inf on the last step to 0 and on a flow model's first step from 1)."""
        return self.lam[i + 1] - self.lam[i]
