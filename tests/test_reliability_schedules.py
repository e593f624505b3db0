"""Every registered schedule, every in-range parameter, every step count the nodes allow: float32 levels
strictly descending (as levels and as log levels) to the last nonzero one, or a ValueError naming the
parameter (issue 11, defects 1 and 12)."""
import itertools
import math
import random
import re

import pytest
import torch

from samplerlab.schedulers import REGISTRY as SCHEDULERS
from samplerlab.schedulers.registry import for_denoise

# sigma ranges of real hosts: SD1.x/SDXL, EDM, zero-terminal-SNR v-prediction; flow at shifts 1 to 8
RANGES = [("ve", 0.0292, 14.6146), ("ve", 0.002, 80.0), ("ve", 0.0292, 4500.0),
          ("flow", 1e-4, 1.0), ("flow", 0.003, 1.0), ("flow", 0.0079, 1.0)]
STEPS = [1, 2, 3, 7, 20, 33, 60, 100, 1000, 10000]  # the schedule nodes allow 1..10000


@pytest.fixture(autouse=True)
def _one_thread():
    """Thousands of small tensors: intra-op threads only add contention on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def values(p, rng, draws=2):
    """The range's endpoints, the default and random points inside it (an open top: large and inf)."""
    top = p.max if p.max is not None else 1e6
    inside = [round(rng.uniform(p.min, top) / p.step) * p.step for _ in range(draws)]
    return [p.min, top, p.default] + [min(max(v, p.min), top) for v in inside] + ([math.inf] if p.max is None else [])


def settings(spec, rng):
    """Every combination of endpoints, the defaults, and random draws over the whole ranges."""
    params = list(spec.params.items())
    grids = {k: values(p, rng) for k, p in params}
    corners = [dict(zip(grids, c)) for c in itertools.product(*[(g[0], g[1]) for g in grids.values()])]
    drawn = [{k: rng.choice(g) for k, g in grids.items()} for _ in range(6)]
    return corners + [{k: p.default for k, p in params}] + drawn


def strictly_descending(s):
    pos = s[s > 0]
    return bool((s[:-1] > s[1:]).all()) and bool((pos[:-1].log() > pos[1:].log()).all()) and len(pos) == len(s) - 1


def check(spec, n, lo, hi, space, opts):
    """The float32 schedule is strictly descending to its one final 0, or the call raises a ValueError whose
    message starts with the name of the parameter at fault; returns the ValueError (or None)."""
    try:
        s = spec.fn(n, lo, hi, space=space, **opts).float()
    except ValueError as e:
        assert re.match(rf"({'|'.join(['steps', *spec.params])})\b", str(e)), f"{spec.name}: {e}"
        return e
    assert len(s) == n + 1 and float(s[0]) == pytest.approx(hi, rel=1e-6) and bool(torch.isfinite(s).all())
    assert strictly_descending(s), f"{spec.name} {opts} n={n} [{lo}, {hi}] {space}: {s[-6:].tolist()}"
    return None


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_schedule_is_strictly_descending_in_float32(name):
    spec = SCHEDULERS[name]
    rng = random.Random(name)
    for opts in settings(spec, rng):
        for (space, lo, hi), n in itertools.product(RANGES, STEPS + [rng.randint(4, 10000)]):
            check(spec, n, lo, hi, space, opts)


def test_polyexponential_names_rho_and_its_working_bound():
    """The issue's case (rho = 10, 20 steps) and the bound the error states: that rho works."""
    spec = SCHEDULERS["polyexponential"]
    for n, (space, lo, hi) in itertools.product((20, 60, 10000), RANGES):
        e = check(spec, n, lo, hi, space, {"rho": 10.0})
        assert e is not None and str(e).startswith("rho")
        bound = float(re.search(r"rho must be in \[0\.1, ([0-9.]+)\]", str(e)).group(1))
        assert check(spec, n, lo, hi, space, {"rho": bound}) is None
    assert check(spec, 20, 0.0292, 14.6146, "ve", {"rho": 5.0}) is None


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_partial_denoise_at_the_widget_limits(name):
    """10000 steps at denoise 0.01 (a 10^6-level schedule, the largest the nodes can ask for)."""
    spec = SCHEDULERS[name]
    for space, lo, hi in (RANGES[0], RANGES[4]):
        try:
            s = for_denoise(lambda n: spec.fn(n, lo, hi, space=space), 10000, 0.01).float()
        except ValueError as e:
            assert re.match(r"(steps|denoise)\b", str(e)), str(e)
            continue
        assert len(s) == 10001 and strictly_descending(s)


@pytest.mark.parametrize("denoise", [1e-9, 1e-5])
def test_for_denoise_bounds_the_schedule_it_builds(denoise):
    """denoise = 1e-9 used to ask for 2e10 levels (160 GB): now a ValueError naming denoise, before any allocation."""
    calls = []
    with pytest.raises(ValueError, match=r"^denoise.*20 steps"):
        for_denoise(lambda n: calls.append(n) or SCHEDULERS["karras"].fn(n, 0.03, 14.6), 20, denoise)
    assert calls == []
