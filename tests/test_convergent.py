"""The convergent solvers: quadrature weights, orders of every option, adaptive convergence, bad parameters, bench."""
import math

import numpy as np
import pytest
import torch

from samplerlab.lab import bench, problems, report
from samplerlab.lab.runner import CountingModel, Record, rms_error
from samplerlab.samplers import REGISTRY
from samplerlab.samplers.multistep import advance, angle, weights
from samplerlab.samplers.space import resolve
from samplerlab.samplers.stepping import ddim
from samplerlab.schedulers import REGISTRY as SCHEDULERS

P = problems.Gaussian(shape=(16,), lam_min=0.1, lam_max=2.0)


X = P.draw(range(2), "ve", 10.0)[0]


def trapezoid(y, x):
    """The trapezoid rule (np.trapezoid is numpy >= 2 only, np.trapz is deprecated there)."""
    return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2)


@pytest.mark.parametrize("lam_s, lam_t", [(-1.0, 0.5), (0.3, 4.0), (-math.inf, -1.0)])
def test_weights_integrate_polynomials_in_theta_exactly(lam_s, lam_t):
    nodes = [lam_s if math.isfinite(lam_s) else -3.0, lam_s - 0.7, lam_t] if math.isfinite(lam_s) else [-2.0, -3.0, lam_t]
    for deg in range(3):
        w = weights(nodes, lam_s, lam_t)
        got = sum(wk * angle(lk) ** deg for wk, lk in zip(w, nodes))
        tau = np.linspace(max(lam_s, lam_t - 40), lam_t, 200001)
        f = np.exp(tau - lam_t)
        exact = trapezoid(f * angle(tau) ** deg, tau) / trapezoid(f, tau)
        assert abs(got - exact) < 1e-6


@pytest.mark.parametrize("name, options, order", bench.ORDERS)
def test_every_option_has_its_order(name, options, order):
    assert abs(bench.slope(lambda m, x, s: REGISTRY[name].fn(m, x, s, disable=True, **options)) - order) <= 0.15


def test_kdiffusion_3m_measures_order_two(K):
    assert abs(bench.slope(lambda m, x, s: K.sampling.sample_dpmpp_3m_sde(m, x, s, disable=True, eta=0.0)) - 2) < 0.3


def test_adaptive_converges_as_tolerance_shrinks():
    sigmas = torch.tensor([80.0, 0.002, 0.0], dtype=torch.float64)
    x = P.draw(range(2), "ve", 80.0)[0]
    errs, calls = [], []
    for rtol in (1e-2, 1e-4, 1e-6):
        counted = CountingModel(P.model())
        out = REGISTRY["exp_adaptive"].fn(counted, x, sigmas, disable=True, rtol=rtol, atol=rtol / 10, budget=10000)
        errs.append(float(rms_error(out, P.exact(x, 80.0)).mean()))
        calls.append(counted.calls)
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-4 and calls[0] < calls[1] < calls[2]


def test_adaptive_keeps_its_budget():
    counted = CountingModel(P.model())
    REGISTRY["exp_adaptive"].fn(counted, X, torch.tensor([10.0, 0.05, 0.0], dtype=torch.float64), disable=True,
                                rtol=1e-8, atol=1e-10, budget=7)
    assert counted.calls <= 7


@pytest.mark.parametrize("name, bad", [("exp_multistep", {"order": 5}), ("exp_pc", {"order": 0}),
                                       ("exp_adaptive", {"rtol": 0.0}), ("exp_adaptive", {"atol": -1.0}),
                                       ("exp_adaptive", {"budget": 0})])
