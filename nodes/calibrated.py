"""The Calibrated sampler node: a solver calibrated to the model at hand (samplers/calibrated.py) as SAMPLER +
SIGMAS for SamplerCustomAdvanced. Node id `SamplerLabCalibratedSampler` is a compatibility promise.

Cache (the calibrated schedule's folder, one JSON per key, written atomically): the model's identity
(nodes/calibration.py), the conditioning (its tensors hashed), cfg, the latent shape, steps (K), the
calibration batch and seed, the parametrisation, the solver's format version and the `start` levels, if any.
With `chain_from`, every step count from it up to `steps` is calibrated in turn, each seeded with the one
before (calibrate_solver's `start`), from one reference solve, and cached under its own key.
"""
import json
import logging

import comfy.samplers
import torch
from comfy_api.latest import io

from ..samplers import calibrated as solver
from ..schedulers import calibrate as cache
from .calibration import CACHE_ENV, cache_folder, calibrate_in_host, cond_identity, model_identity, staged_progress
from .generated import CATEGORY
from .host import model_sampling_of, space_of
from .views import schedule_ui
from .widgets import schema


def host_sampler(cal):
    """A KSAMPLER running `cal` on its own levels; other sigmas (or another parametrisation) are a ValueError."""
    own = torch.tensor(cal.sigmas, dtype=torch.float64)

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        given = sigmas.detach().to("cpu", torch.float64)
        if given.shape != own.shape or not torch.allclose(given, own, rtol=1e-5, atol=1e-7):
            raise ValueError(f"this calibrated sampler runs only on its own sigmas {[round(v, 5) for v in cal.sigmas]} "
                             f"(connect the Calibrated sampler's SIGMAS output), got {given.tolist()}")
        if space_of(model) != cal.space:
            raise ValueError(f"this calibrated sampler was calibrated for a {cal.space} model, not a {space_of(model)} one")
        return cal.sample(model, x, extra_args, callback, disable)

    return comfy.samplers.KSAMPLER(sample)


def load(folder, key):
    """The cached solver for `key`, or None (absent; or unusable, with a warning: it is recalibrated)."""
    def parse(data):
        if data.get("key") != json.loads(json.dumps(key, sort_keys=True)):
            raise ValueError("written for another model, conditioning or format")
        return solver.Calibrated.from_json(data["solver"])

    return cache.read_cached(cache.cache_path(folder, key), parse)


def save(folder, key, cal):
    """Write the solver to the cache; an unusable location is a warning (the calibration is still returned)."""
    try:
        path = cache.cache_path(folder, key)
        cache.write_atomic(path, json.dumps({"key": key, "solver": cal.to_json()}, indent=1, sort_keys=True), folder)
        return path
    except ValueError as e:
        logging.warning("samplerlab: cannot write the calibrated solver cache in %s (%s); not cached", folder, e)
        return None


class CalibratedSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        lo, hi = solver.NFE_RANGE
        return schema(
            node_id="SamplerLabCalibratedSampler",
            display_name="Calibrated sampler",
            category=f"{CATEGORY}/samplers",
            description=f"A solver fitted to THIS model for `steps` model calls: its levels and, per step, how the past "
                        f"states and x0 predictions combine (a consistent linear multistep method), fitted so that runs "
                        f"from `seeds` calibration latents end where a fine reference solve ends. At most "
                        f"{solver.BUDGET} model calls on that batch, once; cached as JSON per model, conditioning, cfg, "
                        f"latent shape and steps. Use both outputs with SamplerCustomAdvanced.",
            search_aliases=["calibrate", "ld3", "s4s", "amed", "pas", "bespoke", "few steps"],
            inputs=[io.Model.Input("model", tooltip="The model the solver is fitted to (its identity keys the cache)."),
                    io.Conditioning.Input("positive", tooltip="The prompt the solver will be used with."),
                    io.Conditioning.Input("negative", tooltip="The negative prompt the solver will be used with."),
                    io.Latent.Input("latent", tooltip="Only its shape is used (the size of the latents calibrated on)."),
                    io.Int.Input("steps", default=8, min=lo, max=hi, tooltip="Model calls of the calibrated solver."),
                    io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                                   tooltip="The cfg the solver will be used with (use the same in the guider)."),
                    io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=False,
                                 tooltip="Seed of the calibration noise (not of the image)."),
                    io.Int.Input("seeds", default=2, min=1, max=16,
                                 tooltip="Latents in the calibration batch (each model call takes them all: more cost "
                                         "memory and time per call, not calls). More of them fit the model rather than "
                                         "the batch, and show the fit the starts that a coarse step sends to another "
                                         "mode (README, Calibrated solver)."),
                    io.Combo.Input("mode", options=["reuse", "recalibrate"], default="reuse",
                                   tooltip="reuse: load the cached solver when there is one; recalibrate: compute and overwrite."),
                    io.String.Input("cache_dir", default="", optional=True,
                                    tooltip=f"Folder of the JSON cache; empty: ${CACHE_ENV} or <ComfyUI user dir>/samplerlab/schedules."),
                    io.Sigmas.Input("start", optional=True,
                                    tooltip="Levels the search starts from besides its own, for the first step count it "
                                            "calibrates (`steps`, or `chain_from` when set): the SIGMAS of a Calibrated "
                                            "sampler with one step fewer (one level is added to them), or a schedule of "
                                            "that many steps."),
                    io.Int.Input("chain_from", default=0, min=0, max=hi, optional=True,
                                 tooltip="0: off. Else calibrate every step count from this one up to `steps`, each seeded "
                                         "with the one before (better and monotone in steps on the lab's problems, at one "
                                         "calibration per count, each cached).")],
            outputs=[io.Sampler.Output(), io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, steps, cfg, seed, seeds, mode, cache_dir="", start=None,
                chain_from=0):
        folder = cache_folder(cache_dir)
        levels = None if start is None else [float(v) for v in start.detach().to("cpu", torch.float64)]
        if int(chain_from) and not solver.NFE_RANGE[0] <= int(chain_from) <= int(steps):
            raise ValueError(f"chain_from must be 0 (off) or a step count in [{solver.NFE_RANGE[0]}, steps = {steps}], "
                             f"got {chain_from}")
        shared = {}  # the chain's reference solve, made once (calibrate_solver's `reference`)
        common = {"model": model_identity(model), "positive": cond_identity(positive), "negative": cond_identity(negative),
                  "cfg": float(cfg), "shape": list(latent["samples"].shape[1:]), "solver": "calibrated",
                  "seeds": int(seeds), "seed": int(seed), "space": space_of(model), "format": solver.FORMAT,
                  "revision": solver.REVISION}
        for k in range(int(chain_from) or int(steps), int(steps) + 1):
            key = {**common, "steps": k, **({"start": levels} if levels is not None else {})}
            found = (load(folder, key) if mode == "reuse" else None) or calibrated(model, positive, negative, cfg, latent,
                                                                                 seeds, seed, k, levels, folder, key,
                                                                                 shared)
            sigmas = torch.tensor(found.sigmas, dtype=torch.float32)
            levels = sigmas.double().tolist()
        page_key = {**key, "chain_from": int(chain_from)}  # the page keeps these levels while chain_from stays too
        return io.NodeOutput(host_sampler(found), sigmas, ui=schedule_ui(sigmas, model_sampling_of(model), page_key))


def calibrated(model, positive, negative, cfg, latent, seeds, seed, steps, start, folder, key, reference):
    """Calibrate the solver of `steps` calls in the host (progress bar, Cancel) and write it to the cache;
    `reference` is calibrate_solver's shared reference."""
    stages = {"reference": solver.REFERENCE_CALLS, "check": solver.REFERENCE_CALLS // 2, "order": solver.REFERENCE_CALLS // 4}
    progress = staged_progress({**stages, "fit": solver.BUDGET - sum(stages.values())})
    found = calibrate_in_host(model, positive, negative, cfg, latent, seeds, seed,
                              lambda model_k, x, extra_args, sigma_min, sigma_max, space: solver.calibrate_solver(
                                  model_k, x, sigma_min, sigma_max, steps, space, extra_args, progress, start=start,
                                  reference=reference))
    path = save(folder, key, found)
    logging.info("samplerlab: calibrated solver, %d steps in %d model calls, %.1f s -> %s",
                 steps, found.model_calls, found.seconds, path)
    return found


NODES = [CalibratedSampler]
