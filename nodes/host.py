"""Adapters between ComfyUI's objects and the pure core: which parametrisation a model uses, host-ready
sampler functions and scheduler handlers, and ComfyUI's running server (routes, messages to the page)."""
import functools
import sys

import comfy.model_sampling

from ..schedulers.registry import for_denoise


def model_sampling_of(model):
    """The model_sampling object behind what a KSAMPLER function receives (KSamplerX0Inpaint -> CFGGuider
    -> BaseModel), behind a MODEL (ModelPatcher), or the object itself."""
    probe = model
    for _ in range(6):
        if isinstance(probe, (comfy.model_sampling.EPS, comfy.model_sampling.CONST)):
            return probe
        if hasattr(probe, "get_model_object"):
            return probe.get_model_object("model_sampling")
        if hasattr(probe, "model_sampling"):
            return probe.model_sampling
        probe = getattr(probe, "inner_model", None)
        if probe is None:
            break
    raise ValueError(f"cannot find the model_sampling of {type(model).__name__}: samplerlab samplers need a ComfyUI model")


def space_of(model) -> str:
    """'flow' for rectified-flow (CONST) models, 've' for EPS / V / EDM / X0 models."""
    return "flow" if isinstance(model_sampling_of(model), comfy.model_sampling.CONST) else "ve"


PATCH_KEY = "samplerlab_sampler_options"
"""model_options[PATCH_KEY][sampler name]: options a MODEL patch node fixes for that sampler (e.g. the D a PFGM++
checkpoint was trained at); they reach the sampler through the run's extra_args["model_options"]."""


def patched_options(name, extra_args):
    """The options the model's patch fixes for sampler `name` ({} when none)."""
    model_options = (extra_args or {}).get("model_options") or {}
    return dict(model_options.get(PATCH_KEY, {}).get(name, {}))


def host_sampler(spec, **options):
    """spec.fn as ComfyUI calls it: the parametrisation read from the model, options bound; options the model's
    patch fixes (`patched_options`) take precedence, since they state how the checkpoint was trained."""

    @functools.wraps(spec.fn)
    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, **given):
        return spec.fn(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                       space=space_of(model), **{**options, **given, **patched_options(spec.name, extra_args)})

    return sample


def sigma_range(model_sampling):
    return float(model_sampling.sigma_min), float(model_sampling.sigma_max)


def host_schedule(spec, model_sampling, steps, denoise=1.0, **options):
    """The schedule for a model: its own sigma range, `denoise` < 1 as BasicScheduler does, float32 on CPU."""
    sigma_min, sigma_max = sigma_range(model_sampling)
    space = space_of(model_sampling)
    return for_denoise(lambda n: spec.fn(n, sigma_min, sigma_max, space=space, **options), steps, denoise).float()


def scheduler_handler(spec):
    """A `SchedulerHandler(handler, use_ms=True)` function: handler(model_sampling, steps)."""
    return lambda model_sampling, steps: host_schedule(spec, model_sampling, steps)


def prompt_server():
    """ComfyUI's running PromptServer, or None where there is none (tests, scripts: no `server` module, or no instance)."""
    server = sys.modules.get("server")
    return getattr(getattr(server, "PromptServer", None), "instance", None)


def send_to_page(event, data) -> bool:
    """Send a message to the page that queued the running prompt, as ComfyUI sends its own "executed"
    (PromptServer.send_sync to the prompt's client_id); False, and nothing sent, without a server or a client."""
    server = prompt_server()
    if server is None or getattr(server, "client_id", None) is None:
        return False
    server.send_sync(event, data, server.client_id)
    return True
