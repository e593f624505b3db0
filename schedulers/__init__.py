"""Sigma schedules and their registry (pure torch, no ComfyUI)."""
from . import basic  # noqa: F401  (registers the closed-form schedules)
from .registry import REGISTRY, SchedulerSpec

__all__ = ["REGISTRY", "SchedulerSpec"]
