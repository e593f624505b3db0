"""The on-schedule lower bound (lab/bound.py): attained by a recombination, never beaten, shrinking with steps."""
import pytest
import torch

from samplerlab.lab import kdiffusion, problems
from samplerlab.lab.bound import bound, least_error
from samplerlab.lab.runner import rms_error, schedule_range
from samplerlab.samplers import REGISTRY
from samplerlab.schedulers import REGISTRY as SCHEDULERS

PROBLEMS = [problems.Gaussian(shape=(2, 4, 4)), problems.GaussianField(shape=(3, 8, 8))]
ONCE_PER_LEVEL = [name for name, spec in REGISTRY.items() if spec.nfe_per_step == 1 and not spec.stochastic]


def _setup(problem, space, steps, schedule="karras"):
    lo, hi = schedule_range(problem, space)
    x_T = problem.draw(range(4), space, hi)[0]
    return x_T, SCHEDULERS[schedule].fn(steps, lo, hi), problem.exact(x_T, hi, 0.0, space)


def test_once_per_level_samplers_are_the_multistep_family():
    assert {"euler", "dpmpp_2m", "exp_multistep", "exp_pc"} <= set(ONCE_PER_LEVEL)


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
@pytest.mark.parametrize("space", ["ve", "flow"])
def test_a_recombination_of_the_runs_own_predictions_attains_the_bound(problem, space):
    x_T, sigmas, exact = _setup(problem, space, 5)
    seen = []
    model = problem.model(space)

    def recording(x, s, **kw):
        seen.append(model(x, s))
        return seen[-1]

    REGISTRY["euler"].fn(recording, x_T, sigmas, disable=True, space=space)
    vectors = [x_T, problem.mu.expand_as(x_T)] + seen
    attained = least_error(torch.stack([v.flatten(1) for v in vectors], -1), exact.flatten(1))[0]
    assert attained == pytest.approx(bound(problem, x_T, sigmas, space), rel=1e-6)


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
@pytest.mark.parametrize("space", ["ve", "flow"])
@pytest.mark.parametrize("steps, schedule", [(4, "karras"), (7, "exponential")])
def test_no_sampler_that_calls_once_per_level_beats_the_bound(problem, space, steps, schedule):
    x_T, sigmas, exact = _setup(problem, space, steps, schedule)
    floor = bound(problem, x_T, sigmas, space)
    runs = {name: REGISTRY[name].fn(problem.model(space), x_T, sigmas, disable=True, space=space)
            for name in ONCE_PER_LEVEL}
    K = kdiffusion.load()
    if K is not None and space == "ve":
        runs["k:lms"] = K.sampling.sample_lms(problem.model(space), x_T, sigmas, disable=True)
        runs["k:dpmpp_2m"] = K.sampling.sample_dpmpp_2m(problem.model(space), x_T, sigmas, disable=True)
    for name, out in runs.items():
        assert float(rms_error(out, exact).mean()) >= floor * (1 - 1e-9), name


@pytest.mark.parametrize("space", ["ve", "flow"])
def test_the_bound_shrinks_as_levels_are_added(space):
    problem = PROBLEMS[0]
    floors = [bound(problem, *_setup(problem, space, n, "exponential")[:2], space) for n in (4, 8, 16)]
    assert floors[0] > 4 * floors[1] > 16 * floors[2] > 0


def test_least_error_is_the_mean_per_sample_norm_at_its_minimum():
    g = torch.Generator().manual_seed(0)
    cols, target = torch.randn(3, 50, 4, generator=g, dtype=torch.float64), torch.randn(3, 50, generator=g, dtype=torch.float64)
    value, c = least_error(cols, target)
    assert value == pytest.approx(float((cols @ c - target).norm(dim=1).mean() / 50 ** 0.5), rel=1e-12)
    for _ in range(20):
        other = c + 0.01 * torch.randn(4, generator=g, dtype=torch.float64)
        assert float((cols @ other - target).norm(dim=1).mean() / 50 ** 0.5) >= value


def test_a_schedule_that_stops_above_zero_has_its_own_bound():
    problem = PROBLEMS[1]
    lo, hi = schedule_range(problem, "ve")
    x_T = problem.draw(range(4), "ve", hi)[0]
    sigmas = SCHEDULERS["karras"].fn(8, lo, hi)[:5]
    exact = problem.exact(x_T, hi, float(sigmas[-1]), "ve")
    floor = bound(problem, x_T, sigmas, "ve")
    for name in ONCE_PER_LEVEL:
        out = REGISTRY[name].fn(problem.model(), x_T, sigmas, disable=True)
        assert float(rms_error(out, exact).mean()) >= floor * (1 - 1e-9), name
    assert 0 < floor
