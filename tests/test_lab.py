"""The lab's ground truth: exact denoisers, exact and reference solutions, the runner's bookkeeping."""
import math

import pytest
import torch

from samplerlab.lab import problems
from samplerlab.lab.cli import main
from samplerlab.lab.runner import CountingModel, order_slope, registry_contenders, run_grid
from samplerlab.samplers.space import FLOW, VE

F64 = torch.float64


@pytest.mark.parametrize("name", sorted(set(problems.PROBLEMS) - set(problems.TRAINED)))
def test_denoiser_is_posterior_mean(name):
    """D = E[x0 | x] makes the residual x0 - D(x) orthogonal to every function of x: checked on joint
    draws (x0, x) against x itself and D(x), in both parametrisations."""
    p = problems.make(name) if name != "field" else problems.GaussianField(shape=(3, 8, 8))
    seeds = range(2000)
    x0 = torch.stack([p.sample_data(torch.Generator().manual_seed(s), (s % p.classes) if p.classes else None) for s in seeds])
    labels = torch.tensor([s % p.classes for s in seeds]) if p.classes else None
    n = torch.randn(x0.shape, generator=torch.Generator().manual_seed(99), dtype=F64)
    for space, s in ((VE, 0.7), (FLOW, 0.4)):
        a = torch.full((len(x0),), space.alpha(s), dtype=F64)
        sig = torch.full((len(x0),), space.sigma(s), dtype=F64)
        x = a.view(-1, *[1] * (x0.ndim - 1)) * x0 + s * n
        d = p.denoise(x, a, sig, labels)
        resid = (x0 - d).flatten(1)
        for feature in (x.flatten(1), d.flatten(1)):
            corr = (resid * (feature - feature.mean(0))).mean(0) / (resid.std(0) * feature.std(0) + 1e-12)
            assert corr.abs().mean() < 4 / math.sqrt(len(x0)), f"{name} ({space.name}): residual correlates with x"


@pytest.mark.parametrize("p", [problems.Gaussian(), problems.GaussianField(shape=(3, 8, 8))], ids=["gaussian", "field"])
@pytest.mark.parametrize("space,s_T", [(VE, 80.0), (FLOW, 1.0)])
def test_closed_form_solution_matches_reference_solve(p, space, s_T):
    x, _ = p.draw([0, 1], space, s_T)
    exact = p.exact(x, s_T, 0.0, space)
    ref = problems.reference_solve(p, x, s_T, 0.0, space, steps=1500)
    assert (exact - ref).abs().max() < 1e-6


def test_mixture_reference_converged():
    p = problems.make("mixture_cond")
    x, labels = p.draw(range(3), VE, 80.0)
    a = problems.reference_solve(p, x, 80.0, 0.0, VE, labels, steps=2000)
    b = problems.reference_solve(p, x, 80.0, 0.0, VE, labels, steps=4000)
    assert (a - b).abs().max() < 1e-7


class Step(problems.Problem):
    """D = 0 above sigma = 1 and D = c below: y = D + (y_0 - D) e^-(lambda - lambda_0) on each side (VE, dy/dlambda = D - y)."""
    shape = (3,)
    sigma_max = 10.0

    def __init__(self, breaks):
        self.breaks, self.c = breaks, torch.tensor([1.0, -2.0, 0.5], dtype=F64)

    def denoise(self, x, alpha, sigma, labels=None):
        return torch.where((sigma < 1.0)[:, None], self.c, torch.zeros_like(x))


def test_reference_solve_keeps_its_order_across_breaks():
    x = torch.tensor([[3.0, 1.0, -1.0]], dtype=F64)
    at_1 = x * 0.1
    exact = Step(()).c + (at_1 - Step(()).c) * 0.5
    errors = [float((problems.reference_solve(Step(b), x, 10.0, 0.5, VE, steps=40) - exact).abs().max()) for b in ((1.0,), ())]
    assert errors[0] < 1e-6 < 1e-3 < errors[1], errors


def test_draw_is_per_seed():
    p = problems.make("mixture_cond")
    xa, la = p.draw([5, 6, 7])
    xb, lb = p.draw([6])
    assert torch.equal(xa[1:2], xb) and la[1] == lb[0]


def test_runner_counts_calls_and_fits_slopes():
    recs = run_grid(problems.Gaussian(shape=(8,)), registry_contenders(["euler", "heun"]), ("exponential",), (8, 16, 32), range(2))
    by = {(r.sampler, r.budget): r for r in recs}
    assert by[("euler", 8)].nfe == 8 and by[("heun", 8)].nfe == 7  # Heun: 2 calls per step, the last step 1
    assert order_slope([r for r in recs if r.sampler == "euler"]) < -0.7
    model = CountingModel(lambda x, s: x)
    model(torch.zeros(3, 2), torch.ones(3))
    assert model.calls == 1


def test_demo_writes_report(tmp_path):
    main(["demo", "--out", str(tmp_path), "--problems", "gaussian", "field", "--samplers", "euler", "dpmpp_2m",
          "--nfe", "4", "8", "--seeds", "2", "--quiet"])
    for f in ("report.md", "report.json", "error_vs_nfe.png", "field_grid.png"):
        assert (tmp_path / f).stat().st_size > 100


@pytest.mark.parametrize("name", ["mixture_cond", "memorise16"])
def test_a_mixture_batch_at_several_levels_denoises_each_sample_as_it_would_alone(name):
    p = problems.make(name)
    g = torch.Generator().manual_seed(3)
    x = 2 * torch.randn(5, *p.shape, generator=g, dtype=F64)
    alpha, sigma = torch.rand(5, generator=g, dtype=F64), torch.rand(5, generator=g, dtype=F64) + 1e-3
    labels = torch.arange(5) % p.n_classes
    batch = p.denoise(x, alpha, sigma, labels)
    alone = torch.cat([p.denoise(x[i:i + 1], alpha[i:i + 1], sigma[i:i + 1], labels[i:i + 1]) for i in range(5)])
    assert torch.allclose(batch, alone, rtol=1e-10, atol=1e-12)
    w, m = p.posterior(x, alpha, sigma, labels)
    assert torch.allclose(torch.einsum("bk,bkd->bd", w, m), batch, rtol=1e-10, atol=1e-12)
