"""Shaped and calibrated schedules: shapes, flow awareness, bad input named, calibration quality, cache."""
import json
import math

import pytest
import torch

from samplerlab.lab import problems
from samplerlab.lab.runner import CountingModel, rms_error, schedule_range
from samplerlab.samplers import REGISTRY as SAMPLERS
from samplerlab.samplers.space import FLOW, VE
from samplerlab.schedulers import REGISTRY as SCHEDULERS
from samplerlab.schedulers import calibrate as cal
from samplerlab.schedulers.shaped import kappa_band


def test_polyexponential_matches_k_diffusion(K):
    for rho in (1.0, 2.5):
        twin = K.sampling.get_sigmas_polyexponential(12, 0.03, 14.6, rho)
        torch.testing.assert_close(SCHEDULERS["polyexponential"].fn(12, 0.03, 14.6, rho=rho).float(), twin, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("space,lo,hi", [(VE, 0.03, 14.6), (FLOW, 0.001, 1.0)])
def test_critical_window_spends_its_share_near_sigma_c(space, lo, hi):
    def inside(sig, t_c=0.5, width=0.5):
        ve = torch.tensor([space.to_ve(v) for v in sig[1:-1].tolist()], dtype=torch.float64)
        return float(((ve.log() - math.log(t_c / (1 - t_c))).abs() < width).double().mean())

    base = SCHEDULERS["karras"].fn(40, lo, hi, space=space.name)
    for share in (0.3, 0.7):
        sig = SCHEDULERS["critical_window"].fn(40, lo, hi, space=space.name, share=share)
        assert sig[0] == pytest.approx(hi) and sig[-2] == pytest.approx(lo) and bool((sig[:-1] > sig[1:]).all())
        assert inside(sig) > inside(base) + 0.5 * share * 0.68


def test_critical_window_outside_range_named():
    with pytest.raises(ValueError, match="t_c"):
        SCHEDULERS["critical_window"].fn(8, 0.03, 0.05, t_c=0.99, width=0.05)


def test_poisson_aligned_floor():
    lo, _ = kappa_band(128.0, 0.01)
    sig = SCHEDULERS["poisson_aligned"].fn(10, 0.03, 14.6, D=128.0)
    assert lo < 1 and float(sig[-2]) == pytest.approx(0.03 / lo)
    torch.testing.assert_close(SCHEDULERS["poisson_aligned"].fn(10, 0.03, 14.6, D=math.inf), SCHEDULERS["karras"].fn(10, 0.03, 14.6))
    g = torch.Generator().manual_seed(0)
    kappa = (128.0 / (2 * torch._standard_gamma(torch.full((20000,), 64.0, dtype=torch.float64), generator=g))).sqrt()
    assert abs(float((kappa < lo).double().mean()) - 0.01) < 0.003  # the Wilson-Hilferty quantile


@pytest.mark.parametrize("name", ["karras", "critical_window", "poisson_aligned", "polyexponential"])
def test_flow_levels_stay_in_unit_interval(name):
    sig = SCHEDULERS[name].fn(12, 0.002, 1.0, space="flow")
    assert float(sig[0]) == 1.0 and bool((sig <= 1).all()) and bool((sig[:-1] > sig[1:]).all())
    with pytest.raises(ValueError, match="sigma_max"):
        SCHEDULERS[name].fn(12, 0.002, 2.0, space="flow")


@pytest.mark.parametrize("bad,match", [(dict(share=0.0), "share"), (dict(share=1.0), "share"), (dict(t_c=float("inf")), "t_c"),
                                       (dict(n=0), "steps"), (dict(sigma_min=3.0, sigma_max=2.0), "sigma_min"),
                                       (dict(sigma_max=float("nan")), "sigma_max")])
def test_bad_input_named(bad, match):
    args = {"n": 5, "sigma_min": 0.03, "sigma_max": 14.6, **bad}
    with pytest.raises(ValueError, match=match):
        SCHEDULERS["critical_window"].fn(**args)


@pytest.fixture(scope="module")
def gaussian_setup():
    p = problems.Gaussian(shape=(2, 8, 8))
    lo, hi = schedule_range(p, "ve")
    x, _ = p.draw(range(3), "ve", hi)
    counted = CountingModel(p.model("ve"))
    ref = cal.reference(counted, x, lo, hi, "ve", calls=200)
    return p, lo, hi, x, counted, ref


def test_calibrated_beats_karras_on_fresh_seeds(gaussian_setup):
    p, lo, hi, x, counted, ref = gaussian_setup
    assert counted.calls == ref.calls <= 200
    c = cal.choose(counted, x, ref, "exp_multistep", 5, "ve")
    assert len(c.sigmas) == 6 and c.sigmas[0] == hi and c.sigmas[-1] == 0 and c.model_calls == ref.calls + 5 * 4
    xe, _ = p.draw(range(50, 56), "ve", hi)
    exact = p.exact(xe, hi)

    def err(sig):
        return float(rms_error(SAMPLERS["exp_multistep"].fn(p.model("ve"), xe, torch.tensor(sig, dtype=torch.float64), disable=True), exact).mean())

    assert err(c.sigmas) < 0.7 * err(SCHEDULERS["karras"].fn(5, lo, hi).tolist())


def test_calibration_reports_progress_and_cancels():
    p = problems.Gaussian(shape=(8,))
    lo, hi = schedule_range(p, "flow")
    x, _ = p.draw(range(2), "flow", hi)
    seen = []

    def stop(stage, done, total):
        seen.append(stage)
        if stage == "search":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cal.calibrate(p.model("flow"), x, lo, hi, "euler", 4, "flow", reference_calls=40, progress=stop)
    assert 35 <= seen.count("reference") <= 40 and seen[-1] == "search"


@pytest.mark.parametrize("bad,match", [(dict(steps=0), "steps"), (dict(solver="nope"), "solver"), (dict(reference_calls=500), "reference_calls"),
                                       (dict(sigma_min=90.0), "sigma_min")])
def test_calibrate_bad_input_named(bad, match):
    p = problems.Gaussian(shape=(4,))
    args = {**dict(model=p.model(), x_T=p.draw([0])[0], sigma_min=0.002, sigma_max=80.0, solver="euler", steps=3, reference_calls=10), **bad}
    with pytest.raises(ValueError, match=match):
        cal.calibrate(**args)


def test_cache_round_trip_corrupt_and_foreign(tmp_path, caplog):
    key = {"model": {"class": "X", "weights": "abc"}, "solver": "euler", "steps": 3}
    c = cal.Calibration([5.0, 1.0, 0.1, 0.0], "euler", 3, 210, 1.5, 0.01)
    path = cal.save_cached(tmp_path, key, c)
    assert cal.load_cached(tmp_path, key) == c and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert cal.load_cached(tmp_path, {**key, "steps": 4}) is None
    path.write_text("{not json")
    assert cal.load_cached(tmp_path, key) is None and "unusable" in caplog.text
    data = {"format": cal.FORMAT, "key": {**key, "model": {"class": "Y"}}, "calibration": {}}
    path.write_text(json.dumps(data))
    assert cal.load_cached(tmp_path, key) is None
    path.write_text(json.dumps({"format": cal.FORMAT, "key": key, "calibration": {**c.__dict__, "sigmas": [5.0, 6.0, 0.1, 0.0]}}))
    assert cal.load_cached(tmp_path, key) is None
