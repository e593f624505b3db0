"""Poisson flow nodes: the PFGM++ prior as a NOISE for SamplerCustomAdvanced, the D of a PFGM++-trained checkpoint
as a MODEL patch (so a plain KSampler with sl_poisson_flow samples it), and noise-level tracking as a
SAMPLER -> SAMPLER wrapper. (The Poisson-flow SAMPLER node itself is generated from the registry.)

Node ids `SamplerLabPoissonNoise`, `SamplerLabPoissonD` and `SamplerLabNoiseTracking` are a compatibility promise."""
from dataclasses import replace

import comfy.sample
import comfy.samplers
from comfy_api.latest import io

from ..samplers.poisson import PARAMS, kappas
from ..samplers.tracking import TRACK_PARAMS, with_noise_tracking
from .generated import CATEGORY
from .host import PATCH_KEY, space_of
from .widgets import param_input, schema


class PoissonNoiseSource:
    """ComfyUI's RandomNoise draw (same seed, same Gaussian) times each sample's kappa = sqrt(D / chi2_D)."""

    def __init__(self, seed, D):
        self.seed, self.D = seed, D

    def generate_noise(self, input_latent):
        latent = input_latent["samples"]
        noise = comfy.sample.prepare_noise(latent, self.seed, input_latent.get("batch_index"))
        kappa = kappas(self.seed, noise.shape[0], self.D)
        return noise * kappa.reshape(-1, *[1] * (noise.ndim - 1)).to(noise.dtype)


class PoissonNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SamplerLabPoissonNoise",
            display_name="Poisson noise (PFGM++)",
            category=f"{CATEGORY}/noise",
            description="Heavy-tailed PFGM++ start noise: Gaussian noise (as RandomNoise) scaled per sample by "
                        "kappa = sqrt(D / chi2_D), drawn from seed + k. Use with the poisson_flow sampler set to "
                        "noise = poisson and the same D; with noise = gaussian use RandomNoise instead (same result).",
            search_aliases=["pfgm", "poisson", "student-t noise"],
            inputs=[io.Int.Input("noise_seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                                 tooltip="Seed of the Gaussian draw and of each sample's kappa (seed + k for sample k)."),
                    param_input("D", replace(PARAMS["D"], tooltip=PARAMS["D"].tooltip + "; must match the sampler's D"))],
            outputs=[io.Noise.Output()],
        )

    @classmethod
    def execute(cls, noise_seed, D) -> io.NodeOutput:
        kappas(noise_seed, 1, D)
        return io.NodeOutput(PoissonNoiseSource(noise_seed, D))


def trained_at(model, D):
    """model.clone() stating that the network was trained as PFGM++ at D: sl_poisson_flow on it (KSampler or the
    sampler node) draws the prior at that D and queries the model at sigma itself (trained = at_D)."""
    kappas(0, 1, D)
    m = model.clone()
    fixed = {k: dict(v) for k, v in m.model_options.get(PATCH_KEY, {}).items()}
    fixed["poisson_flow"] = {**fixed.get("poisson_flow", {}), "D": float(D), "trained": "at_D"}
    m.model_options[PATCH_KEY] = fixed
    return m


class PoissonD(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SamplerLabPoissonD",
            display_name="Poisson D (PFGM++)",
            category=f"{CATEGORY}/model_patches",
            description="For a checkpoint trained as PFGM++ at D (arXiv 2302.04265): the patched model carries D, "
                        "and sl_poisson_flow (KSampler, or the Sampler poisson_flow node, whose D it overrides) then "
                        "starts from the heavy-tailed prior at that D and queries the model at sigma, the PFGM++ ODE. "
                        "Not for models trained as diffusion models: use sl_poisson_flow unpatched.",
            search_aliases=["pfgm", "pfgm++", "poisson", "augmented dimensions"],
            inputs=[io.Model.Input("model", tooltip="A model trained as PFGM++ at D."),
                    param_input("D", replace(PARAMS["D"], tooltip="the D the checkpoint was trained at (PFGM++ "
                                                                 "augmented dimensions; r = sigma sqrt(D))"))],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, D) -> io.NodeOutput:
        return io.NodeOutput(trained_at(model, D))


def tracked_sampler(sampler, **options):
    """A KSAMPLER running `sampler`'s function with noise-level tracking; the model's parametrisation
    (VE or flow) is read when it runs."""
    inner = getattr(sampler, "sampler_function", None)
    if inner is None:
        raise ValueError(f"noise tracking wraps KSAMPLER samplers, got {type(sampler).__name__}")
    with_noise_tracking(inner, **options)

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, **kw):
        fn = with_noise_tracking(inner, space=space_of(model), **options)
        return fn(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **kw)

    return comfy.samplers.KSAMPLER(sample, extra_options=sampler.extra_options, inpaint_options=sampler.inpaint_options)


class NoiseTracking(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SamplerLabNoiseTracking",
            display_name="Noise-level tracking",
            category=f"{CATEGORY}/samplers",
            description="Wraps any sampler: each model call is made at the sample's estimated actual noise level "
                        "(exposure bias), or with epsilon scaling. Measured effect: see the README.",
            search_aliases=["exposure bias", "time shift", "epsilon scaling"],
            inputs=[io.Sampler.Input("sampler", tooltip="Any KSAMPLER sampler to wrap.")] + [param_input(k, p) for k, p in TRACK_PARAMS.items()],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, sampler, **options) -> io.NodeOutput:
        return io.NodeOutput(tracked_sampler(sampler, **options))


NODES = [PoissonNoise, PoissonD, NoiseTracking]
