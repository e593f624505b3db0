"""The sampler registry: one `register` declaration per sampler; nodes, lists, docs and tests read it."""
import functools
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional


@dataclass(frozen=True)
class Param:
    """A user-facing parameter: default and allowed range (numbers) or choices (strings)."""

    default: Any
    min: Optional[float] = None
    max: Optional[float] = None
    step: Optional[float] = None
    tooltip: str = ""
    choices: Optional[tuple] = None

    def check(self, name: str, value):
        """`value` if allowed, else a ValueError that names the parameter and the allowed range. Numbers may
        be numpy scalars or 0-d tensors (taken by value); the result has the default's type."""
        value = scalar(value)
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"{name} must be one of {list(self.choices)}, got {value!r}")
            return value
        if isinstance(self.default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if isinstance(self.default, int) and not (math.isfinite(value) and value == int(value)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        lo = -math.inf if self.min is None else self.min
        hi = math.inf if self.max is None else self.max
        if not lo <= value <= hi:
            raise ValueError(f"{name} must be in [{lo}, {hi}], got {value!r}")
        return type(self.default)(value)


def scalar(value):
    """A numpy scalar or 0-d tensor as the Python bool / int / float it holds; anything else unchanged."""
    if hasattr(value, "ndim") and getattr(value, "ndim") == 0 and hasattr(value, "item") \
            and not isinstance(value, (str, bytes)):
        item = value.item()
        if isinstance(item, (bool, int, float)):
            return item
    return value


def check_params(owner: str, params: Mapping[str, Param], given: dict) -> dict:
    """All parameters of `owner` checked, defaults filled in; unknown names are an error."""
    unknown = sorted(set(given) - set(params))
    if unknown:
        raise ValueError(f"{owner} has no parameter(s) {unknown}; it takes {sorted(params)}")
    return {k: p.check(k, given.get(k, p.default)) for k, p in params.items()}


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    fn: Callable
    order: int
    nfe_per_step: Optional[int]
    stochastic: bool
    params: Mapping[str, Param] = field(default_factory=dict)
    summary: str = ""


REGISTRY: dict = {}


def register(name: str, *, order: int, nfe_per_step: Optional[int], stochastic: bool = False,
             params: Optional[Mapping[str, Param]] = None):
    """Decorator: checks a sampler's options against `params` on every call and enters it in REGISTRY.

    The sampler keeps the k-diffusion signature fn(model, x, sigmas, extra_args, callback, disable,
    **options); `space` ('ve' or 'flow') is the one option every sampler takes besides its params.
    """
    params = dict(params or {})

    def wrap(fn):
        @functools.wraps(fn)
        def checked(model, x, sigmas, extra_args=None, callback=None, disable=None, space="ve", **options):
            options = check_params(name, params, options)
            return fn(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                      space=space, **options)

        if name in REGISTRY:
            raise ValueError(f"sampler {name!r} is registered twice")
        summary = (fn.__doc__ or "").strip().splitlines()[0]
        REGISTRY[name] = SamplerSpec(name, checked, order, nfe_per_step, stochastic, params, summary)
        return checked

    return wrap
