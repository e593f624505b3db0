"""Schedule nodes beyond the generated ones: a schedule calibrated for the model at hand, and a picture of
any SIGMAS. Node ids `SamplerLabCalibratedSchedule` and `SamplerLabPlotSigmas` are a compatibility promise.

Cache key: the model's identity (nodes/calibration.py), the conditioning (its tensors hashed), cfg, the latent
shape, solver, steps, seeds and the reference budget. Change any of these and the schedule is recalibrated.
"""
import logging

import numpy as np
import torch
from comfy_api.latest import io

from ..lab import charts
from ..samplers import REGISTRY as SAMPLERS
from ..schedulers import calibrate as cal
from .calibration import CACHE_ENV, cache_folder, cond_identity, model_identity, staged_progress
from .calibration import calibrate_in_host as in_host
from .generated import CATEGORY
from .host import model_sampling_of, sigma_range, space_of
from .views import schedule_ui
from .widgets import schema


def calibrate_in_host(model, positive, negative, cfg, latent, solver, steps, seeds, reference_calls):
    """`cal.calibrate` inside ComfyUI's sampling path (calibration.calibrate_in_host), with a progress bar."""
    progress = staged_progress({"reference": reference_calls, "search": len(cal.GAIN_SCALES),
                                "verify": len(cal.GAIN_SCALES) + 1})
    return in_host(model, positive, negative, cfg, latent, seeds, 0,
                   lambda model_k, x, extra_args, sigma_min, sigma_max, space: cal.calibrate(
                       model_k, x, sigma_min, sigma_max, solver, steps, space, extra_args,
                       reference_calls=reference_calls, progress=progress))


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
                    io.Int.Input("steps", default=8, min=1, max=60,
                                 tooltip="At most (reference_calls + 1) // 2 - 1 (99 at 200 calls): the levels are chosen among the reference's."),
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
        cal.check_budget(steps, reference_calls)
        folder = cache_folder(cache_dir)
        levels = sigma_range(model_sampling_of(model))
        key = {"model": model_identity(model), "positive": cond_identity(positive), "negative": cond_identity(negative),
               "cfg": float(cfg), "shape": list(latent["samples"].shape[1:]), "solver": solver, "steps": int(steps),
               "seeds": int(seeds), "reference_calls": int(reference_calls), "space": space_of(model)}
        found = cal.load_cached(folder, key, levels) if mode == "reuse" else None
        if found is None:
            cal.check_cache_dir(folder)
            found = calibrate_in_host(model, positive, negative, cfg, latent, solver, steps, seeds, reference_calls)
            try:
                path = cal.save_cached(folder, key, found)
            except ValueError as e:  # the folder went bad during the run: keep the schedule, say why it is not cached
                logging.warning("samplerlab: calibrated schedule not cached: %s", e)
                path = "(not cached)"
            logging.info("samplerlab: calibrated %s, %d steps in %d model calls, %.1f s -> %s",
                         solver, steps, found.model_calls, found.seconds, path)
        sigmas = torch.tensor(found.sigmas, dtype=torch.float32)
        return io.NodeOutput(sigmas, ui=schedule_ui(sigmas, model_sampling_of(model), key))


def sigmas_picture(sigmas, width=512, height=320):
    """log sigma against step as an IMAGE tensor [1, H, W, 3] in [0, 1], drawn with PIL (lab.charts; ComfyUI
    ships no matplotlib); the final 0 is left out, x ticks on whole steps."""
    s = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if s.numel() < 2 or not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise ValueError(f"sigmas must be at least two finite levels >= 0, got {s.tolist()}")
    pos = s[s > 0].tolist()
    title = f"{len(s) - 1} steps" + (f", {float(s[0]):.4g} -> {float(s[-1]):.4g}" if width >= 256 else "")
    img = charts.line_chart([("sigma", list(range(len(pos))), pos)], title, "step", "sigma", ylog=True,
                            size=(width, height), legend=False, integer_x=True)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


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
