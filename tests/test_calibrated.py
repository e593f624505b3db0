"""The calibrated solver (samplers/calibrated.py): API, call counts, consistency, held-out gain, JSON, bad input."""
import json
import math

import numpy as np
import pytest
import torch

from samplerlab.lab import problems
from samplerlab.lab.runner import CountingModel, rms_error, schedule_range
from samplerlab.samplers import REGISTRY as SAMPLERS
from samplerlab.samplers.calibrated import (BUDGET, REFERENCE_TOLERANCE, Calibrated, calibrate_solver, conditions, flat, golden,
                                             history_sizes, level_coordinate, nested, reference_grid, reference_solve,
                                             refine)
from samplerlab.samplers.multistep import sample_exp_multistep
from samplerlab.samplers.space import resolve
from samplerlab.schedulers import REGISTRY as SCHEDULERS

PROBLEM = problems.Gaussian(shape=(24,), lam_min=0.01, lam_max=4.0, seed=3)


def calibrated(space="ve", nfe=5, seeds=range(100, 106)):
    lo, hi = schedule_range(PROBLEM, space)
    x, _ = PROBLEM.draw(list(seeds), space, hi)
    counted = CountingModel(PROBLEM.model(space))
    cal = calibrate_solver(counted, x, lo, hi, nfe, space)
    return cal, counted.calls


@pytest.fixture(scope="module")
def cal5():
    return calibrated()


def test_levels_calls_and_callback(cal5):
    cal, spent = cal5
    s = cal.sigmas
    assert len(s) == 6 and s[-1] == 0 and all(a > b for a, b in zip(s, s[1:]))
    assert s[0] == pytest.approx(PROBLEM.sigma_max, rel=1e-6)
    assert spent == cal.model_calls <= BUDGET
    x, _ = PROBLEM.draw([1, 2], "ve", s[0])
    counted, seen = CountingModel(PROBLEM.model()), []
    out = cal.sample(counted, x, callback=lambda info: seen.append((info["i"], float(info["sigma"]))), disable=True)
    assert counted.calls == 5 and [i for i, _ in seen] == list(range(5))
    assert [v for _, v in seen] == pytest.approx(s[:-1]) and bool(torch.isfinite(out).all())


