"""A real ComfyUI host for the host-contract tests, when COMFYUI_PATH names a checkout.

The model is a real `comfy.model_base.BaseModel` in a `ModelPatcher`, with no weights: its network
returns the exact eps (EPS) or velocity (FLOW) prediction of x0 ~ N(mu, S0^2) per pixel, mu being the
mean of the conditioning tensor, so every result has a closed-form answer.
"""
import asyncio
import os
import sys
from pathlib import Path

import pytest

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
PACK_DIR = Path(__file__).resolve().parents[1]
S0 = 0.5

needs_comfyui = pytest.mark.skipif(not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout to run the host-contract tests")


def comfy():
    """Import ComfyUI (CPU) once and load this pack through its own custom-node loader; returns
    (comfy_nodes_module, pack_module)."""
    if COMFYUI_PATH not in sys.path:
        sys.path.insert(0, COMFYUI_PATH)
    from comfy.cli_args import args

    args.cpu = True
    import nodes

    name = str(PACK_DIR).replace(".", "_x_")  # the module name ComfyUI's loader gives a pack directory
    if name not in sys.modules:
        assert asyncio.run(nodes.load_custom_node(str(PACK_DIR))), "ComfyUI could not load the pack"
    return nodes, sys.modules[name]


def analytic_model(flow: bool):
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models_base
    import torch

    class AnalyticNet(torch.nn.Module):
        def __init__(self, **unet_config):
            super().__init__()
            self.dtype = torch.float32

        def forward(self, xc, t, context=None, transformer_options={}, **kwargs):
            sigma = transformer_options["sigmas"].to(xc)
            sigma = sigma.repeat(xc.shape[0] // sigma.shape[0]).view(-1, *[1] * (xc.ndim - 1))
            mu = context.float().mean(dim=tuple(range(1, context.ndim))).view(-1, *[1] * (xc.ndim - 1))
            if flow:
                a = 1 - sigma
                x0 = mu + a * S0 ** 2 / (a ** 2 * S0 ** 2 + sigma ** 2) * (xc - a * mu)
                return (xc - x0) / sigma
            x = xc * (sigma ** 2 + 1) ** 0.5
            x0 = mu + S0 ** 2 / (S0 ** 2 + sigma ** 2) * (x - mu)
            return (x - x0) / sigma

    class Config(comfy.supported_models_base.BASE):
        unet_config = {}
        latent_format = comfy.latent_formats.LatentFormat
        sampling_settings = {"shift": 1.0} if flow else {}
        memory_usage_factor = 0.01

    kind = comfy.model_base.ModelType.FLOW if flow else comfy.model_base.ModelType.EPS
    base = comfy.model_base.BaseModel(Config({}), model_type=kind, device=torch.device("cpu"), unet_model=AnalyticNet)
    return comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def cond(value):
    import torch

    return [[torch.full((1, 1, 8), float(value)), {}]]


def exact(noise, mu, sigma_max, flow):
    """The ODE solution from pure noise at the model's top level: mu + n S0 sigma_T / sqrt(S0^2 + sigma_T^2)
    (VE; x_T = sigma_T n) or mu + n S0 (flow from t = 1)."""
    if flow:
        return mu + noise * S0
    return mu + noise * S0 * sigma_max / (S0 ** 2 + sigma_max ** 2) ** 0.5
