"""Sampler functions with the k-diffusion signature, and their registry (pure torch, no ComfyUI)."""
from . import adams, adaptive, dpmpp_2m, euler, heun, multistep, pc, poisson  # noqa: F401  (each module registers its samplers)
from .registry import REGISTRY, Param, SamplerSpec
from .space import FLOW, VE, Space

__all__ = ["REGISTRY", "Param", "SamplerSpec", "Space", "VE", "FLOW"]
