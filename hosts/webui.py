"""The registries in the A1111 / Forge / reForge WebUIs: every sampler as `sl_<name>` in the sampler list
and every schedule as `sl_<name>` in the scheduler list ("Schedule type", A1111 >= 1.9), added in place,
once, idempotently, through the WebUI's own data structures:

- samplers: a `sd_samplers_common.SamplerData(label, constructor, aliases, options)` whose constructor
  builds the WebUI's own `sd_samplers_kdiffusion.KDiffusionSampler` around a callable (the route the
  WebUIs use for their Restart sampler); it is appended to `sd_samplers.all_samplers`, entered in
  `all_samplers_map`, and `set_samplers()` rebuilds the visible lists;
- schedules: a `sd_schedulers.Scheduler(name, label, function, default_rho, need_inner_model)` appended
  to `schedulers` and entered in `schedulers_map` under its name and label.

The WebUI calls a sampler as fn(model_wrap_cfg, x, sigmas=..., extra_args={cond, uncond, cond_scale,
...}, disable=False, callback=...), the k-diffusion signature, and passes `sigmas` because the function
declares it. The parametrisation is read from the model it passes (`space_of`): Forge's predictor
(`prediction_type == 'const'`: Flux, SD3 and other flow models), a ComfyUI-style `model_sampling`
(reForge, A1111's SD3) or A1111's `parameterization` ('eps' / 'v'). The seed is the batch's first seed
(`p.seeds[0]`; the WebUI's batch seeds are consecutive, so image k gets the seed it would get alone).

Nothing here imports the WebUI at module level: `register()` imports its modules when called from the
extension's `scripts/samplerlab_webui.py`; `register_into(...)` takes them as arguments (the tests).
"""
import logging
import os

import torch

from ..samplers import REGISTRY as SAMPLERS
from ..schedulers import REGISTRY as SCHEDULERS

PREFIX = "sl_"
SWITCH = "SAMPLERLAB_NO_REGISTER"
LOG = logging.getLogger("samplerlab")
DEPTH = 8
FLOW_CLASSES = ("CONST", "ModelSamplingDiscreteFlow", "ModelSamplingFlux")


def _is_flow_sampling(model_sampling) -> bool:
    """A ComfyUI-style model_sampling (reForge's ldm_patched, A1111's SD3) of a rectified-flow model."""
    return any(cls.__name__ in FLOW_CLASSES for cls in type(model_sampling).__mro__)


def _unet_model(obj):
    """obj.forge_objects.unet.model (Forge / reForge checkpoints), or None."""
    unet = getattr(getattr(obj, "forge_objects", None), "unet", None)
    return getattr(unet, "model", None)


def space_of(model) -> str:
    """'flow' or 've' for what a WebUI passes to a sampler (its CFG denoiser) or a scheduler (its model wrap),
    read along the chain of `inner_model`s: Forge's predictor.prediction_type ('const' = flow), a
    model_sampling (of the object, its .model or its Forge UNet), A1111's parameterization ('eps' / 'v');
    a ValueError when none is found."""
    probe = model
    for _ in range(DEPTH):
        for holder in (probe, _unet_model(probe)):
            predictor = getattr(holder, "predictor", None)
            if getattr(predictor, "prediction_type", None) is not None:
                return "flow" if predictor.prediction_type == "const" else "ve"
        for holder in (probe, getattr(probe, "model", None), _unet_model(probe)):
            model_sampling = getattr(holder, "model_sampling", None)
            if model_sampling is not None:
                return "flow" if _is_flow_sampling(model_sampling) else "ve"
        if getattr(probe, "parameterization", None) in ("eps", "v", "x0"):
            return "ve"
        probe = getattr(probe, "inner_model", None)
        if probe is None:
            break
    raise ValueError(f"cannot tell the parametrisation of {type(model).__name__}: samplerlab needs a WebUI model "
                     "(a Forge predictor, a model_sampling or a parameterization)")


