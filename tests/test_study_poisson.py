"""The exact finite-D (PFGM++) point-set model, the sampler's `trained = at_D` route, and `study poisson --quick`."""
import json
import math
import sys

import pytest
import torch

from samplerlab.lab.els import Empirical
from samplerlab.lab.problems import PointSet
from samplerlab.samplers import REGISTRY
from samplerlab.samplers.poisson import kappas
from samplerlab.schedulers import REGISTRY as SCHEDULERS

F64 = torch.float64
PF = REGISTRY["poisson_flow"].fn
POINTS = torch.randn(30, 1, 3, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
X = 2 * torch.randn(6, 1, 3, 3, generator=torch.Generator().manual_seed(1), dtype=F64)


def levels(s, n=6):
    return torch.ones(n, dtype=F64), torch.full((n,), s, dtype=F64)


@pytest.mark.parametrize("sigma", [0.05, 0.5, 3.0, 40.0])
def test_infinite_D_is_the_empirical_denoiser_and_large_D_converges_to_it(sigma):
    a, s = levels(sigma)
    ref = Empirical(POINTS).denoise(X, a, s)
    torch.testing.assert_close(PointSet(POINTS).denoise(X, a, s), ref, rtol=0, atol=1e-12)
    errors = [float((PointSet(POINTS, D=D).denoise(X, a, s) - ref).abs().max()) for D in (1e2, 1e4, 1e6)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-4 * max(1.0, errors[0])


def test_weights_are_the_pfgmpp_kernel():
    """w_i ∝ pi_i (|x - y_i|^2 + D sigma^2)^(-(N + D) / 2), computed here term by term in Python floats."""
    weights = torch.arange(1, 31, dtype=F64)
    p = PointSet(POINTS, D=3.0, weights=weights)
    a, s = levels(0.7)
    got = p.log_weights(X, a, s).exp()
    for b in range(len(X)):
        raw = [float(weights[i]) * (float((X[b] - POINTS[i]).pow(2).sum()) + 3.0 * 0.49) ** (-(9 + 3) / 2)
               for i in range(len(POINTS))]
        torch.testing.assert_close(got[b], torch.tensor(raw, dtype=F64) / sum(raw), rtol=1e-10, atol=1e-14)


def test_flow_view_and_alpha_zero():
    p = PointSet(POINTS, D=16.0)
    a, s = levels(0.8)
    alpha = torch.full((6,), 0.3, dtype=F64)
    torch.testing.assert_close(p.denoise(0.3 * X, alpha, 0.3 * s), p.denoise(X, a, s), rtol=0, atol=1e-12)
    mean = POINTS.mean(0).expand_as(X)
    torch.testing.assert_close(p.denoise(X, torch.zeros(6, dtype=F64), torch.ones(6, dtype=F64)), mean)


@pytest.mark.parametrize("kwargs,match", [({"D": 0.5}, "D"), ({"weights": torch.zeros(30)}, "weights"),
                                          ({"weights": torch.ones(3)}, "weights")])
def test_bad_point_set_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PointSet(POINTS, **kwargs)
    with pytest.raises(ValueError, match="sigma"):
        PointSet(POINTS).denoise(X, *levels(0.0))


def test_heaviest_D1_start_stays_finite():
    """D = 1: the largest kappa of 50 000 seeds (> 1e4: a start ~1e6 out) flows to a finite sample, a convex
    combination of the points (the last step returns the posterior mean; log-space weights, no overflow)."""
    k = kappas(0, 50_000, 1.0)
    seed = int(k.argmax())
    assert float(k[seed]) > 1e4
    p = PointSet(POINTS, D=1.0)
    x = POINTS[:1] + float(k[seed]) * 80.0 * X[:1]
    sigmas = SCHEDULERS["karras"].fn(18, 0.002, 80.0)
    out = PF(p.model(), x, sigmas, disable=True, D=1.0, solver="heun", noise="poisson", trained="at_D",
             extra_args={"seed": seed})
    assert torch.isfinite(out).all() and float(out.abs().max()) <= float(POINTS.abs().max())


def test_at_D_queries_sigma_itself_and_diffusion_queries_kappa_sigma():
    seen = {}
    p = PointSet(POINTS, D=4.0)

    def spy(route):
        def m(x, sigma, **kw):
            seen.setdefault(route, []).append(sigma.clone())
            return p.model()(x, sigma, **kw)
        return m

    sigmas = SCHEDULERS["karras"].fn(4, 0.002, 80.0)
    x = POINTS[:3] + 80.0 * X[:3]
    for route in ("at_D", "diffusion"):
        PF(spy(route), x, sigmas, disable=True, D=4.0, solver="euler", noise="poisson", trained=route,
           extra_args={"seed": 3})
    kappa = kappas(3, 3, 4.0)
    for i, (nominal, scaled) in enumerate(zip(seen["at_D"], seen["diffusion"])):
        torch.testing.assert_close(nominal.to(F64), torch.full((3,), float(sigmas[i]), dtype=F64))
        torch.testing.assert_close(scaled.to(F64), kappa * float(sigmas[i]))
    with pytest.raises(ValueError, match="trained"):
        PF(p.model(), x, sigmas, disable=True, D=4.0, trained="bogus")


def test_quick_study(tmp_path, monkeypatch):
    from samplerlab.lab.cli import main

    monkeypatch.setattr(sys, "argv", ["samplerlab", "study", "poisson", "--quick", "--out", str(tmp_path)])
    main(["study", "poisson", "--quick", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "poisson.json").read_text())
    assert record["command"].startswith("python -m samplerlab study poisson --quick")
    assert (tmp_path / "poisson.png").stat().st_size > 1000
    text = (tmp_path / "poisson.md").read_text()
    assert "D \\ D'" in text and "Made by" in text
    (res,) = record["results"]
    rows = res["table"] + res["steps"] + res["noise"]
    assert all(r["finite"] for r in rows)
    for r in rows:
        for key in ("sw1", "mmd", "modes"):
            assert math.isfinite(r[key]) and 0 <= r[key + "_ci"] < math.inf
    ks = {(r["D_model"], r["D_sampler"]): r["ks"] for r in res["marginal"]}
    # PFGM++ Theorem 1, the known answer: the sampler at the model's own D carries its marginal, the other does not
    assert ks[(1.0, 1.0)] < ks[(1.0, "inf")] and ks[("inf", "inf")] < ks[("inf", 1.0)]
    assert max(ks[(1.0, 1.0)], ks[("inf", "inf")]) < 0.35 < min(ks[(1.0, "inf")], ks[("inf", 1.0)])