def test_bad_parameters_are_named(name, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        REGISTRY[name].fn(P.model(), X, SCHEDULERS["karras"].fn(4, 0.05, 10.0), disable=True, **bad)


def test_bench_tiny_grid(K):
    records = bench.race(problems.Gaussian(shape=(4,)), "flow", ["karras"], [4, 6], range(2))
    heun = [r for r in records if r.sampler == "k:heun"]
    assert heun and all(r.nfe <= r.budget for r in records)
    assert {r.sampler for r in records} >= {"exp_pc-2", "exp_multistep-3"}
    assert "| gaussian | development | flow | karras | 6 |" in bench.summary(records, nfes=(6,))
    floor = {r.budget: r.error for r in records if r.sampler == bench.BOUND}
    assert set(floor) == {4, 6} and all(r.error >= floor[r.budget] for r in records if r.sampler.startswith("exp_multistep"))


@pytest.mark.parametrize("space, s, t", [("ve", 3.0, 0.7), ("flow", 0.8, 0.3), ("flow", 1.0, 0.5)])
def test_fused_step_is_ddim_with_the_combined_prediction(space, s, t):
    sp = resolve(space)
    g = torch.Generator().manual_seed(0)
    x, *ds = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    lam_s, lam_t = sp.lam(s), sp.lam(t)
    history = list(zip([lam_s - 1.0, lam_s - 0.4, lam_s] if math.isfinite(lam_s) else [-4.0, -3.0, lam_s], ds))
    w = weights([lk for lk, _ in history], lam_s, lam_t)
    expected = ddim(sp, x, sum(wk * dk for wk, (_, dk) in zip(w, history)), s, t)
    assert torch.allclose(advance(sp, x, history, lam_s, lam_t, s, t), expected, atol=1e-12)


def test_bench_summary_verdicts_and_ratio_plot(tmp_path):
    def rec(sampler, nfe, error, sched="karras"):
        return Record("gaussian", "ve", sampler, sched, nfe, nfe, nfe, error, 0.0, 0.0)
    records = [rec("exp_pc-2", 5, 1.0), rec("k:dpmpp_2m", 5, 3.0), rec("k:euler", 5, 4.0),
               rec("exp_pc-2", 6, 2.0), rec("k:dpmpp_2m", 6, 3.0), rec("k:euler", 6, 2.5),
               rec("exp_pc-2", 4, 5.0), rec("k:euler", 4, 4.0), rec(bench.BOUND, 5, 0.5), rec(bench.BOUND, 6, 1.5)]
    text = bench.summary(records)
    assert ("| gaussian | development | ve | karras | 5 | exp_pc-2 | 1.00e+00 | k:dpmpp_2m | 3.00e+00 | 0.33 | yes "
            "| 5.00e-01 | yes |") in text
    assert "| 6 | exp_pc-2 | 2.00e+00 | k:euler | 2.50e+00 | 0.80 | no | 1.50e+00 | no |" in text
    assert "met in 1 of 2 cells. In 1 of them" in text and "| exp_pc-2 | 1.25 | 0 of 1 |" in text
    assert "| exp_pc-2 | 0.52 | 0.80 | 0.52 | - | 1 of 2 | 2 of 2 |" in text
    assert bench.BOUND not in text.split("geo. mean ratio")[1]
    mixed = records + [Record("mixture", "ve", "exp_pc-2", "karras", 5, 5, 5, 2.0, 0.0, 0.0),
                       Record("mixture", "ve", "k:euler", "karras", 5, 5, 5, 1.0, 0.0, 0.0)]
    per = bench.summary(mixed, default="exp_pc-2").split("exp_pc-2 per problem:")[1]
    assert "| gaussian | development | 0.52 | 0.80 | 2 |" in per and "| mixture | development | 2.00 | 2.00 | 1 |" in per
    assert "per problem" not in bench.summary(records)
    bench.plot(records, tmp_path / "r.png")
    assert 0 < (tmp_path / "r.png").stat().st_size < 200_000


def test_kdiffusion_3m_integrates_the_quadratic_term_at_half_weight(K):
    """Why 3M measures order 2: with D = lambda^2 (k-diffusion's t = -log sigma) its third step integrates the
    constant and linear parts of D exactly but the quadratic part u^2 (u = lambda - lambda_s) at half its value."""
    lam = torch.tensor([0.0, 0.25, 0.45, 0.75], dtype=torch.float64)
    states = {}
    out = K.sampling.sample_dpmpp_3m_sde(lambda x, s: torch.ones_like(x) * s.log() ** 2, torch.zeros(1, 1, dtype=torch.float64),
                                         (-lam).exp(), disable=True, eta=0.0, callback=lambda d: states.setdefault(d["i"], d["x"]))
    h, ls = float(lam[3] - lam[2]), float(lam[2])
    u = np.linspace(0.0, h, 200001)
    f = np.exp(u - h)
    full, quadratic = trapezoid(f * (ls + u) ** 2, u), trapezoid(f * u ** 2, u)
    got = float(out - math.exp(-h) * states[2])
    assert abs(got - (full - quadratic / 2)) < 1e-9 and abs(got - full) > 1e-4


def test_merge_adds_missing_contenders_on_the_same_cells(tmp_path):
    def rec(sampler, nfe, error):
        return Record("gaussian", "ve", sampler, "karras", nfe, nfe, nfe, error, 0.0, 0.0)
    report.write_json([rec("exp_pc-2", 5, 9.0), rec("c:ipndm", 5, 0.5), rec("c:ipndm", 6, 0.4)], tmp_path / "b.json",
                      seeds=[1000, 1001])
    out = bench.merged([rec("exp_pc-2", 5, 1.0), rec("k:euler", 5, 2.0)], [tmp_path / "b.json"], [1000, 1001])
    assert sorted((r.sampler, r.budget, r.error) for r in out) == [("c:ipndm", 5, 0.5), ("exp_pc-2", 5, 1.0), ("k:euler", 5, 2.0)]
    with pytest.raises(ValueError, match="seeds"):
        bench.merged([], [tmp_path / "b.json"], [0, 1])


def test_merge_carries_calibrated_records_on_the_cells_nfe(tmp_path):
    """A calibrated pipeline's schedule is its own ("calibrated"): it is merged on its (problem, space, NFE)."""
    cal = Record("gaussian", "ve", "calibrated", bench.CALIBRATED, 5, 5, 5, 0.1, 0.0, 0.0)
    other = Record("gaussian", "ve", "calibrated", bench.CALIBRATED, 8, 8, 8, 0.1, 0.0, 0.0)
    report.write_json([cal, other], tmp_path / "c.json", seeds=[0])
    out = bench.merged([Record("gaussian", "ve", "adams-2", "karras", 5, 5, 5, 1.0, 0.0, 0.0)], [tmp_path / "c.json"], [0])
    assert sorted((r.sampler, r.budget) for r in out) == [("adams-2", 5), ("calibrated", 5)]


def test_adams_corrector_damps_a_collapsed_posterior():
    """Near-memorising data (6 points in 4-D, variances 1e-4..4e-4; not a bench problem), VE from sigma = 80:
    where the posterior has collapsed, v = (z - D)/t is stiff, and the corrector solved for v's linear part
    (adams.correct) keeps adams below DDIM (euler) on Karras and exponential grids of 5, 6 and 8 calls; the
    explicit corrector multiplied the predictor's error by |w_i|/t_i there (1.5x DDIM's error)."""
    mix = problems.Mixture(dim=4, components=6, classes=6, spread=1.0, lam_range=(1e-4, 4e-4), seed=1)
    x = mix.draw(range(8), "ve", 80.0)[0]
    exact = mix.exact(x, 80.0)
    ratios = []
    for sched in ("karras", "exponential"):
        for n in (5, 6, 8):
            s = SCHEDULERS[sched].fn(n, 0.002, 80.0)
            err = {k: float(rms_error(REGISTRY[k].fn(mix.model(), x, s, disable=True), exact).mean()) for k in ("adams", "euler")}
            ratios.append(err["adams"] / err["euler"])
    assert math.exp(sum(map(math.log, ratios)) / len(ratios)) < 0.7
