"""What the calibrated nodes share: the cache folder, the cache key's model and conditioning identity, a
staged progress bar with Cancel, and a calibration run inside ComfyUI's own sampling path.

Model identity: the diffusion model's class and model type, its model_sampling class and parameters
(sigma range, shift, multiplier), a SHA-256 of the first 4096 values of the first four weight tensors by
name (so two fine-tunes of one architecture differ), and the names and strengths of the patches (LoRAs) on
the ModelPatcher. The conditioning's tensors are hashed the same way.
"""
import hashlib
import json
import os

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import torch

from ..schedulers import REGISTRY as SCHEDULERS
from .host import model_sampling_of, sigma_range, space_of

CACHE_ENV = "SAMPLERLAB_CACHE_DIR"


def cache_folder(given=""):
    """The user's choice, else $SAMPLERLAB_CACHE_DIR, else <ComfyUI user directory>/samplerlab/schedules."""
    return given or os.environ.get(CACHE_ENV) or os.path.join(folder_paths.get_user_directory(), "samplerlab", "schedules")


def _digest(tensors):
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().flatten()[:4096].to("cpu", torch.float32).contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def model_identity(model):
    """A JSON-able identity of a ModelPatcher (module docstring)."""
    base = model.model
    ms = model_sampling_of(model)
    state = base.diffusion_model.state_dict() if hasattr(base, "diffusion_model") else {}
    first = [state[k] for k in sorted(state)[:4]]
    params = {k: float(getattr(ms, k)) for k in ("shift", "multiplier", "sigma_data") if hasattr(ms, k)}
    patches = sorted((k, [float(p[0]) for p in v]) for k, v in getattr(model, "patches", {}).items())
    return {"class": type(base).__name__, "model_type": str(getattr(base, "model_type", "")),
            "sampling": type(ms).__name__, "range": list(sigma_range(ms)), "params": params,
            "weights": _digest(first), "patches": hashlib.sha256(json.dumps(patches).encode()).hexdigest()[:16]}


def cond_identity(conditioning):
    return _digest([c[0] for c in conditioning if isinstance(c[0], torch.Tensor)])


def staged_progress(totals: dict):
    """progress(stage, done, total) for the core's calibrations: one ComfyUI progress bar over the stages in
    `totals` (stage -> its share in bar units, in the order they run), and Cancel (raises when the user
    interrupted). A stage starts where the bar is, so a stage that does not run (the calibrated solver's "order")
    leaves no gap; the last stage fills the rest of the bar."""
    size = sum(totals.values())
    bar = comfy.utils.ProgressBar(size)
    last = list(totals)[-1]
    offsets, at = {}, [0]

    def progress(stage, done, total):
        comfy.model_management.throw_exception_if_processing_interrupted()
        start = offsets.setdefault(stage, at[0])
        units = size - start if stage == last else totals[stage]
        at[0] = max(at[0], start + round(units * min(done, total) / max(total, 1)))
        bar.update_absolute(at[0])

    return progress


def calibrate_in_host(model, positive, negative, cfg, latent, seeds, seed, work):
    """work(model_k, x_T, extra_args, sigma_min, sigma_max, space) run inside ComfyUI's own sampling path
    (sample_custom with a KSAMPLER whose function calibrates), from `seeds` latents of the latent's shape drawn
    with `seed`, so conditioning, cfg, model loading and patches are exactly those of a real run; its result."""
    ms = model_sampling_of(model)
    sigma_min, sigma_max = sigma_range(ms)
    space = space_of(ms)
    shape = latent["samples"].shape[1:]
    latent_image = torch.zeros((seeds, *shape), dtype=latent["samples"].dtype)
    noise = comfy.sample.prepare_noise(latent_image, seed)
    result = {}

    def run(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        result["out"] = work(model_k, x, extra_args, sigma_min, sigma_max, space)
        return x

    teacher = SCHEDULERS["karras"].fn(2, sigma_min, sigma_max, space=space).float()
    comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.KSAMPLER(run), teacher, positive, negative,
                               latent_image, disable_pbar=True, seed=seed)
    return result["out"]
