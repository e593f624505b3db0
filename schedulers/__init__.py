"""Sigma schedules and their registry (pure torch, no ComfyUI)."""
from . import basic, shaped  # noqa: F401  (register the closed-form and shaped schedules)
from .registry import REGISTRY, SchedulerSpec

__all__ = ["REGISTRY", "SchedulerSpec"]
