"""Adapters for hosts other than ComfyUI: the A1111 / Forge / reForge WebUIs (`webui`) and diffusers (`diffusers`).

Pure with respect to ComfyUI: nothing here imports comfy. Each adapter reads the same registries
(`samplerlab.samplers.REGISTRY`, `samplerlab.schedulers.REGISTRY`) and runs the registered functions
themselves; no sampler or schedule is written twice. The third route, plain k-diffusion, needs no
adapter: every registered `fn` has k-diffusion's signature (README, "Other hosts").
"""
