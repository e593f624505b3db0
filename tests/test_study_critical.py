"""`study critical` (lab/studies/critical.py): the measures on exact models, the sigma_c rules, the --quick run."""
import argparse
import json
import math

import pytest
import torch

from samplerlab.lab import digits
from samplerlab.lab.studies import critical as C


def test_grid_and_schedule():
    lv = C.grid(5, 0.1, 10.0)
    assert lv[0] == pytest.approx(10.0) and lv[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(lv, lv[1:]))
    s, where = C.schedule(lv, substeps=3, top=80.0)
    assert s[0] == 80.0 and s[-1] == 0.0 and len(s) == 1 + 4 * 3 + 1 + 1
    assert [s[w] for w in where] == lv


def test_probes_lie_in_their_band():
    probes = C.band_probes(2, seed=3)
    assert probes.shape == (C.BANDS, 2, 1, 16, 16)
    assert torch.allclose(probes.flatten(2).norm(dim=-1), torch.ones(C.BANDS, 2, dtype=torch.float64))
    f = torch.sqrt(torch.fft.fftfreq(16)[:, None] ** 2 + torch.fft.fftfreq(16)[None, :] ** 2).double()
    edges = C.band_edges(C.BANDS)
    for b in range(1, C.BANDS):
        power = torch.fft.fft2(probes[b, :, 0]).abs() ** 2
        inside = (f > edges[b - 1]) & (f <= edges[b])
        assert float(power[:, ~inside].sum()) < 1e-20 * float(power.sum()) + 1e-24
    assert torch.allclose(probes[0, 0, 0], torch.full((16, 16), 1 / 16, dtype=torch.float64))


@pytest.fixture(scope="module")
def gaussian():
    train, _ = digits.load("train")
    return C.Gaussian(train[:300])


def gaussian_model(g):
    def model(x, sigma):
        s = float(sigma.reshape(-1)[0])
        flat = x.flatten(1).to(torch.float64) - g.mu
        return (g.mu + flat @ g.gain(s).T).reshape(x.shape).to(x.dtype)
    return model


@pytest.mark.parametrize("sigma", [0.3, 2.0])
def test_jvp_measures_are_exact_on_the_gaussian_model(gaussian, sigma):
    """A linear denoiser: the finite-difference gains and correlation length equal the closed forms."""
    model = gaussian_model(gaussian)
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sigma
    d0 = model(x, torch.full((3,), sigma))
    probes = C.band_probes(2, seed=1)
    g = C.mode_response(model, x, d0, sigma, probes)
    assert torch.allclose(g, gaussian.mode_response(sigma, probes).expand(3, -1), atol=1e-9)
    xi = C.correlation_length(model, x, d0, sigma)
    assert torch.allclose(xi, torch.full((3,), gaussian.correlation_length(sigma), dtype=torch.float64), atol=1e-9)


def test_gaussian_gain_crosses_half_at_the_mode_variance():
    """One mode of variance L: g = L / (L + sigma^2) crosses 1/2 and changes fastest at sigma^2 = L."""
    lv = C.grid(41, 0.05, 40.0)
    curve = [4.0 / (4.0 + s * s) for s in lv]
    assert C.crossing(lv, curve) == pytest.approx(2.0, rel=0.02)
    assert C.steepest(lv, curve) == pytest.approx(2.0, rel=0.03)
    assert C.crossing(lv, [0.9] * len(lv)) is None and C.crossing(lv, [0.1] * len(lv)) is None


def test_peak_interior_or_none():
    lv = C.grid(21, 0.1, 10.0)
    bump = [math.exp(-(math.log(s) - math.log(1.3)) ** 2) for s in lv]
    assert C.peak(lv, bump) == pytest.approx(1.3, rel=0.02)
    assert C.peak(lv, list(range(len(lv)))) is None


def test_bootstrap_interval_contains_point():
    lv = C.grid(8, 0.1, 10.0)
    g = torch.Generator().manual_seed(0)
    # keep probability 1 / (1 + (sigma / 1.5)^4): crosses 1/2 at 1.5
    p = torch.tensor([1 / (1 + (s / 1.5) ** 4) for s in lv])
    kept = torch.rand(400, len(lv), generator=g) < p
    out, _ = C.bootstrap(lv, {"renoise": kept}, None, boot=100)
    r = out["renoise"]
    assert r["ci"][0] <= r["sigma_c"] <= r["ci"][1]
    assert 1.2 < r["sigma_c"] < 1.9


def test_quick_study(tmp_path):
    C.cmd(argparse.Namespace(quick=True, seed0=10_000, out=str(tmp_path)))
    r = json.loads((tmp_path / "critical.json").read_text())
    net = r["network"]
    assert len(net["mode_gain"]) == len(r["levels"]) and len(net["mode_gain"][0]) == C.BANDS
    for name, curve in net["commitment"].items():
        for frac, lo, hi in curve:
            assert 0 <= lo <= frac <= hi <= 1
    # the x0 prediction at the lowest level is the final sample's class; at the top the class is not yet decided
    assert net["commitment"]["x0"][-1][0] >= 0.9
    assert net["commitment"]["renoise"][0][0] < 0.6
    # the gain is small at the top and largest at the bottom for the coarse bands
    assert net["mode_gain"][0][1][0] < 0.1 < net["mode_gain"][-1][1][0]
    for v in net["sigma_c"].values():
        if v["sigma_c"] is not None and v["ci"] is not None:
            assert v["ci"][0] <= v["sigma_c"] * (1 + 1e-9) and v["sigma_c"] <= v["ci"][1] * (1 + 1e-9)
    assert r["els"]["seconds_per_image_call"] > 0
    assert (tmp_path / "critical.png").stat().st_size < 300_000
    assert "Made by `python -m samplerlab" in (tmp_path / "critical.md").read_text()
