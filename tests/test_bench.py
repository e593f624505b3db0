"""The bench as a measurement of pipelines: development and held-out problems, calibration seeds disjoint from
evaluation seeds, counted calls in every table; and the training-free default's quadrature (samplers/adams.py)."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from samplerlab.lab import bench, problems, report
from samplerlab.lab.runner import registry_contenders, run_grid
from samplerlab.samplers import REGISTRY
from samplerlab.samplers.adams import monotone, weights
from samplerlab.schedulers import REGISTRY as SCHEDULERS


def test_every_problem_is_development_or_held_out():
    assert set(bench.DEVELOPMENT) | set(bench.HELD_OUT) == set(problems.PROBLEMS)
    assert not set(bench.DEVELOPMENT) & set(bench.HELD_OUT)
    assert bench.QUICK["problems"] == [p for p in bench.DEVELOPMENT + bench.HELD_OUT if p not in problems.TRAINED]


def test_held_out_problems_are_the_issues():
    g = problems.make("gaussian96")
    assert g.shape == (96,) and math.isclose(float(g.lam.min()), 1e-3) and math.isclose(float(g.lam.max()), 30.0)
    m = problems.make("mixture32")
    assert m.shape == (32,) and m.mu.shape == (6, 32) and not m.classes
    near = problems.make("memorise16")
    assert near.shape == (16,) and near.mu.shape == (40, 16) and float(near.lam.max()) <= 4e-4
    assert {g.name, m.name, near.name} == {"gaussian96", "mixture32", "memorise16"}


@pytest.mark.parametrize("name, space", [("mixture32", "flow"), ("memorise16", "ve"), ("memorise24", "ve")])
def test_held_out_reference_is_converged(name, space):
    assert problems.reference_convergence(problems.make(name), space, seeds=range(2), steps=2000)[0] < 1e-6


def _calibrated(seen):
    """A stand-in calibrated pipeline: records its calibration states, returns Karras levels and Euler."""
    def calibrate(model, x_cal, sigma_min, sigma_max, nfe, space):
        seen.append(x_cal)
        sigmas = SCHEDULERS["karras"].fn(nfe, sigma_min, sigma_max).float()
        return SimpleNamespace(sigmas=sigmas, sample=lambda m, x, disable: REGISTRY["euler"].fn(m, x, sigmas, disable=disable))
    return bench.Pipeline("cal:euler", calibrate=calibrate)


def test_calibrated_pipeline_calibrates_on_other_seeds_and_meets_the_best_schedule(K):
    p, seen = problems.Gaussian(shape=(4,)), []
    records = bench.race(p, "ve", ["karras", "exponential"], [4, 6], [1000, 1001], extra=[_calibrated(seen)])
    torch.testing.assert_close(seen[0], p.draw([0, 1], "ve", 80.0)[0].float())
    cal = [r for r in records if r.sampler == "cal:euler"]
    assert [(r.schedule, r.budget, r.nfe) for r in cal] == [(bench.CALIBRATED, 4, 4), (bench.CALIBRATED, 6, 6)]
    base = min(r.error for r in records if r.budget == 6 and r.sampler.startswith("k:"))
    text = bench.summary(records, nfes=(6,))
    assert f"| gaussian | development | ve | calibrated | 6 | cal:euler | {cal[1].error:.2e} |" in text
    assert f"| {base:.2e} |" in text.split("| calibrated | 6 |")[1].splitlines()[0]
    with pytest.raises(ValueError, match="calibration seeds"):
        bench.race(p, "ve", ["karras"], [4], [0, 1], extra=[_calibrated([])])


def test_a_refused_calibration_leaves_its_cells_empty_and_says_why(K):
    def calibrate(model, x_cal, sigma_min, sigma_max, nfe, space):
        raise ValueError(f"the reference solve does not converge ({nfe})")
    p, refused = problems.Gaussian(shape=(4,)), []
    records = bench.race(p, "ve", ["karras"], [4, 6], [1000], extra=[bench.Pipeline("cal", calibrate=calibrate)], refused=refused)
    assert records and not [r for r in records if r.sampler == "cal"]
    assert refused == [f"cal on gaussian (ve, {n} calls) refused: the reference solve does not converge ({n})" for n in (4, 6)]
    with pytest.raises(ValueError, match="does not converge"):
        bench.race(p, "ve", ["karras"], [4], [1000], extra=[bench.Pipeline("cal", calibrate=calibrate)])


def test_a_sample_that_ends_in_another_component_than_its_exact_solution_is_counted():
    p = problems.make("mixture")
    x_T, labels = p.draw(range(4), "ve")
    exact = p.exact(x_T, 80.0, 0.0, "ve", labels, steps=400)
    flip, k = bench.another_mode(p, exact), p.component(exact)
    moved = exact.clone()
    moved[1] = p.mu[(k[1] + 1) % len(p.mu)]
    assert flip(exact + 1e-3).tolist() == [False] * 4 and flip(moved).tolist() == [False, True, False, False]
    assert bench.share(flip(moved)) == 0.25 and bench.another_mode(problems.make("gaussian"), exact) is None
    records = bench.race(p, "ve", ["karras"], [6], [1000, 1001])
    assert records and all(0 <= r.flips <= 1 for r in records)
    assert all(r.flips is None for r in bench.race(problems.Gaussian(shape=(4,)), "ve", ["karras"], [6], [1000]))


def test_default_target_line():
    def rec(sampler, problem, error):
        return bench.Record(problem, "ve", sampler, "karras", 5, 5, 5, error, 0.0, 0.0)
    records = [rec("adams-2", "gaussian", 1.0), rec("k:euler", "gaussian", 2.0),
               rec("adams-2", "gaussian48", 3.0), rec("k:euler", "gaussian48", 1.0)]
    text = bench.summary(records, nfes=(5,), default="adams-2")
    assert "| adams-2 | 1.22 | 3.00 | 0.50 | 3.00 |" in text
    assert "geometric mean 1.22 (target <= 1.0), worst 3.00 (target <= 2.0) over 2 cells: target not met" in text


def test_calibrated_pipeline_is_compared_with_dpmpp_2m_on_its_best_schedule():
    """A calibrated record has its own schedule: it beats k:dpmpp_2m where it is below dpmpp_2m's best schedule;
    a group with no problems shows '-', not nan."""
    def rec(sampler, schedule, error):
        return bench.Record("digits", "ve", sampler, schedule, 5, 5, 5, error, 0.0, 0.0)
    records = [rec("cal", bench.CALIBRATED, 1.0), rec("k:dpmpp_2m", "karras", 2.0), rec("k:dpmpp_2m", "exponential", 1.5)]
    assert "| cal | 0.67 | 0.67 | - | 0.67 | 0 of 1 | 1 of 1 |" in bench.summary(records, nfes=(5,))
    records[0] = rec("cal", bench.CALIBRATED, 1.6)
    assert "| cal | 1.07 | 1.07 | - | 1.07 | 0 of 1 | 0 of 1 |" in bench.summary(records, nfes=(5,))


def test_demo_tables_are_by_counted_calls():
    records = run_grid(problems.Gaussian(shape=(4,)), registry_contenders(["heun", "exp_adaptive"]), ("karras",),
                       (5, 9), range(2))
    heun = {r.budget: r.nfe for r in records if r.sampler == "heun"}
    assert heun == {5: 3, 9: 7}  # 2 and 4 steps; the last step of Heun is one call
    adaptive = [r for r in records if r.sampler == "exp_adaptive"]
    assert all(r.nfe <= r.budget for r in adaptive)
    text = report.markdown(records)
    assert "| sampler | 3 calls |" in text and "NFE 5" not in text


@pytest.mark.parametrize("nodes, i", [([3, 4, 5], 5), ([0, 1], 1), ([2, 3, 4], 3)])
def test_adams_weights_integrate_polynomial_velocities(nodes, i):
    """sum_k w_k v(u_k) = int_i^{i+1} v(u) t'(u) du for v of degree < len(nodes), t a polynomial through the levels."""
    levels = {k: 1.0 / (1.5 + k) for k in sorted(set(nodes) | {i + 1})}
    t = np.polynomial.Polynomial.fit(list(levels), list(levels.values()), len(levels) - 1)
    u = np.linspace(i, i + 1, 20001)
    for deg in range(len(nodes)):
        w = weights(nodes, levels, i)
        f = u ** deg * t.deriv()(u)
        exact = float(((f[1:] + f[:-1]) * np.diff(u)).sum() / 2)
        assert abs(sum(wk * k ** deg for wk, k in zip(w, nodes)) - exact) < 1e-8


