"""diffusers networks under the registry's samplers and schedules: `sample(pipe, noise, ...)` runs a pipeline's
UNet or transformer (or any diffusers network with its scheduler) with any `samplerlab.samplers.REGISTRY`
sampler on any `samplerlab.schedulers.REGISTRY` schedule, in place of the pipeline's own denoising loop.

`Denoiser(net, scheduler)` makes the network a k-diffusion denoiser D(x, s, **net_kwargs) -> x0; the
scheduler's configuration says which parametrisation (diffusers' own conventions):
- alphas_cumprod schedulers (DDPM, DDIM, Euler, DPM-Solver, ...; EPS, V and x0 networks): VE level
  sigma = sqrt((1 - abar) / abar); the network sees c_in x with c_in = 1 / sqrt(sigma^2 + 1) at the
  continuous timestep t(sigma) interpolated linearly in log sigma over the training sigmas (as
  EulerDiscreteScheduler and k-diffusion's DiscreteSchedule do), and
  epsilon: D = x - sigma eps;  v_prediction: D = x / (sigma^2 + 1) - sigma v / sqrt(sigma^2 + 1);  sample: D = out.
- FlowMatch schedulers (SD3, Flux, ...): rectified flow x_t = (1 - t) x0 + t noise, the network's
  velocity v = noise - x0 at timestep t * time_scale, so D = x - t v. time_scale is
  num_train_timesteps (SD3 pipelines pass t * 1000), 1 for Flux transformers (FluxPipeline passes t / 1000).

Classifier-free guidance: `guidance` is a constant weight, or a `samplerlab.samplers.guidance.Pulse` /
`Interval` schedule over the noise level (`ScheduledCFG`); cond and uncond are the network's keyword
arguments for each (e.g. encoder_hidden_states from `pipe.encode_prompt`). The result is the latent at
s = 0, to be decoded by the pipeline's VAE.
"""
import functools
import math

import torch

from ..samplers import REGISTRY as SAMPLERS
from ..samplers.guidance import Interval, ScheduledCFG
from ..schedulers import REGISTRY as SCHEDULES
from ..schedulers.registry import for_denoise

PREDICTIONS = ("epsilon", "v_prediction", "sample")


def _config(scheduler, key, default=None):
    config = getattr(scheduler, "config", None)
    return getattr(config, key, default) if config is not None else default


def is_flow(scheduler) -> bool:
    """Whether a diffusers scheduler is a flow-matching one (FlowMatchEulerDiscreteScheduler and kin)."""
    return "FlowMatch" in type(scheduler).__name__


def output_of(result):
    """The tensor a diffusers network returns (first element of its tuple or of its output class)."""
    return result[0] if isinstance(result, (tuple, list)) else result.sample


class Denoiser:
    """A diffusers network with its scheduler as a k-diffusion denoiser D(x, s, **net_kwargs) -> x0 (module doc).

    Attributes: space ('ve' or 'flow'), sigma_min and sigma_max (the host levels the network was trained on).
    `seed` in the call (the samplers' source of randomness, in extra_args) is not passed to the network."""

    def __init__(self, net, scheduler, time_scale=None):
        self.net, self.scheduler = net, scheduler
        if is_flow(scheduler):
            self.space = "flow"
            n = int(_config(scheduler, "num_train_timesteps", 1000))
            self.time_scale = float(time_scale if time_scale is not None else
                                    (1.0 if type(net).__name__.startswith("Flux") else n))
            levels = torch.as_tensor(scheduler.sigmas, dtype=torch.float64)
            levels = levels[levels > 0]
            self.sigma_min, self.sigma_max = float(levels.min()), min(float(levels.max()), 1.0)
            return
        abar = getattr(scheduler, "alphas_cumprod", None)
        if abar is None:
            raise ValueError(f"scheduler must be a FlowMatch scheduler or one with alphas_cumprod (DDPM, Euler, ...), "
                             f"got {type(scheduler).__name__}")
        self.prediction = _config(scheduler, "prediction_type", "epsilon")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"scheduler prediction_type must be one of {list(PREDICTIONS)}, got {self.prediction!r}")
        abar = torch.as_tensor(abar, dtype=torch.float64)
        self.space, self.time_scale = "ve", None
        self.log_sigmas = (((1 - abar) / abar) ** 0.5).log()
        self.sigma_min, self.sigma_max = float(self.log_sigmas[0].exp()), float(self.log_sigmas[-1].exp())

    def timestep(self, sigma):
        """t(sigma) (float64, per sample): flow t * time_scale; VE linear in log sigma between training steps."""
        sigma = sigma.to(torch.float64)
        if self.space == "flow":
            return sigma * self.time_scale
        log_sigmas = self.log_sigmas.to(sigma.device)
        log_sigma = sigma.clamp(min=math.exp(float(log_sigmas[0])), max=math.exp(float(log_sigmas[-1]))).log()
        low = (torch.searchsorted(log_sigmas, log_sigma, right=True) - 1).clamp(0, len(log_sigmas) - 2)
        lo, hi = log_sigmas[low], log_sigmas[low + 1]
        return low + (log_sigma - lo) / (hi - lo)

    def __call__(self, x, sigma, seed=None, **net_kwargs):
        sigma = torch.as_tensor(sigma, device=x.device).reshape(-1).expand(x.shape[0])
        s = sigma.to(torch.float64).reshape(-1, *[1] * (x.ndim - 1))
        dtype = getattr(self.net, "dtype", x.dtype)
        c_in = 1.0 if self.space == "flow" else (s * s + 1).rsqrt()
        t = self.timestep(sigma).float()
        out = output_of(self.net((x * c_in).to(dtype), timestep=t, return_dict=False, **net_kwargs)).to(torch.float64)
        x64 = x.to(torch.float64)
        if self.space == "flow":
            x0 = x64 - s * out
        elif self.prediction == "epsilon":
            x0 = x64 - s * out
        elif self.prediction == "v_prediction":
            x0 = x64 / (s * s + 1) - s * out * (s * s + 1).rsqrt()
        else:
            x0 = out
        return x0.to(x.dtype)


