"""The A/B runner: samplers x schedules x NFE on one problem, identical x_T for all, model calls counted."""
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch

from ..samplers import REGISTRY as SAMPLERS
from ..samplers.space import resolve
from ..schedulers import REGISTRY as SCHEDULERS
from .problems import Problem


@dataclass(frozen=True)
class Contender:
    """A sampler under test: a k-diffusion-style function, its options and its calls per step; an adaptive one
    names the option that takes its call budget (`budget`) and gets the NFE of the cell there."""

    label: str
    fn: Callable
    nfe_per_step: int = 1
    options: Optional[dict] = None
    budget: Optional[str] = None


def registry_contenders(names=None):
    """Contenders for registered samplers (all, or the given names) with default options."""
    names = sorted(SAMPLERS) if names is None else names
    return [Contender(n, SAMPLERS[n].fn, SAMPLERS[n].nfe_per_step or 1,
                      budget="budget" if SAMPLERS[n].nfe_per_step is None and "budget" in SAMPLERS[n].params else None)
            for n in names]


class CountingModel:
    """Wraps a denoiser and counts its calls (one call on a batch is one model evaluation)."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x, sigma, **extra_args):
        self.calls += 1
        return self.model(x, sigma, **extra_args)


@dataclass
class Record:
    problem: str
    space: str
    sampler: str
    schedule: str
    budget: int
    steps: int
    nfe: int
    error: float
    error_ci: float
    seconds: float
    median: Optional[float] = None
    """The median over the seeds of the per-sample error (`error` is their mean); None where not recorded."""
    flips: Optional[float] = None
    """The share of seeds that end in another component than their exact solution (problems with `component`)."""


def schedule_range(problem: Problem, space):
    """(sigma_min, sigma_max) in host units: VE the problem's range; flow from s = 1 to the matching s_min."""
    space = resolve(space)
    if space.flow:
        return space.from_ve(problem.sigma_min), 1.0
    return problem.sigma_min, problem.sigma_max


def rms_error(x, ref):
    """Per-sample root-mean-square error [B] (float64)."""
    return (x.to(torch.float64) - ref).flatten(1).pow(2).mean(1).sqrt()


def mean_ci(v):
    """Mean and the half-width of a normal 95% confidence interval."""
    n = v.numel()
    return float(v.mean()), (1.96 * float(v.std()) / math.sqrt(n) if n > 1 else 0.0)


def run_grid(problem: Problem, contenders, schedules=("karras",), nfes=(4, 8, 16, 32), seeds=range(8),
             space="ve", dtype=torch.float32, progress=None):
    """Every contender on every schedule and NFE from the same x_T (one per seed); error is the per-sample
    RMS distance to the exact ODE solution at 0, averaged over seeds with a 95% interval. A fixed-step contender
    takes nfe // nfe_per_step steps; an adaptive one the schedule's end levels and the NFE as its call budget.
    Records hold the counted calls (`nfe`) beside the budget."""
    space = resolve(space)
    sigma_min, sigma_max = schedule_range(problem, space)
    x_T, labels = problem.draw(list(seeds), space, sigma_max)
    exact = problem.exact(x_T, sigma_max, 0.0, space, labels)
    model = problem.model(space, labels)
    records = []
    for c in contenders:
        for sched in schedules:
            for nfe in nfes:
                steps = max(1, nfe // c.nfe_per_step)
                sigmas = SCHEDULERS[sched].fn(steps, sigma_min, sigma_max, space=space).to(dtype)
                options = dict(c.options or {})
                if c.budget is not None:
                    sigmas, options[c.budget] = torch.tensor([sigma_max, sigma_min, 0.0], dtype=dtype), nfe
                counted = CountingModel(model)
                t0 = time.perf_counter()
                x = c.fn(counted, x_T.to(dtype), sigmas, disable=True, space=space, **options)
                seconds = time.perf_counter() - t0
                err, ci = mean_ci(rms_error(x, exact))
                records.append(Record(problem.name, space.name, c.label, sched, nfe, steps, counted.calls, err, ci, seconds))
                if progress is not None:
                    progress.update(1)
    return records


def order_slope(records, top=3):
    """Least-squares slope of log(error) against log(NFE) over the `top` largest NFEs (-order)."""
    pts = sorted((r.nfe, r.error) for r in records if r.error > 0)[-top:]
    if len(pts) < 2:
        return math.nan
    x = torch.tensor([math.log(p[0]) for p in pts], dtype=torch.float64)
    y = torch.tensor([math.log(p[1]) for p in pts], dtype=torch.float64)
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def as_dicts(records):
    return [asdict(r) for r in records]
