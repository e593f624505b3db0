"""Guidance schedules, the critical-level detectors and the k-diffusion wrapper (pure core)."""
import math

import pytest
import torch

from samplerlab.lab.guidance import guided_sample, metrics, speciation_mixture
from samplerlab.samplers.critical import JVPProbe, estimate_sigma_c, sigma_c_from_data
from samplerlab.samplers.guidance import Interval, Pulse, ScheduledCFG, curve, percent_at_sigma, sigma_at_percent
from samplerlab.lab.problems import Gaussian


def test_pulse_profiles():
    for shape in ("gaussian", "cosine", "box"):
        p = Pulse(shape, peak=5.0, base=1.0, width=0.5, center=2.0)
        assert float(p.weight(2.0)) == pytest.approx(5.0)
        assert float(p.weight(2.0 * math.exp(3.1 * 0.5))) == 1.0 and float(p.weight(0.0)) == 1.0
    g = Pulse("gaussian", 3.0, 1.0, 0.5, 1.0)
    assert float(g.weight(math.exp(0.5))) == pytest.approx(1 + 2 * math.exp(-0.5))
    c = Pulse("cosine", 3.0, 2.0, 1.0, 1.0)
    assert float(c.weight(math.exp(0.5))) == pytest.approx(2.5) and float(c.weight(math.inf)) == 2.0
    box = Interval(4.0, 1.5, 0.3, 3.0)
    assert [float(box.weight(s)) for s in (0.3, 0.31, 3.0, 3.01)] == [1.5, 4.0, 4.0, 1.5]
    per_sample = Pulse("box", 2.0, 1.0, 0.1).weight(1.0, torch.tensor([1.0, 5.0]))
    assert per_sample.tolist() == [2.0, 1.0]


@pytest.mark.parametrize("bad, name", [(dict(width=0.0), "width"), (dict(width=-1.0), "width"), (dict(peak=math.nan), "peak"),
                                       (dict(base=math.inf), "base"), (dict(shape="tri"), "shape"), (dict(center=0.0), "center")])
def test_bad_pulse_named(bad, name):
    with pytest.raises(ValueError, match=name):
        Pulse(**bad)


def test_bad_interval_and_percent_named():
    with pytest.raises(ValueError, match="sigma_hi"):
        Interval(3.0, 1.0, 2.0, 1.0)
    with pytest.raises(ValueError, match="peak"):
        Interval(math.inf)
    for p in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="center_percent"):
            sigma_at_percent("center_percent", p, lambda q: 1 - q)


def test_percent_conversion_through_host_function():
    flow_p2s = lambda p: 1.0 - p  # a flow model with shift 1: t = 1 - p
    assert sigma_at_percent("p", 0.5, flow_p2s, "flow") == pytest.approx(1.0)  # t = 0.5 is VE sigma 1
    assert sigma_at_percent("p", 0.0, flow_p2s, "flow") == math.inf
    ve_p2s = lambda p: math.exp(math.log(14.6) * (1 - p) + math.log(0.03) * p)
    assert percent_at_sigma(ve_p2s(0.3), ve_p2s) == pytest.approx(0.3, abs=1e-9)


def test_sigma_c_from_data_is_top_eigenvalue():
    g = Gaussian(shape=(16,), lam_min=0.1, lam_max=4.0)
    x = torch.stack([g.sample_data(torch.Generator().manual_seed(k)) for k in range(4000)])
    assert sigma_c_from_data(x) == pytest.approx(2.0, rel=0.08)
    with pytest.raises(ValueError, match="samples"):
        sigma_c_from_data(x[:1])


@pytest.mark.parametrize("space", ["ve", "flow"])
def test_online_detector_finds_gaussian_top_eigenvalue(space):
    """Gaussian regime: the JVP power iteration recovers sqrt(Lambda_max) in both parametrisations (a top
    eigenvalue 2.25 above a continuum in [0.05, 0.5]; a continuum right under the top converges more slowly)."""
    g = Gaussian(shape=(32,), lam_min=0.05, lam_max=0.5)
    g.lam[7] = 2.25
    ve = torch.logspace(math.log10(80.0), -1, 8, dtype=torch.float64)
    sigmas = torch.cat([torch.ones(1, dtype=torch.float64), ve / (1 + ve)] if space == "flow" else [ve])
    sigmas = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])
    x, _ = g.draw(range(4), space, float(sigmas[0]))
    sc = estimate_sigma_c(g.model(space), x, sigmas, space, probes=5)
    assert sc.shape == (4,) and torch.allclose(sc, torch.full_like(sc, 1.5), rtol=0.1)


