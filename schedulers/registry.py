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


def first_tie(levels):
    """Index i of the first pair of descending levels that is not strictly descending once rounded to float32
    (the host's sigma dtype), as levels or as their logs (the exponential integrators' and ComfyUI's own step
    h = log s_i - log s_i+1 is taken in float32: h = 0 is a NaN there); None when all pairs are."""
    s = levels.to(torch.float32)
    pos = s[s > 0]
    ties = torch.cat([(s[:-1] <= s[1:]).nonzero().flatten(), (pos[:-1].log() <= pos[1:].log()).nonzero().flatten()])
    return int(ties.min()) if len(ties) else None


def register(name: str, *, params: Optional[Mapping[str, Param]] = None):
    """Decorator for fn(n, sigma_min, sigma_max, **params) -> n descending levels (float64 tensor).

    The registered function checks its arguments and appends the final 0, returning n + 1 levels, strictly
    descending in float32 (a ValueError naming steps and the parameters otherwise, never repeated levels). It
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
            levels = torch.cat([fn(n, float(sigma_min), float(sigma_max), **options).to(torch.float64),
                                torch.zeros(1, dtype=torch.float64)])
            i = first_tie(levels)
            if i is not None:
                given = ", ".join(f"{k} = {v}" for k, v in options.items() if k != "space")
                raise ValueError(f"steps: {name} with steps = {n}{', ' + given if given else ''} on [{sigma_min}, {sigma_max}] "
                                 f"makes levels {i} and {i + 1} equal in float32 ({float(levels[i]):.9g}); use fewer steps")
            return levels

        checked.__doc__, checked.__name__ = fn.__doc__, fn.__name__
        if name in REGISTRY:
            raise ValueError(f"scheduler {name!r} is registered twice")
        summary = (fn.__doc__ or "").strip().splitlines()[0]
        REGISTRY[name] = SchedulerSpec(name, checked, params, summary)
        return checked

    return wrap


MAX_LEVELS = 10 ** 6  # the nodes' widget limits: 10000 steps at denoise 0.01


def for_denoise(schedule, steps, denoise):
    """The tail of a longer schedule for partial denoising, as ComfyUI's BasicScheduler does: with
    denoise < 1, schedule(int(steps / denoise)) and keep its last steps + 1 levels. denoise in (0, 1],
    steps / denoise at most MAX_LEVELS (a ValueError naming denoise and steps beyond it)."""
    if isinstance(denoise, bool) or not isinstance(denoise, (int, float)) or not 0 < denoise <= 1:
        raise ValueError(f"denoise must be a number in (0, 1], got {denoise!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    total = steps if denoise >= 1 else int(steps / denoise)
    if total > MAX_LEVELS:
        raise ValueError(f"denoise: steps / denoise = {steps} / {denoise} would build a schedule of {total} levels, more than "
                         f"{MAX_LEVELS}; denoise must be >= {steps / MAX_LEVELS:.3g} at {steps} steps")
    return schedule(total)[-(steps + 1):]
