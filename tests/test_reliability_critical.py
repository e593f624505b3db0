"""sigma_c from too few levels: said, with the reason, never the lowest level passed off as sigma_c (issue 11, 12)."""
import math

import pytest
import torch

from samplerlab.lab.problems import Gaussian
from samplerlab.samplers import critical
from samplerlab.samplers.critical import estimate_sigma_c
from samplerlab.schedulers import REGISTRY as SCHEDULERS

F64 = torch.float64


def gaussian():
    g = Gaussian(shape=(32,), lam_min=0.05, lam_max=0.5)
    g.lam[7] = 2.25  # sigma_c = 1.5
    return g


def test_two_levels_cannot_measure_and_say_why():
    """Karras at 2 steps ([sigma_max, sigma_min, 0]) probes sigma_min only, below sigma_c: the probe gives a bound."""
    g = gaussian()
    x, _ = g.draw(range(3), "ve", 80.0)
    sigmas = torch.tensor([80.0, 0.1, 0.0], dtype=F64)
    with pytest.raises(ValueError, match=r"^sigmas: sigma_c cannot be measured.*VE sigma 0\.1\b.*sigma_c >= 0\.1"):
        estimate_sigma_c(g.model("ve"), x, sigmas)
    probe = critical.probe_sigma_c(g.model("ve"), x, sigmas)
    assert probe.measured.tolist() == [False] * 3


def test_measured_where_a_probe_lies_above_sigma_c():
    g = gaussian()
    x, _ = g.draw(range(3), "ve", 80.0)
    sigmas = torch.cat([torch.logspace(math.log10(80.0), -1, 8, dtype=F64), torch.zeros(1, dtype=F64)])
    probe = critical.probe_sigma_c(g.model("ve"), x, sigmas, probes=5)
    assert bool(probe.measured.all())
    torch.testing.assert_close(estimate_sigma_c(g.model("ve"), x, sigmas, probes=5), probe.sigma_c)
    assert torch.allclose(probe.sigma_c, torch.full((3,), 1.5, dtype=F64), rtol=0.1)


def test_high_level_probes_that_overestimate_are_not_kept():
    """A denoiser whose top-mode variance is inflated far above sigma_c (Lambda(sigma) = 1 + sigma / 4, an
    off-training extrapolation; sigma_c = 1 where it was trained): the first levels of 20 Karras steps from 80 give
    sigma_c ~ 4, so keeping the largest estimate over them is wrong; the probes walk down to a self-consistent one."""
    lam = torch.full((16,), 0.01, dtype=F64)

    def model(x, sigma):
        s2 = sigma.to(F64)[:, None] ** 2
        top = lam.clone().expand(len(x), -1).clone()
        top[:, 0] = 1 + s2[:, 0].sqrt() / 4
        return (top / (top + s2) * x.to(F64)).to(x.dtype)

    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(0), dtype=F64) * 80.0
    sigmas = SCHEDULERS["karras"].fn(20, 0.002, 80.0).to(F64)
    sc = estimate_sigma_c(model, x, sigmas)
    assert torch.allclose(sc, torch.ones(4, dtype=F64), rtol=0.25), sc
