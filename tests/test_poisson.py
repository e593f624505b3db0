"""Poisson flow (PFGM++) and noise-level tracking: limits, prior, host routes, estimators, bad input."""
import math

import pytest
import torch
from scipy import stats

from samplerlab.lab import problems
from samplerlab.lab.runner import rms_error
from samplerlab.samplers import REGISTRY
from samplerlab.samplers.poisson import SolverChoices, kappas
from samplerlab.samplers.space import FLOW, VE
from samplerlab.samplers.tracking import Tracker, level_estimate, with_noise_tracking
from samplerlab.schedulers import REGISTRY as SCHEDULERS

PF = REGISTRY["poisson_flow"].fn
FIELD = problems.GaussianField()
GAUSS = problems.Gaussian(shape=(4, 8, 8))


def karras(n, space=VE):
    lo, hi = (0.002, 80.0) if space is VE else (FLOW.from_ve(0.002), 1.0)
    return SCHEDULERS["karras"].fn(n, lo, hi)


def bcast(v, x):
    return v.reshape(-1, *[1] * (x.ndim - 1))


class Host:
    """A model as ComfyUI's KSAMPLER passes it: a denoiser that also carries the clean latent it noised."""

    def __init__(self, model, latent_image):
        self.model, self.latent_image = model, latent_image

    def __call__(self, x, sigma, **kw):
        return self.model(x, sigma, **kw)


@pytest.mark.parametrize("space", [VE, FLOW])
@pytest.mark.parametrize("solver", list(SolverChoices()))
def test_infinite_D_is_the_inner_solver(solver, space):
    x = GAUSS.draw(range(3), space, karras(6, space)[0].item())[0]
    a = REGISTRY[solver].fn(GAUSS.model(space), x, karras(6, space), disable=True, space=space.name)
    b = PF(GAUSS.model(space), x, karras(6, space), disable=True, space=space.name, D=math.inf, solver=solver,
           extra_args={"seed": 4})
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_converges_to_diffusion_as_D_grows():
    x = FIELD.draw(range(8), VE, 80.0)[0]
    ref = REGISTRY["heun"].fn(FIELD.model(), x, karras(5), disable=True)
    dist = [float(rms_error(PF(FIELD.model(), x, karras(5), disable=True, D=D, solver="heun",
                               extra_args={"seed": 0}), ref).mean()) for D in (1e2, 1e4, 1e6)]
    assert dist[0] > dist[1] > dist[2] > 0
    for a, b in zip(dist, dist[1:]):
        assert 5 < a / b < 20, f"expected ~ D^-1/2 (x10 per 100x D), got {dist}"


def test_kappa_is_the_chi2_scale_per_seed():
    k = kappas(10, 5, 7.0)
    assert torch.equal(k, kappas(10, 5, 7.0))
    assert all(float(kappas(10 + i, 1, 7.0)[0]) == float(k[i]) for i in range(5))
    chi2 = 7.0 / kappas(0, 1500, 7.0) ** 2
    assert stats.kstest(chi2.numpy(), stats.chi2(7).cdf).pvalue > 1e-3
    assert torch.equal(kappas(3, 4, math.inf), torch.ones(4, dtype=torch.float64))


def test_model_queried_at_kappa_sigma_per_sample():
    x, seen = GAUSS.draw(range(3), VE, 80.0)[0], []

    def spy(x, sigma, **kw):
        seen.append(sigma.clone())
        return GAUSS.model()(x, sigma, **kw)

    sigmas = karras(4)
    PF(spy, x, sigmas, disable=True, D=16.0, solver="euler", noise="poisson", extra_args={"seed": 2})
    kappa = kappas(2, 3, 16.0)
    for s, nominal in zip(seen, sigmas[:-1]):
        assert s.shape == (3,)
        torch.testing.assert_close(s.double(), kappa * float(nominal), rtol=1e-6, atol=0)