def batch_seed(model):
    """The first seed of the batch being sampled (`p.seeds[0]` of the CFG denoiser's processing object), or None."""
    seeds = getattr(getattr(model, "p", None), "seeds", None)
    return int(seeds[0]) if seeds else None


class SeedFree:
    """The WebUI's CFG denoiser as the registry's samplers call it: `seed` (the samplers' source of
    randomness, carried in extra_args) is not passed on, the other extra_args are."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x, sigma, seed=None, **extra_args):
        return self.model(x, sigma, **extra_args)


def webui_sampler(spec):
    """spec.fn as a WebUI calls a k-diffusion sampler: space read from the model, the batch seed added."""

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra = dict(extra_args or {})
        seed = batch_seed(model)
        if seed is not None:
            extra["seed"] = seed
        return spec.fn(SeedFree(model), x, sigmas, extra_args=extra, callback=callback, disable=disable,
                       space=space_of(model))

    sample.__name__ = sample.__qualname__ = f"sample_{PREFIX}{spec.name}"
    sample.__doc__ = spec.fn.__doc__
    return sample


def webui_schedule(spec):
    """spec.fn as a WebUI scheduler function(n, sigma_min, sigma_max, inner_model, device[, rho]): n + 1
    float32 levels on `device`; the space is read from the model wrap (need_inner_model=True)."""

    def schedule(n, sigma_min, sigma_max, inner_model=None, device=None, **options):
        levels = spec.fn(int(n), float(sigma_min), float(sigma_max), space=space_of(inner_model), **options)
        return levels.to(device=device or "cpu", dtype=torch.float32)

    schedule.__name__ = schedule.__qualname__ = f"{PREFIX}{spec.name}"
    schedule.__doc__ = spec.fn.__doc__
    return schedule


def register_into(sd_samplers, sd_samplers_common, sd_samplers_kdiffusion, sd_schedulers):
    """Add every registered sampler and schedule under its sl_ name to the given WebUI modules; entries
    already there (a second call, a reloaded script) are kept. Returns the sl_ names, samplers first."""
    names = []
    for name, spec in sorted(SAMPLERS.items()):
        label = PREFIX + name
        if label not in sd_samplers.all_samplers_map:
            fn = webui_sampler(spec)
            data = sd_samplers_common.SamplerData(
                label, lambda model, fn=fn: sd_samplers_kdiffusion.KDiffusionSampler(fn, model), [],
                {"second_order": spec.nfe_per_step == 2})
            sd_samplers.all_samplers.append(data)
            sd_samplers.all_samplers_map[label] = data
        names.append(label)
    for name, spec in sorted(SCHEDULERS.items()):
        label = PREFIX + name
        if label not in sd_schedulers.schedulers_map:
            rho = spec.params["rho"].default if "rho" in spec.params else -1
            entry = sd_schedulers.Scheduler(label, label, webui_schedule(spec), default_rho=rho, need_inner_model=True)
            sd_schedulers.schedulers.append(entry)
            sd_schedulers.schedulers_map[label] = entry
        names.append(label)
    sd_samplers.set_samplers()
    cached = getattr(sd_samplers, "get_sampler_and_scheduler", None)
    if hasattr(cached, "cache_clear"):
        cached.cache_clear()  # name lookups made before the new entries existed
    return names


def register():
    """Register into the running WebUI (called by scripts/samplerlab_webui.py); nothing is done when the
    environment variable SAMPLERLAB_NO_REGISTER is set to a non-empty value."""
    if os.environ.get(SWITCH):
        LOG.info("samplerlab: %s is set, WebUI sampler lists left untouched", SWITCH)
        return []
    from modules import sd_samplers, sd_samplers_common, sd_samplers_kdiffusion, sd_schedulers

    return register_into(sd_samplers, sd_samplers_common, sd_samplers_kdiffusion, sd_schedulers)
