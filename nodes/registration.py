"""Entries in ComfyUI's own sampler and scheduler lists (KSampler, KSamplerAdvanced, KSamplerSelect,
BasicScheduler): `sl_<name>`, added in place, once, idempotently; never a reload, never a replacement
of another pack's entry."""
import logging
import os

import comfy.k_diffusion.sampling as k_sampling
import comfy.samplers

from ..samplers import REGISTRY as SAMPLERS
from ..schedulers import REGISTRY as SCHEDULERS
from .host import host_sampler, scheduler_handler

PREFIX = "sl_"
SWITCH = "SAMPLERLAB_NO_REGISTER"


def _append(names, name):
    if name not in names:
        names.append(name)


def register_lists():
    """Add every registered sampler and scheduler under its sl_ name; returns the names added or kept.
    Nothing is done when the environment variable SAMPLERLAB_NO_REGISTER is set to a non-empty value."""
    if os.environ.get(SWITCH):
        logging.info("samplerlab: %s is set, KSampler lists left untouched", SWITCH)
        return []
    names = []
    for name, spec in sorted(SAMPLERS.items()):
        key = PREFIX + name
        attr = "sample_" + key
        if not hasattr(k_sampling, attr):
            setattr(k_sampling, attr, host_sampler(spec))
        _append(comfy.samplers.KSAMPLER_NAMES, key)
        _append(comfy.samplers.SAMPLER_NAMES, key)
        names.append(key)
    for name, spec in sorted(SCHEDULERS.items()):
        key = PREFIX + name
        if key not in comfy.samplers.SCHEDULER_HANDLERS:
            comfy.samplers.SCHEDULER_HANDLERS[key] = comfy.samplers.SchedulerHandler(scheduler_handler(spec), use_ms=True)
        _append(comfy.samplers.SCHEDULER_NAMES, key)
        names.append(key)
    return names