def test_trajectory_is_diffusion_on_the_scaled_schedule():
    """(derived) With a D = inf model, sample k follows the diffusion ODE from its start at level kappa_k sigma_0."""
    kappa, seeds = kappas(0, 4, 4.0), range(4)
    x0, n = GAUSS.draw(seeds, VE, 0.0)[0], GAUSS.draw(seeds, VE, 1.0)[0] - GAUSS.draw(seeds, VE, 0.0)[0]
    x = x0 + bcast(kappa, n) * 20.0 * n
    sigmas = SCHEDULERS["exponential"].fn(200, 0.05, 20.0)[:-1]
    out = PF(GAUSS.model(), x, sigmas, disable=True, D=4.0, solver="heun", noise="poisson", extra_args={"seed": 0})
    exact = torch.cat([GAUSS.exact(x[k:k + 1], 20.0 * float(kappa[k]), 0.05 * float(kappa[k])) for k in range(4)])
    assert rms_error(out, exact).max() < 3e-4
    nominal = GAUSS.exact(x, 20.0, 0.05)
    assert rms_error(out, nominal).min() > 1e-2, "the nominal-level reference must be distinguishable"


@pytest.mark.parametrize("space", [VE, FLOW])
@pytest.mark.parametrize("s0", ["top", 0.6])
def test_ksampler_route_equals_noise_node_route(space, s0):
    """Gaussian host noise rescaled by kappa (KSampler) == the prior's noise kappa*n given to the host (noise node),
    text-to-image (empty latent, top level) and img2img (an image, a lower start level)."""
    seeds = range(3)
    latent = torch.zeros(3, 4, 8, 8, dtype=torch.float64) if s0 == "top" else GAUSS.draw(seeds, VE, 0.0)[0]
    sigmas = karras(6, space)
    if s0 != "top":
        sigmas = torch.cat([sigmas[sigmas < s0]])
        sigmas = torch.cat([torch.tensor([s0], dtype=sigmas.dtype), sigmas])
    t0 = float(sigmas[0])
    n = GAUSS.draw(seeds, VE, 1.0)[0] - GAUSS.draw(seeds, VE, 0.0)[0]
    a0 = space.alpha(t0)
    kappa = bcast(kappas(9, 3, 8.0), n)
    host = Host(GAUSS.model(space), latent)
    via_ksampler = PF(host, a0 * latent + t0 * n, sigmas, disable=True, space=space.name, D=8.0, extra_args={"seed": 9})
    via_noise = PF(host, a0 * latent + t0 * kappa * n, sigmas, disable=True, space=space.name, D=8.0,
                   noise="poisson", extra_args={"seed": 9})
    torch.testing.assert_close(via_ksampler, via_noise, rtol=1e-6, atol=1e-6)


def test_ve_and_flow_agree_after_conversion():
    t = karras(8, FLOW).double()[1:-1]
    sigmas_flow = torch.cat([t, t.new_zeros(1)])
    sigmas_ve = torch.tensor([FLOW.to_ve(float(v)) for v in sigmas_flow], dtype=torch.float64)
    x_flow = GAUSS.draw([0, 1], FLOW, float(t[0]))[0]
    kw = dict(disable=True, D=3.0, solver="heun", extra_args={"seed": 5}, track="stein")
    a = PF(GAUSS.model(FLOW), x_flow, sigmas_flow, space="flow", **kw)
    b = PF(GAUSS.model(VE), x_flow / FLOW.alpha(float(t[0])), sigmas_ve, space="ve", **kw)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("bad, match", [({"D": 0.0}, "D"), ({"D": -2.0}, "D"), ({"D": float("nan")}, "D"),
                                        ({"D": 0.5}, "D"), ({"solver": "nope"}, "solver"),
                                        ({"solver": "poisson_flow"}, "solver"), ({"track": "x"}, "track")])
def test_bad_input_is_named(bad, match):
    with pytest.raises(ValueError, match=match):
        PF(GAUSS.model(), GAUSS.draw([0], VE, 80.0)[0], karras(3), disable=True, **bad)
    if "D" in bad:
        with pytest.raises(ValueError, match="D"):
            kappas(0, 1, bad["D"])


