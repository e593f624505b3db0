"""The scheduler registry: one `register` declaration per schedule."""
import inspect
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import torch

from ..samplers.registry import Param, check_params
from ..samplers.space import resolve


@dataclass(frozen=True)
class SchedulerSpec:
    name: str
    fn: Callable
    params: Mapping[str, Param] = field(default_factory=dict)
    summary: str = ""


REGISTRY: dict = {}


def check_range(n, sigma_min, sigma_max):
    """A ValueError naming the argument unless 1 <= n and 0 < sigma_min < sigma_max, all finite."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"steps (n) must be an integer >= 1, got {n!r}")
    for name, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    if not sigma_min < sigma_max:
        raise ValueError(f"sigma_min must be < sigma_max, got {sigma_min} >= {sigma_max}")


def register(name: str, *, params: Optional[Mapping[str, Param]] = None):
    """Decorator for fn(n, sigma_min, sigma_max, **params) -> n descending levels (float64 tensor).

    The registered function checks its arguments and appends the final 0, returning n + 1 levels. It
    also takes `space` ('ve' or 'flow', the host's parametrisation; flow levels are t <= 1), passed on to
    a schedule whose fn declares a `space` argument (one that works in normalised time or VE sigma).
    """
    params = dict(params or {})

    def wrap(fn):
        wants_space = "space" in inspect.signature(fn).parameters

        def checked(n, sigma_min, sigma_max, space="ve", **options):
            check_range(n, sigma_min, sigma_max)
            space = resolve(space)
            if sigma_max > space.max_level() * (1 + 1e-6):
                raise ValueError(f"sigma_max of a {space.name} model must be <= {space.max_level()}, got {sigma_max}")
            sigma_max = min(sigma_max, space.max_level())  # a float32 flow top of 1 + 1 ulp is 1
            options = check_params(name, params, options)
            if wants_space:
                options["space"] = space
            levels = fn(n, float(sigma_min), float(sigma_max), **options)
            return torch.cat([levels.to(torch.float64), levels.new_zeros(1, dtype=torch.float64)])

        checked.__doc__, checked.__name__ = fn.__doc__, fn.__name__
        if name in REGISTRY:
            raise ValueError(f"scheduler {name!r} is registered twice")
        summary = (fn.__doc__ or "").strip().splitlines()[0]
        REGISTRY[name] = SchedulerSpec(name, checked, params, summary)
        return checked

    return wrap


def for_denoise(schedule, steps, denoise):
    """The tail of a longer schedule for partial denoising, as ComfyUI's BasicScheduler does: with
    denoise < 1, schedule(int(steps / denoise)) and keep its last steps + 1 levels. denoise in (0, 1]."""
    if not 0 < denoise <= 1:
        raise ValueError(f"denoise must be in (0, 1], got {denoise!r}")
    total = steps if denoise >= 1 else int(steps / denoise)
    return schedule(total)[-(steps + 1):]