def test_speciation_mixture_known_level_and_detector():
    p = speciation_mixture(2.0)
    assert p.speciation_level() == pytest.approx(2.0, rel=0.05)
    x, _ = p.draw(range(16), "ve", 80.0)
    sigmas = torch.cat([torch.logspace(math.log10(80), -2, 20, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    sc = float(estimate_sigma_c(p.model("ve"), x, sigmas, "ve", 4).median())
    assert abs(sc / p.speciation_level() - 1) < 0.25


def test_probe_is_per_sample():
    p = speciation_mixture(1.0)
    x, _ = p.draw(range(3), "ve", 80.0)
    sigmas = torch.tensor([80.0, 20.0, 8.0, 4.0, 2.0, 0.0], dtype=torch.float64)
    both = estimate_sigma_c(p.model("ve"), x, sigmas)
    alone = estimate_sigma_c(p.model("ve"), x[1:2], sigmas)
    torch.testing.assert_close(both[1:2], alone)
    with pytest.raises(ValueError, match="probes"):
        JVPProbe("ve", probes=0)


def test_scheduled_cfg_skips_uncond_outside_pulse_and_matches_constant():
    p = speciation_mixture(1.0, leak=0.3)
    seeds = range(64)
    x_const, labels, run_c, _, unc_c = guided_sample(p, Interval(3.0, 3.0), seeds, steps=12)
    assert unc_c == 12 and run_c.probe_calls == 0
    x_box, _, _, _, unc_box = guided_sample(p, Interval(3.0, 3.0, 0.0, math.inf), seeds, steps=12)
    torch.testing.assert_close(x_box, x_const)
    x_pulse, _, run_p, cond_calls, unc_p = guided_sample(p, Pulse("cosine", 3.0, 1.0, 0.7), seeds, steps=12)
    assert cond_calls == 12 and int(run_p.probe.taken.max()) <= 1 + 4 and unc_p < 12 + run_p.probe_calls
    assert abs(float(run_p.sigma_c.median()) / p.speciation_level() - 1) < 0.25
    acc1 = metrics(p, guided_sample(p, Interval(1.0, 1.0), seeds, steps=12)[0], labels)[0]
    assert metrics(p, x_pulse, labels)[0] > acc1 + 0.05 and metrics(p, x_const, labels)[0] > acc1 + 0.05


def test_wrapper_keeps_dtype_and_never_nan():
    p = speciation_mixture(1.0, leak=0.3)
    x, labels = p.draw(range(4), "flow", 1.0)
    w = ScheduledCFG(p.model("flow", labels), p.model("flow"), Pulse("gaussian", 4.0), "flow")
    for s in (1.0, 0.9, 0.5, 0.1):
        out = w(x.float(), torch.full([4], s))
        assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())


def test_curve_is_the_weight_over_the_schedule_for_the_plot():
    to_sigma = lambda q: 80.0 * (0.002 / 80.0) ** q  # noqa: E731  (a VE model: sigma 80 at 0%, 0.002 at 100%)
    percents, w = curve(Pulse("cosine", peak=6.0, base=1.0, width=1.0, center=1.0), to_sigma, points=101)
    assert 0 < percents[0] < percents[-1] < 1 and len(w) == 101
    top = max(range(101), key=w.__getitem__)
    assert w[top] > 5.9 and abs(to_sigma(percents[top]) - 1.0) < 0.1
    assert w[0] == w[-1] == 1.0
    assert curve(Pulse(center=None), to_sigma) is None
    _, box = curve(Interval(4.0, 1.0, 0.5, 10.0), to_sigma, points=11)
    assert set(box) == {1.0, 4.0} and box[0] == box[-1] == 1.0
    _, scaled = curve(Interval(4.0, 1.0, 0.5, 10.0), to_sigma, peak=9.0, points=11)
    assert max(scaled) == 9.0