def test_solver_choices_follow_the_registry():
    assert set(SolverChoices()) == {n for n, s in REGISTRY.items() if not s.stochastic}
    assert "poisson_flow" not in SolverChoices() and "euler" in SolverChoices()


# noise-level tracking


def field_state(sigma, count=8):
    return FIELD.draw(range(count), VE, sigma)[0]


@pytest.mark.parametrize("sigma", [0.3, 1.0, 5.0])
def test_stein_estimate_is_unbiased_and_residual_is_low(sigma):
    """At the true level, <x - D, x - c>/N ~ sigma^2 (Stein); ||x - D||^2/N misses sigma^2 div D / N."""
    x = field_state(sigma)
    d = FIELD.model()(x, torch.full((8,), sigma, dtype=torch.float64))
    stein = level_estimate(x, d, "stein")
    residual = level_estimate(x, d, "residual")
    assert abs(float(stein.mean()) / sigma ** 2 - 1) < 0.05
    div = float((FIELD.p / (FIELD.p + sigma ** 2)).mean())
    assert abs(float(residual.mean()) / sigma ** 2 - (1 - div)) < 0.05


def test_tracker_finds_the_actual_level():
    """A sample at sigma* = 1.3 sigma asked at sigma: the refined estimate lands on sigma*."""
    x = field_state(1.3)
    tracker = Tracker(FIELD.model(), VE, track="stein", track_window=1.0, track_iterations=4)
    tracker(x, torch.full((8,), 1.0, dtype=torch.float64))
    assert (tracker.rho - 1.3).abs().max() < 0.05
    assert tracker.history[0].eq(1).all() and len(tracker.history) == 5


def test_tracker_window_and_first_call_at_nominal():
    x = field_state(3.0)
    seen = []

    def spy(x, sigma):
        seen.append(sigma.clone())
        return FIELD.model()(x, sigma)

    tracker = Tracker(spy, VE, track="stein", track_window=0.1)
    for _ in range(3):
        tracker(x, torch.full((8,), 1.0, dtype=torch.float64))
    assert torch.equal(seen[0], torch.ones(8, dtype=torch.float64))
    assert float(seen[-1].max()) == pytest.approx(math.exp(0.1))


def test_epsilon_scaling_formula():
    x = field_state(2.0)
    sigma = torch.full((8,), 2.0, dtype=torch.float64)
    d = FIELD.model()(x, sigma)
    out = Tracker(FIELD.model(), VE, track="epsilon", eps_scale=1.01)(x, sigma)
    torch.testing.assert_close(out, x - (x - d) / 1.01)


def test_wrapper_takes_any_sampler_and_keeps_the_contract():
    x, sigmas = GAUSS.draw(range(4), VE, 80.0)[0], karras(6)
    euler = REGISTRY["euler"].fn
    assert torch.equal(with_noise_tracking(euler, track="off")(GAUSS.model(), x, sigmas, disable=True), euler(GAUSS.model(), x, sigmas, disable=True))
    tracked = with_noise_tracking(euler, track="stein")
    out = tracked(GAUSS.model(), x, sigmas, disable=True)
    alone = tracked(GAUSS.model(), x[:1], sigmas, disable=True)
    torch.testing.assert_close(out[:1], alone, rtol=1e-6, atol=1e-7)
    plain = euler(GAUSS.model(), x, sigmas, disable=True)
    exact = GAUSS.exact(x, 80.0)
    assert torch.isfinite(out).all() and not torch.equal(out, plain)
    assert float(rms_error(out, exact).mean()) < 1.2 * float(rms_error(plain, exact).mean())
    flow = with_noise_tracking(euler, space="flow", track="stein")
    xf = GAUSS.draw(range(2), FLOW, 1.0)[0]
    assert torch.isfinite(flow(GAUSS.model(FLOW), xf, karras(6, FLOW), disable=True, space="flow")).all()
    with pytest.raises(ValueError, match="track_window"):
        with_noise_tracking(euler, track="stein", track_window=5.0)


def test_tracker_forwards_host_attributes():
    host = Host(GAUSS.model(), torch.zeros(1))
    assert Tracker(host, VE).latent_image is host.latent_image