def test_trials_reuse_the_calls_of_the_levels_they_share_and_end_where_a_full_run_ends(cal5):
    """A trial that shares its first levels with the best run so far takes their states and predictions instead of
    calls (all share sigma_max; a refinement move keeps every level above the one it moves), so more trials fit in
    BUDGET than nfe calls each would allow; the reported fit error is that of a plain run of the shipped solver."""
    cal, spent = cal5
    assert cal.meta["candidates"] > 1.6 * (spent - cal.meta["reference_calls"] * 3 // 2) / cal.nfe
    lo, hi = schedule_range(PROBLEM, "ve")
    x, _ = PROBLEM.draw(list(range(100, 106)), "ve", hi)
    _, ref = reference_solve(PROBLEM.model(), x, lo, hi, resolve("ve"), None, cal.meta["reference_calls"])
    with torch.no_grad():
        end = cal.sample(PROBLEM.model(), x, disable=True)
    assert float((flat(end) - flat(ref)).pow(2).mean(1).sqrt().mean()) == pytest.approx(cal.fit_error, rel=1e-9)


def test_starts_beyond_fit_starts_are_scored_not_fitted_nor_kept_at_every_level(monkeypatch):
    """With more starts than FIT_STARTS, the coefficients are fitted on the first FIT_STARTS (their reference states
    kept at every level), while every start's end state is solved and scores each candidate: the fit error is the
    shipped solver's mean end error over all of them."""
    from samplerlab.samplers import calibrated as cal_mod

    monkeypatch.setattr(cal_mod, "FIT_STARTS", 3)
    fit, sizes = cal_mod.fit_step, set()

    def recording(space, s, i, xs, ds, target):
        sizes.update({len(target), *(len(v) for v in xs + ds)})
        return fit(space, s, i, xs, ds, target)

    monkeypatch.setattr(cal_mod, "fit_step", recording)
    lo, hi = schedule_range(PROBLEM, "ve")
    x, _ = PROBLEM.draw(list(range(100, 106)), "ve", hi)
    grid, states, end, _ = cal_mod.trajectory(PROBLEM.model(), x, lo, hi, resolve("ve"), None, 40, None)
    assert states.shape == (41, 3, 24) and end.shape == (6, 24) and torch.equal(states[-1], end[:3])
    cal = calibrate_solver(PROBLEM.model(), x, lo, hi, 4, "ve", reference_calls=40)
    assert sizes == {3}
    with torch.no_grad():
        out = cal.sample(PROBLEM.model(), x, disable=True)
    assert float((flat(out) - end).pow(2).mean(1).sqrt().mean()) == pytest.approx(cal.fit_error, rel=1e-9)


def test_every_step_is_first_order_consistent(cal5):
    cal, _ = cal5
    space = resolve(cal.space)
    for i, theta in enumerate(cal.coefficients):
        c, rhs = conditions(space, cal.sigmas, i, *history_sizes(i))
        assert np.allclose(c @ np.asarray(theta), rhs, rtol=0, atol=1e-9)
    # exact when D is constant: the ODE then ends at that constant from any start
    c0 = torch.linspace(-1, 1, 24, dtype=torch.float64)
    x = 80.0 * torch.randn(3, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = cal.sample(lambda x, s: c0.expand_as(x), x, disable=True)
    torch.testing.assert_close(out, c0.expand_as(out), atol=1e-9, rtol=0)


def test_golden_section_narrows_to_the_least_rho_in_its_trials():
    seen = []

    def f(rho):
        seen.append(rho)
        return (math.log(rho) - math.log(3.0)) ** 2

    golden(f, 1.0, 20.0, 12)
    assert len(seen) == 12 and all(1.0 <= r <= 20.0 for r in seen)
    assert min(seen, key=lambda r: abs(math.log(r / 3.0))) == pytest.approx(3.0, rel=0.02)


def test_refine_finds_the_best_levels_within_its_budget():
    """refine's pattern search on a separable error (distance of the path to the best one, grid of 100 levels)
    reaches the best path and stops when the budget is spent, keeping the levels strictly descending."""
    best_path, trials = [0, 13, 40, 71, 99], []

    def fitted(label, path):
        trials.append(path)
        assert all(a < b for a, b in zip(path, path[1:])) and path[0] == 0 and path[-1] == 99
        return Calibrated("ve", [100.0 - j for j in path[:-1]] + [0.0], [], schedule=label, meta={"path": path},
                          fit_error=sum((a - b) ** 2 for a, b in zip(path, best_path)))

    start = fitted("start", [0, 20, 45, 60, 99])
    out = refine(start, fitted, lambda path: len(trials) < 200, np.arange(100.0))
    assert out.meta["path"] == best_path and out.schedule == "start + refined" and len(trials) < 200
    trials.clear()
    out = refine(start, fitted, lambda path: len(trials) < 3, np.arange(100.0))
    assert len(trials) == 3 and out.fit_error < start.fit_error


def test_refine_moves_in_karras_units_whatever_the_grid():
    """VE: the grid index itself; flow (a grid uniform in lambda): t^(1/7) scaled to the index of a Karras grid
    of the same size, 0 at t = 1 and M - 1 at sigma_min, increasing, so that the level at t = 0.988 (a third of
    the lambda grid's indices) is a few units from the top, as on a Karras grid."""
    ve = reference_grid(100, 0.002, 80.0, resolve("ve"))
    assert np.array_equal(level_coordinate(ve.tolist(), resolve("ve")), np.arange(101.0))
    g = reference_grid(100, 0.002, 1.0, resolve("flow")).tolist()
    c = level_coordinate(g, resolve("flow"))
    assert c[0] == 0 and abs(c[-2] - 99) < 1e-9 and (np.diff(c) > 0).all()
    j = int(np.abs(np.asarray(g) - 0.988).argmin())
    assert j > 25 and c[j] < 2.5


def test_nested_holds_the_start_and_adds_one_level_per_interval():
    coord = np.arange(101.0)
    assert nested([0, 30, 60, 100], coord, 3) == [[0, 30, 60, 100]]
    assert nested([0, 30, 31, 100], coord, 4) == [[0, 15, 30, 31, 100], [0, 30, 31, 65, 100]]


def test_a_start_with_one_call_fewer_seeds_the_search(cal5):
    """Seeded with the 5-call solver's levels, the 6-call search starts from them with one level inserted, and
    ends nearer the reference than the 5-call solver (the same calibration starts); it keeps the budget."""
    small, _ = cal5
    lo, hi = schedule_range(PROBLEM, "ve")
    x, _ = PROBLEM.draw(list(range(100, 106)), "ve", hi)
    counted = CountingModel(PROBLEM.model("ve"))
    cal = calibrate_solver(counted, x, lo, hi, 6, start=small.sigmas)
    assert cal.meta["start"] == small.sigmas and counted.calls == cal.model_calls <= BUDGET
    assert cal.fit_error < small.fit_error
    assert Calibrated.from_json(cal.to_json()).meta["start"] == small.sigmas


def test_a_shared_reference_is_solved_once_and_gives_the_same_solver(cal5):
    """Calibrations that share `reference` (a chain) solve it once: the second makes only its fit calls, is
    charged the reference's all the same (BUDGET) and ends with the solver it finds alone; other starts are refused."""
    alone, _ = cal5
    lo, hi = schedule_range(PROBLEM, "ve")
    x, _ = PROBLEM.draw(list(range(100, 106)), "ve", hi)
    shared = {}
    calibrate_solver(PROBLEM.model("ve"), x, lo, hi, 4, reference=shared)
    counted = CountingModel(PROBLEM.model("ve"))
    cal = calibrate_solver(counted, x, lo, hi, 5, reference=shared)
    assert cal.sigmas == alone.sigmas and cal.coefficients == alone.coefficients and cal.model_calls == alone.model_calls
    assert cal.meta["reference_reused"] == shared["calls"] >= 150 and counted.calls == cal.model_calls - shared["calls"]
    other, _ = PROBLEM.draw(list(range(200, 206)), "ve", hi)
    with pytest.raises(ValueError, match="shared reference was solved from other start states"):
        calibrate_solver(PROBLEM.model("ve"), other, lo, hi, 5, reference=shared)


@pytest.mark.parametrize("start", [[80.0, 1.0, 0.0], [80.0, 1.0, 2.0, 0.5, 0.1, 0.0], [80.0, 10.0, 1.0, 0.5, 0.1, 0.01]])
def test_a_start_that_is_no_schedule_of_nfe_or_one_fewer_steps_is_named(start):
    x, _ = PROBLEM.draw([1, 2], "ve", 80.0)
    with pytest.raises(ValueError, match="start must be 5 or 6 host levels descending to 0"):
        calibrate_solver(PROBLEM.model(), x, 0.002, 80.0, 5, start=start)


def test_a_seed_gone_to_another_mode_does_not_set_the_fit(monkeypatch):
    """fit_step on 8 seeds whose targets follow one consistent step, one of them displaced by 50 (a start that
    went to another mode): with the robust weights the fit stays near the true step; plain least squares
    does not."""
    from samplerlab.samplers import calibrated as cal_mod

    space, s, gen = resolve("ve"), [80.0, 10.0, 1.0, 0.1, 0.0], torch.Generator().manual_seed(0)
    xs = [torch.randn(8, 16, generator=gen, dtype=torch.float64) * v for v in (10.0, 80.0)]
    ds = [torch.randn(8, 16, generator=gen, dtype=torch.float64) for _ in range(2)]
    c, _ = conditions(space, s, 1, 2, 2)
    true = cal_mod.base_step(space, s, 1, 2, 2) + cal_mod.null_basis(c) @ np.array([0.02, -0.03])
    target = cal_mod.combine(true, 2, xs, ds)
    target[3] += 50.0
    robust = cal_mod.fit_step(space, s, 1, xs, ds, target)
    assert cal_mod.robust_weights(np.array([1.0, 1.2, 0.8, 30.0])).tolist() == pytest.approx([1, 1, 1, 3 * 1.1 / 30])
    monkeypatch.setattr(cal_mod, "robust_weights", lambda r: np.ones_like(r))
    plain = cal_mod.fit_step(space, s, 1, xs, ds, target)
    assert np.abs(robust - true).max() < 0.25 * np.abs(plain - true).max()


@pytest.mark.parametrize("space", ["ve", "flow"])
def test_held_out_error_below_half_of_dpmpp_2m(space):
    cal, _ = calibrated(space, nfe=6)
    lo, hi = schedule_range(PROBLEM, space)
    x, _ = PROBLEM.draw(range(8), space, hi)
    exact = PROBLEM.exact(x, hi, 0.0, space)
    mine = float(rms_error(cal.sample(PROBLEM.model(space), x, disable=True), exact).mean())
    for sched in ("karras", "exponential"):
        sig = SCHEDULERS[sched].fn(6, lo, hi, space=space)
        base = float(rms_error(SAMPLERS["dpmpp_2m"].fn(PROBLEM.model(space), x, sig, disable=True, space=space), exact).mean())
        assert mine < 0.5 * base, (sched, mine, base)


def test_batch_independent(cal5):
    cal, _ = cal5
    x, _ = PROBLEM.draw([4, 5, 6], "ve", cal.sigmas[0])
    both = cal.sample(PROBLEM.model(), x, disable=True)
    one = cal.sample(PROBLEM.model(), x[1:2], disable=True)
    torch.testing.assert_close(both[1:2], one, rtol=0, atol=1e-12)


def test_json_round_trip_and_tampering(cal5):
    cal, _ = cal5
    again = Calibrated.from_json(cal.to_json())
    x, _ = PROBLEM.draw([7], "ve", cal.sigmas[0])
    torch.testing.assert_close(again.sample(PROBLEM.model(), x, disable=True), cal.sample(PROBLEM.model(), x, disable=True))
    data = json.loads(cal.to_json())
    data["coefficients"][2][0] += 0.01
    with pytest.raises(ValueError, match="first-order"):
        Calibrated.from_json(json.dumps(data))
    data = json.loads(cal.to_json())
    data["format"] = "samplerlab.calibrated_schedule/1"
    with pytest.raises(ValueError, match="format"):
        Calibrated.from_json(json.dumps(data))
    data = json.loads(cal.to_json())
    data["sigmas"][2] = data["sigmas"][1]
    with pytest.raises(ValueError, match="descending"):
        Calibrated.from_json(json.dumps(data))


@pytest.mark.parametrize("nfe", [2, 17, 5.0, True])
def test_nfe_outside_range_named(nfe):
    x, _ = PROBLEM.draw([0], "ve")
    with pytest.raises(ValueError, match=r"nfe must be an integer in \[3, 16\]"):
        calibrate_solver(PROBLEM.model(), x, 0.002, 80.0, nfe)


def test_non_finite_output_names_the_level():
    x, _ = PROBLEM.draw([0, 1], "ve")

    def broken(x, sigma):
        d = PROBLEM.model()(x, sigma)
        return d * math.nan if float(sigma[0]) < 1.0 else d

    with pytest.raises(ValueError, match=r"not finite at level sigma = 0\.9"):
        calibrate_solver(broken, x, 0.002, 80.0, 5)


def test_reference_that_does_not_converge_is_reported():
    x, _ = PROBLEM.draw([0, 1], "ve")

    def rough(x, sigma):  # an x0 prediction oscillating in x and sigma: no solve converges at these budgets
        return 3.0 * torch.sin(50.0 * x + 40.0 * sigma.log().reshape(-1, 1))

    with pytest.raises(ValueError, match=r"does not converge: .* is [0-9.e+-]+ of \|x\|"):
        calibrate_solver(rough, x, 0.002, 80.0, 5)


def test_a_reference_that_converges_at_a_lower_order_is_accepted_on_its_observed_order():
    """Gaussian, VE, 24 reference calls: the 24- and 12-call solves differ by 0.025 of |x| (above the tolerance),
    the 12- and 6-call ones by 0.072: Richardson's estimate 0.025 / (0.072 / 0.025 - 1) = 0.013 is below it.
    The 8-D mixture in flow, 24 calls: 0.038 apart and 4.0 times that from 6 calls, estimate 0.013, accepted;
    on Karras levels in t (the grid before `reference_grid`) the two were 0.94 of |x| apart, ratio 0.5: refused."""
    p = problems.make("gaussian")
    x, _ = p.draw([0, 1], "ve")
    stages = []
    cal = calibrate_solver(p.model(), x.float(), 0.002, 80.0, 4, reference_calls=24, progress=lambda *a: stages.append(a[0]))
    assert 0.01 < cal.reference_error < 0.02 and "order" in stages and cal.model_calls <= BUDGET
    m = problems.make("mixture")
    xf, _ = m.draw([0, 1], "flow", 1.0)
    stages.clear()
    cal = calibrate_solver(m.model("flow"), xf.float(), *schedule_range(m, "flow"), 4, space="flow", reference_calls=24,
                           progress=lambda *a: stages.append(a[0]))
    assert 0.01 < cal.reference_error < 0.02 and "order" in stages


def test_the_flow_reference_grid_resolves_the_top_and_converges_at_its_order():
    """Flow: t = 1, then 1 - 1/M^2, then uniform in lambda; on the trained digits network, whose x0 prediction
    changes by 40 % between t = 1 and t = 0.9995 (its noise embedding, trained up to sigma_VE of about 80, saturates
    at 1e4), 100 and 50 calls are within the tolerance. On Karras levels in t they were 0.043 apart (ratio 2.1)."""
    flow = resolve("flow")
    g = reference_grid(100, 0.002, 1.0, flow)
    lam = [flow.lam(float(t)) for t in g[1:-1]]
    assert len(g) == 101 and float(g[0]) == 1.0 and float(g[-1]) == 0.0 and abs(float(g[1]) - (1 - 1e-4)) < 1e-12
    assert max(np.diff(lam)) - min(np.diff(lam)) < 1e-9 and abs(float(g[-2]) - 0.002) < 1e-12
    assert torch.equal(reference_grid(20, 0.002, 80.0, resolve("ve")), SCHEDULERS["karras"].fn(20, 0.002, 80.0))
    with pytest.raises(ValueError, match="sigma_min of a flow model must be < 0.9999"):
        reference_grid(100, 0.99995, 1.0, flow)
    p = problems.make("digits")
    x, labels = p.draw([1000, 1001], "flow", 1.0)
    m = p.model("flow", labels)
    d_top = m(x.float(), torch.ones(2))
    d_near = m(0.9995 * x.float() + 0.0005 * d_top, torch.full((2,), 0.9995))
    assert float((d_near - d_top).norm() / d_top.norm()) > 0.35
    ends = [flat(sample_exp_multistep(m, x.float(), reference_grid(n, 0.002, 1.0, flow).float(), disable=True,
                                      space="flow", order=4)) for n in (100, 50)]
    assert float((ends[0] - ends[1]).pow(2).mean().sqrt() / ends[0].pow(2).mean().sqrt()) < REFERENCE_TOLERANCE


def test_progress_reports_stages_and_may_cancel():
    x, _ = PROBLEM.draw([0], "ve")
    stages = []
    calibrate_solver(PROBLEM.model(), x, 0.002, 80.0, 3, progress=lambda *a: stages.append(a))
    assert {"reference", "check", "fit"} <= {st for st, _, _ in stages}
    fit = [(done, total) for st, done, total in stages if st == "fit"]
    assert [d for d, _ in fit] == sorted(d for d, _ in fit) and fit[-1][1] - 3 < fit[-1][0] <= fit[-1][1]

    def cancel(stage, done, total):
        if stage == "fit":
            raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        calibrate_solver(PROBLEM.model(), x, 0.002, 80.0, 3, progress=cancel)


def test_study_on_held_out_seeds():
    from samplerlab.lab.studies import calibrated as study

    with pytest.raises(ValueError, match="disjoint"):
        study.evaluate(PROBLEM, "ve", [5], range(4), range(3, 6))
    rows = study.evaluate(PROBLEM, "ve", [5], range(3), range(100, 104))
    assert rows[0]["nfe"] == 5 and rows[0]["calls"] <= BUDGET and rows[0]["baseline"]
    assert rows[0]["ratio"] < 0.5, rows
    assert rows[0]["median"] <= rows[0]["worst"] and rows[0]["calibrated"] <= rows[0]["worst"]
    assert 0 < rows[0]["baseline_median"] and f"| {rows[0]['baseline_median']:.1e} |" in study.markdown(rows)
    more = [dict(rows[0], nfe=6, calibrated=0.5 * rows[0]["calibrated"]), dict(rows[0], nfe=8, calibrated=10 * rows[0]["calibrated"])]
    assert study.monotone(rows + more) == [True, True, False]
    assert "Target (ratio <= 0.5) met in 1 of 1 cells" in study.markdown(rows)


def test_the_reference_check_is_not_set_by_one_start_that_crossed_a_basin_boundary():
    from samplerlab.samplers.calibrated import check_difference

    g = torch.Generator().manual_seed(0)
    ref = torch.randn(256, 16, generator=g, dtype=torch.float64)
    check = ref + 1e-4 * torch.randn(256, 16, generator=g, dtype=torch.float64)
    crossed = check.clone()
    crossed[7] += 1.5
    assert float((crossed - ref).pow(2).mean().sqrt()) > REFERENCE_TOLERANCE
    assert check_difference(crossed, ref, 1.0) < 1.1 * check_difference(check, ref, 1.0) < 2e-4
    assert check_difference(ref + 0.05, ref, 1.0) > REFERENCE_TOLERANCE


def test_the_study_counts_the_seeds_that_end_in_another_mode():
    from samplerlab.lab.studies import calibrated as study

    rows = study.evaluate(problems.make("mixture"), "ve", [5], range(4), range(100, 104))
    assert 0 <= rows[0]["flips"] <= 1 and 0 <= rows[0]["baseline_flips"] <= 1
    assert f"| {100 * rows[0]['flips']:.1f} %, {100 * rows[0]['baseline_flips']:.1f} % |" in study.markdown(rows)
    gauss = study.evaluate(PROBLEM, "ve", [4], range(2), range(100, 102))
    assert gauss[0]["flips"] is None and "| - |" in study.markdown(gauss)


def test_the_study_evaluates_on_any_seeds_below_the_calibration_seeds():
    from samplerlab.lab.studies import calibrated as study

    assert study.evaluation_seeds(16, 16, 32) == range(16, 32)
    for first, count in ((-1, 16), (990, 16), (0, 0)):
        with pytest.raises(ValueError, match="--seed0 and --seeds"):
            study.evaluation_seeds(first, count, 32)


def test_the_chained_study_seeds_every_budget_with_the_one_before(monkeypatch):
    from samplerlab.lab.studies import calibrated as study

    calls = []
    real = study.calibrate_solver

    def spy(model, x, lo, hi, nfe, space="ve", start=None, reference=None):
        calls.append((nfe, None if start is None else len(start), "key" in reference))
        return real(model, x, lo, hi, nfe, space, start=start, reference=reference)

    monkeypatch.setattr(study, "calibrate_solver", spy)
    rows = study.evaluate(PROBLEM, "ve", [6, 4], range(2), range(100, 103), chain=True)
    assert calls == [(4, None, False), (5, 5, True), (6, 6, True)] and [r["nfe"] for r in rows] == [4, 6]
    assert rows[0]["chain_calls"] == rows[0]["calls"] and 1.3 * rows[1]["calls"] < rows[1]["chain_calls"] < 3 * rows[1]["calls"]
    assert f"| {rows[1]['calls']} (chain {rows[1]['chain_calls']}) |" in study.markdown(rows)


def test_study_lists_a_refused_calibration_and_goes_on(monkeypatch):
    from samplerlab.lab.studies import calibrated as study

    def refuse(*args, **kw):
        raise ValueError("the reference solve does not converge: 0.04 of |x|")

    monkeypatch.setattr(study, "calibrate_solver", refuse)
    rows = study.evaluate(PROBLEM, "ve", [4, 5], range(2), range(100, 102))
    assert [(r["nfe"], r["refused"]) for r in rows] == [(n, "the reference solve does not converge: 0.04 of |x|") for n in (4, 5)]
    text = study.markdown(rows)
    assert "Refused by the calibration (2 of 2 cells" in text and "Target" not in text and study.monotone(rows) == []


@pytest.mark.parametrize("space", ["ve", "flow"])
def test_the_els_machine_is_refused_its_reference_does_not_converge(space):
    """ComfyUI's digits_els: 100 vs 50 reference calls 0.12 (VE) and 0.074 (flow) of |x| apart, and the 25-call
    solve about as far again (ratio near 1, no convergence at any order): refused, not calibrated on a wrong
    reference."""
    p = problems.make("els")
    lo, hi = schedule_range(p, space)
    x, labels = p.draw([0, 1], space, hi)
    with pytest.raises(ValueError, match=r"does not converge: .* is 0\.(1|07)\d* of \|x\|, and (0\.\d+|1\.[0-4]\d*) times that"):
        calibrate_solver(p.model(space, labels), x.float(), lo, hi, 5, space=space)
