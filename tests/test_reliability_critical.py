"""sigma_c from too few levels: said, with the reason, never the lowest level passed off as sigma_c (issue 11, 12)."""
import math

import pytest
import torch

from samplerlab.lab.problems import Gaussian
from samplerlab.samplers import critical
from samplerlab.samplers.critical import estimate_sigma_c

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