def test_adams_is_ab2_on_levels_uniform_in_t():
    h = -0.1
    levels = {k: 0.9 + h * k for k in range(4)}
    w = weights([1, 2], levels, 2)
    assert np.allclose(w, [-h / 2, 3 * h / 2], atol=1e-14)


def test_adams_corrector_levels_are_monotone_on_the_step():
    """On a 5-step VE exponential grid from 80 the polynomial through the last three levels t dips below 0 inside
    the last corrector step (0.0275 -> 0.002), where it made the solved corrector's divisor 1 - w_i/t_i negative;
    `monotone` drops the far level there, keeps all three on a smooth grid, and every divisor is above 1."""
    s = SCHEDULERS["exponential"].fn(5, 0.002, 80.0).tolist()
    t = [v / (1 + v) for v in s]
    divisors = []
    for i in range(1, 5):
        levels = {k: t[k] for k in range(max(0, i - 2), i + 1)}
        w = weights(sorted(levels), monotone(levels, i - 1), i - 1)
        divisors.append(1 - w[-1] / t[i])
        if i == 4:
            assert len(monotone(levels, i - 1)) == 2 and 1 - weights(sorted(levels), levels, i - 1)[-1] / t[i] < 0
    assert min(divisors) > 1
    smooth = {k: 0.9 - 0.1 * k + 0.01 * k * k for k in range(3)}
    assert monotone(smooth, 1) == smooth


def test_each_baseline_is_scored_against_the_others():
    def rec(sampler, budget, error):
        return bench.Record("gaussian", "ve", sampler, "karras", budget, budget, budget, error, 0.0, 0.0)
    records = [rec("k:euler", 5, 1.0), rec("c:deis", 5, 2.0), rec("k:euler", 6, 4.0), rec("c:deis", 6, 1.0),
               rec("adams-2", 5, 0.1)]
    others = bench.against_the_others(records, nfes=(5, 6))
    assert others["k:euler"] == pytest.approx((math.sqrt(0.5 * 4.0), 4.0, 2))
    assert others["c:deis"] == pytest.approx((math.sqrt(2.0 * 0.25), 2.0, 2)) and "adams-2" not in others
    text = bench.summary(records, nfes=(5, 6))
    assert "| k:euler | 1.41 | 4.00 | 2 |" in text and "against the others: 1 of 2 (c:deis)." in text
