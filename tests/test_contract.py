"""The sampler contract (DESIGN.md), checked for every registered sampler."""
import math

import pytest
import torch

from samplerlab.lab import problems
from samplerlab.lab.runner import CountingModel, rms_error
from samplerlab.samplers import REGISTRY
from samplerlab.samplers.space import FLOW, VE
from samplerlab.schedulers import REGISTRY as SCHEDULERS

NAMES = sorted(REGISTRY)
GAUSS = problems.Gaussian(shape=(2, 4, 4))


def karras(n, space=VE, dtype=torch.float32):
    lo, hi = (0.002, 80.0) if space is VE else (FLOW.from_ve(0.002), 1.0)
    return SCHEDULERS["karras"].fn(n, lo, hi).to(dtype)


def run(name, model, x, sigmas, **kw):
    return REGISTRY[name].fn(model, x, sigmas, disable=True, **kw)


def start(seeds=range(3), space=VE, problem=GAUSS):
    sig_max = 80.0 if space is VE else 1.0
    return problem.draw(list(seeds), space, sig_max)[0].float()


@pytest.mark.parametrize("name", NAMES)
def test_callback_once_per_step_with_x0_prediction(name):
    x, sigmas, model = start(), karras(6), GAUSS.model()
    seen = []
    calls = []

    def spy(x, sigma, **kw):
        d = model(x, sigma, **kw)
        calls.append(d)
        return d

    run(name, spy, x, sigmas, callback=seen.append)
    assert [c["i"] for c in seen] == list(range(len(sigmas) - 1))
    for c in seen:
        assert set(c) >= {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert c["x"].shape == x.shape
        for j in range(len(x)):
            assert any(torch.equal(c["denoised"][j], d[j]) for d in calls), "denoised must be a real x0 prediction"


@pytest.mark.parametrize("name", NAMES)
def test_last_step_reaches_zero_and_is_finite(name):
    x, sigmas = start(), karras(5)
    last = []

    def spy(x, sigma, **kw):
        last.append(float(sigma[0]))
        return GAUSS.model()(x, sigma, **kw)

    out = run(name, spy, x, sigmas)
    assert torch.isfinite(out).all()
    assert min(last) > 0, "the model must never be queried at sigma = 0"
    exact = GAUSS.exact(x.double(), 80.0)
    assert rms_error(out, exact).max() < 1.0


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_result_and_batch_independent(name):
    xs = start(range(4))
    sigmas = karras(6)
    model = GAUSS.model()
    a = run(name, model, xs, sigmas, extra_args={"seed": 7})
    b = run(name, model, xs, sigmas, extra_args={"seed": 7})
    assert torch.equal(a, b)
    alone = run(name, model, xs[:1], sigmas, extra_args={"seed": 7})
    torch.testing.assert_close(a[:1], alone, rtol=1e-5, atol=1e-6)
    head = run(name, model, xs[:2], sigmas, extra_args={"seed": 7})
    torch.testing.assert_close(a[:2], head, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_inputs_not_modified(name):
    x, sigmas = start(), karras(5)
    x0, s0 = x.clone(), sigmas.clone()
    extra = {"seed": 1}
    run(name, GAUSS.model(), x, sigmas, extra_args=extra)
    assert torch.equal(x, x0) and torch.equal(sigmas, s0) and extra == {"seed": 1}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_dtype_kept_without_nan(name, dtype):
    x = start().to(dtype)
    out = run(name, GAUSS.model(), x, karras(8, dtype=dtype))
    assert out.dtype == dtype and out.device == x.device
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_five_d_latents_and_per_sample_sigma(name):
    p = problems.Gaussian(shape=(2, 3, 4, 4))
    x = p.draw([0, 1], VE, 80.0)[0].float()
    shapes = []

    def spy(x, sigma, **kw):
        shapes.append(tuple(sigma.shape))
        return p.model()(x, sigma, **kw)

    out = run(name, spy, x, karras(5))
    assert out.shape == x.shape == (2, 2, 3, 4, 4)
    assert set(shapes) == {(2,)}


@pytest.mark.parametrize("name", [n for n in NAMES if not REGISTRY[n].stochastic])
def test_declared_order_is_measured_slope(name):
    """Slope of log error vs log steps on the Gaussian, float64, stopping at sigma_min > 0 (SCIENCE.md §3)."""
    spec = REGISTRY[name]
    p = problems.Gaussian(shape=(16,), lam_min=0.1, lam_max=2.0)
    x = p.draw(range(2), VE, 10.0)[0]
    errs, nfes = [], []
    for n in (24, 32, 48, 64):
        sigmas = SCHEDULERS["exponential"].fn(n, 0.05, 10.0)[:-1]
        counted = CountingModel(p.model())
        out = spec.fn(counted, x, sigmas, disable=True)
        errs.append(float(rms_error(out, p.exact(x, 10.0, 0.05)).mean()))
        nfes.append(n)
    slope = (math.log(errs[-1]) - math.log(errs[0])) / (math.log(nfes[-1]) - math.log(nfes[0]))
    assert abs(-slope - spec.order) <= 0.15, f"{name}: declared order {spec.order}, measured {-slope:.2f}"


@pytest.mark.parametrize("name", [n for n in NAMES if not REGISTRY[n].stochastic])
def test_ve_and_flow_runs_agree_after_conversion(name):
    """The same problem in VE and flow form on matching schedules gives the same sample (x_VE = x_flow / alpha)."""
    t = karras(8, FLOW, torch.float64)[:-1]
    t = t[t < 1]
    sigmas_flow = torch.cat([t, t.new_zeros(1)])
    sigmas_ve = torch.tensor([FLOW.to_ve(float(v)) for v in sigmas_flow], dtype=torch.float64)
    x_flow = GAUSS.draw([0, 1], FLOW, float(t[0]))[0]
    x_ve = x_flow / FLOW.alpha(float(t[0]))
    a = run(name, GAUSS.model(FLOW), x_flow, sigmas_flow, space="flow", extra_args={"seed": 3})
    b = run(name, GAUSS.model(VE), x_ve, sigmas_ve, space="ve", extra_args={"seed": 3})
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_flow_start_at_one_is_finite(name):
    x = start(space=FLOW)
    out = run(name, GAUSS.model(FLOW), x, karras(6, FLOW), space="flow")
    assert torch.isfinite(out).all()
    assert rms_error(out, GAUSS.exact(x.double(), 1.0, 0.0, FLOW)).max() < 1.0


BAD_SIGMAS = {
    "2-D": torch.ones(2, 3),
    "one level": torch.tensor([1.0]),
    "not finite": torch.tensor([float("nan"), 1.0, 0.0]),
    "ascending": torch.tensor([1.0, 2.0, 0.0]),
    "negative": torch.tensor([1.0, -0.5]),
    "repeated": torch.tensor([2.0, 2.0, 0.0]),
}


@pytest.mark.parametrize("case", sorted(BAD_SIGMAS))
@pytest.mark.parametrize("name", NAMES)
def test_bad_sigmas_are_named(name, case):
    with pytest.raises(ValueError, match="sigmas"):
        run(name, GAUSS.model(), start(), BAD_SIGMAS[case])


@pytest.mark.parametrize("name", NAMES)
def test_flow_levels_above_one_rejected(name):
    with pytest.raises(ValueError, match="sigmas"):
        run(name, GAUSS.model(FLOW), start(), torch.tensor([2.0, 0.5, 0.0]), space="flow")


@pytest.mark.parametrize("name", [n for n in NAMES if REGISTRY[n].params])
def test_out_of_range_params_are_named(name):
    for pname, p in REGISTRY[name].params.items():
        bad = "not-a-choice" if p.choices else (p.max + 1 if p.max is not None else (p.min - 1 if p.min is not None else None))
        if bad is None:
            continue
        with pytest.raises(ValueError, match=pname):
            run(name, GAUSS.model(), start(), karras(4), **{pname: bad})


@pytest.mark.parametrize("space", [VE, FLOW])
@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_gives_an_empty_result(name, space):
    x = start(space=space)[:0]
    seen = []
    out = run(name, GAUSS.model(space), x, karras(5, space), space=space.name, callback=seen.append,
              extra_args={"seed": 1})
    assert out.shape == x.shape and out.dtype == x.dtype
    assert [c["i"] for c in seen] == list(range(5))


BAD_LATENTS = {"NaN": float("nan"), "inf": float("inf")}


@pytest.mark.parametrize("case", sorted(BAD_LATENTS))
@pytest.mark.parametrize("name", NAMES)
def test_non_finite_latent_is_named(name, case):
    x = start()
    x[1, 0, 2] = BAD_LATENTS[case]
    calls = []
    with pytest.raises(ValueError, match="latent"):
        run(name, lambda x, s, **kw: calls.append(1) or GAUSS.model()(x, s), x, karras(4))
    assert not calls, "the latent is checked before any model call"


@pytest.mark.parametrize("name", NAMES)
def test_integer_latent_is_a_clear_error(name):
    with pytest.raises(ValueError, match="floating"):
        run(name, GAUSS.model(), start().round().to(torch.int64), karras(4))


@pytest.mark.parametrize("bad", [lambda d: d[:1], lambda d: d.mean(0, keepdim=True), lambda d: d[..., :1],
                                 lambda d: d.flatten(1)])
@pytest.mark.parametrize("name", NAMES)
def test_model_output_of_another_shape_is_named(name, bad):
    model = GAUSS.model()
    with pytest.raises(ValueError, match=r"shape \(3, 2, 4, 4\)"):
        run(name, lambda x, s, **kw: bad(model(x, s)), start(), karras(4))


@pytest.mark.parametrize("name", [n for n in NAMES if REGISTRY[n].params])
def test_numpy_and_0d_tensor_parameters_are_taken(name):
    import numpy as np
    given = {}
    for pname, p in REGISTRY[name].params.items():
        if isinstance(p.default, bool) or p.choices is not None:
            continue
        given[pname] = np.int64(p.default) if isinstance(p.default, int) else np.float32(p.default)
    a = run(name, GAUSS.model(), start(), karras(4), extra_args={"seed": 2}, **given)
    b = run(name, GAUSS.model(), start(), karras(4), extra_args={"seed": 2},
            **{k: torch.tensor(v.item()) for k, v in given.items()})
    plain = run(name, GAUSS.model(), start(), karras(4), extra_args={"seed": 2},
                **{k: REGISTRY[name].params[k].check(k, v.item()) for k, v in given.items()})
    torch.testing.assert_close(a, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b, plain, rtol=1e-5, atol=1e-6)


def test_unknown_option_and_space_rejected():
    with pytest.raises(ValueError, match="no parameter"):
        run("euler", GAUSS.model(), start(), karras(4), bogus=1)
    with pytest.raises(ValueError, match="space"):
        run("euler", GAUSS.model(), start(), karras(4), space="vp")
