"""Schedule nodes beyond the generated ones: a schedule calibrated for the model at hand, and a picture of
any SIGMAS. Node ids `SamplerLabCalibratedSchedule` and `SamplerLabPlotSigmas` are a compatibility promise.

Cache key (model identity): the diffusion model's class and model type, its model_sampling class and
parameters (sigma range, shift, multiplier), a SHA-256 of the first 4096 values of the first four weight
tensors by name (so two fine-tunes of one architecture differ), and the names and strengths of the
patches (LoRAs) on the ModelPatcher; plus the conditioning (its tensors hashed), cfg, the latent shape,
solver, steps, seeds and the reference budget. Change any of these and the schedule is recalibrated.
"""
import hashlib
import io as bytes_io
import json
import logging
import os

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import numpy as np
import torch
from comfy_api.latest import io
from PIL import Image

from ..samplers import REGISTRY as SAMPLERS
from ..schedulers import REGISTRY as SCHEDULERS
from ..schedulers import calibrate as cal
from .generated import CATEGORY
from .host import model_sampling_of, sigma_range, space_of
from .views import model_view
from .widgets import schema

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


def calibrate_in_host(model, positive, negative, cfg, latent, solver, steps, seeds, reference_calls):
    """Run `cal.calibrate` inside ComfyUI's own sampling path (sample_custom with a KSAMPLER whose function
    calibrates), so conditioning, cfg, model loading and patches are exactly those of a real run."""
    ms = model_sampling_of(model)
    sigma_min, sigma_max = sigma_range(ms)
    space = space_of(ms)
    shape = latent["samples"].shape[1:]
    latent_image = torch.zeros((seeds, *shape), dtype=latent["samples"].dtype)
    noise = comfy.sample.prepare_noise(latent_image, 0)
    total = {"reference": reference_calls, "search": len(cal.GAIN_SCALES), "verify": len(cal.GAIN_SCALES) + 1}
    bar = comfy.utils.ProgressBar(sum(total.values()))
    offset = {"reference": 0, "search": total["reference"], "verify": total["reference"] + total["search"]}
    result = {}

    def progress(stage, done, _):
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(offset[stage] + min(done, total[stage]))

    def run(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        result["cal"] = cal.calibrate(model_k, x, sigma_min, sigma_max, solver, steps, space, extra_args,
                                      reference_calls=reference_calls, progress=progress)
        return x

    teacher = SCHEDULERS["karras"].fn(2, sigma_min, sigma_max, space=space).float()
    comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.KSAMPLER(run), teacher, positive, negative,
                               latent_image, disable_pbar=True, seed=0)
    return result["cal"]


class CalibratedSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SamplerLabCalibratedSchedule",
            display_name="Calibrated schedule",
            category=f"{CATEGORY}/schedulers",
            description="A schedule of `steps` levels chosen for THIS model and solver: one fine reference run "
                        "(about 200 model calls on a batch of `seeds` latents), dynamic programming over its levels "
                        "on a linearised model, and a check of the few best candidates (Karras among them) on the real "
                        "model. Cached as JSON per model, conditioning, solver and steps; later runs reuse it.",
            search_aliases=["calibrate", "optimal steps", "ays", "gits", "oss"],
            inputs=[io.Model.Input("model", tooltip="The model the schedule is calibrated for (its LoRAs included)."),
                    io.Conditioning.Input("positive", tooltip="Prompt conditioning of the calibration runs."),
                    io.Conditioning.Input("negative", tooltip="Negative conditioning of the calibration runs."),
                    io.Latent.Input("latent", tooltip="Only its shape is used (the size of the latents calibrated on)."),
                    io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                                   tooltip="The cfg the schedule will be used with."),
                    io.Combo.Input("solver", options=sorted(SAMPLERS), default="exp_multistep" if "exp_multistep" in SAMPLERS else "dpmpp_2m",
                                   tooltip="The samplerlab sampler the schedule is optimised for (use it with the same sampler)."),
                    io.Int.Input("steps", default=8, min=1, max=60, tooltip="Sampling steps of the schedule (steps + 1 levels, the last 0)."),
                    io.Int.Input("seeds", default=2, min=1, max=16, tooltip="Latents in the calibration batch."),
                    io.Int.Input("reference_calls", default=200, min=3, max=200, tooltip="Model calls of the reference run."),
                    io.Combo.Input("mode", options=["reuse", "recalibrate"], default="reuse",
                                   tooltip="reuse: load the cached schedule when there is one; recalibrate: compute and overwrite."),
                    io.String.Input("cache_dir", default="", optional=True,
                                    tooltip=f"Folder of the JSON cache; empty: ${CACHE_ENV} or <ComfyUI user dir>/samplerlab/schedules.")],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, cfg, solver, steps, seeds, reference_calls, mode, cache_dir=""):
        folder = cache_folder(cache_dir)
        key = {"model": model_identity(model), "positive": cond_identity(positive), "negative": cond_identity(negative),
               "cfg": float(cfg), "shape": list(latent["samples"].shape[1:]), "solver": solver, "steps": int(steps),
               "seeds": int(seeds), "reference_calls": int(reference_calls), "space": space_of(model)}
        found = cal.load_cached(folder, key) if mode == "reuse" else None
        if found is None:
            found = calibrate_in_host(model, positive, negative, cfg, latent, solver, steps, seeds, reference_calls)
            path = cal.save_cached(folder, key, found)
            logging.info("samplerlab: calibrated %s, %d steps in %d model calls, %.1f s -> %s",
                         solver, steps, found.model_calls, found.seconds, path)
        sigmas = torch.tensor(found.sigmas, dtype=torch.float32)
        return io.NodeOutput(sigmas, ui={"sl_sigmas": sigmas.tolist(), "sl_model": [model_view(model_sampling_of(model))]})


def sigmas_picture(sigmas, width=512, height=320):
    """log sigma against step as an IMAGE tensor [1, H, W, 3] in [0, 1] (matplotlib; the final 0 is left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if s.numel() < 2 or not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise ValueError(f"sigmas must be at least two finite levels >= 0, got {s.tolist()}")
    pos = s[s > 0]
    fig, ax = plt.subplots(figsize=(width / 100, height / 100), dpi=100)
    ax.semilogy(range(len(pos)), pos.tolist(), "o-", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("sigma (log)")
    ax.set_title(f"{len(s) - 1} steps, {float(s[0]):.4g} -> {float(s[-1]):.4g}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    buf = bytes_io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    img = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(img)[None]


class PlotSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SamplerLabPlotSigmas",
            display_name="Plot sigmas",
            category=f"{CATEGORY}/schedulers",
            description="Draws any SIGMAS as a picture: log sigma against step.",
            search_aliases=["plot sigmas", "schedule graph"],
            inputs=[io.Sigmas.Input("sigmas", tooltip="Any SIGMAS (a scheduler's output)."),
                    io.Int.Input("width", default=512, min=128, max=2048, step=16, tooltip="Width of the picture in pixels."),
                    io.Int.Input("height", default=320, min=96, max=2048, step=16, tooltip="Height of the picture in pixels.")],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, sigmas, width, height) -> io.NodeOutput:
        return io.NodeOutput(sigmas_picture(sigmas, width, height), ui={"sl_sigmas": torch.as_tensor(sigmas).flatten().tolist()})


NODES = [CalibratedSchedule, PlotSigmas]