def guided(denoiser, cond, uncond, guidance, space):
    """The model the sampler calls: D(cond) alone (no uncond, or constant guidance 1), else ScheduledCFG with a
    constant weight (Interval(w, w)) or the given Pulse / Interval schedule."""
    cond_model = functools.partial(denoiser, **(cond or {}))
    if isinstance(guidance, bool) or not (isinstance(guidance, (int, float)) or hasattr(guidance, "profile")):
        raise ValueError(f"guidance must be a number or a Pulse / Interval schedule, got {guidance!r}")
    if uncond is None or (isinstance(guidance, (int, float)) and guidance == 1):
        return cond_model
    schedule = Interval(float(guidance), float(guidance)) if isinstance(guidance, (int, float)) else guidance
    return ScheduledCFG(cond_model, functools.partial(denoiser, **uncond), schedule, space)


def sample(pipe, noise, *, sampler="dpmpp_2m", schedule="karras", steps=20, sigmas=None, cond=None, uncond=None,
           guidance=1.0, seed=0, init=None, denoise=1.0, net=None, scheduler=None, time_scale=None,
           sampler_options=None, schedule_options=None, callback=None):
    """Latents sampled from `pipe`'s network (pipe.unet or pipe.transformer, or `net`) with a registry sampler.

    noise: standard Gaussian latents in the network's layout ([B, C, H, W]; Flux: packed [B, N, C]).
    sampler / schedule: registry names (without the ComfyUI sl_ prefix); options in sampler_options /
    schedule_options. sigmas: explicit host levels ending in 0 instead of a schedule (e.g. the pipeline
    scheduler's own `scheduler.sigmas` after set_timesteps). cond / uncond: keyword arguments of the network
    (encoder_hidden_states=..., pooled_projections=..., ...). guidance: a weight or a Pulse / Interval.
    seed: extra_args['seed'] for stochastic samplers (sample k of the batch uses seed + k). init: clean
    latents to start from (img2img) with `denoise` in (0, 1] of the schedule. Returns the latents at s = 0.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    net = net if net is not None else getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    scheduler = scheduler if scheduler is not None else getattr(pipe, "scheduler", None)
    if net is None or scheduler is None:
        raise ValueError("pipe must have a unet or transformer and a scheduler (or pass net= and scheduler=)")
    denoiser = Denoiser(net, scheduler, time_scale)
    if sigmas is None:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")
        spec = SCHEDULES[schedule]
        sigmas = for_denoise(lambda n: spec.fn(n, denoiser.sigma_min, denoiser.sigma_max, space=denoiser.space,
                                               **(schedule_options or {})), steps, denoise)
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32, device=noise.device)
    s0 = sigmas[0].to(noise.dtype)
    if init is None:
        x = noise * s0
    else:
        x = (1 - s0) * init + s0 * noise if denoiser.space == "flow" else init + s0 * noise
    model = guided(denoiser, cond, uncond, guidance, denoiser.space)
    return SAMPLERS[sampler].fn(model, x, sigmas, extra_args={"seed": seed}, callback=callback, disable=True,
                                space=denoiser.space, **(sampler_options or {}))
