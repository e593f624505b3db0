"""Poisson flow inside a real ComfyUI (runs only when COMFYUI_PATH is set): KSampler route == noise-node route."""
import pytest

from comfy_host import analytic_model, comfy, cond, exact, needs_comfyui

pytestmark = needs_comfyui


@pytest.fixture(scope="module")
def host():
    return comfy()


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
@pytest.mark.parametrize("denoise", [1.0, 0.6])
def test_ksampler_equals_poisson_noise_node(host, flow, denoise):
    nodes, pack = host
    import comfy.sample
    import comfy.samplers
    import torch

    mp = analytic_model(flow)
    latent = torch.zeros(2, 4, 8, 8) if denoise == 1.0 else torch.full((2, 4, 8, 8), 0.7)
    noise = comfy.sample.prepare_noise(latent, 11)
    via_ksampler = comfy.sample.sample(mp, noise, 12, 1.0, "sl_poisson_flow", "karras", cond(1.0), cond(-1.0), latent,
                                       denoise=denoise, disable_pbar=True, seed=11)
    sampler_node = nodes.NODE_CLASS_MAPPINGS["SamplerLabPoissonFlow"]
    opts = {k: p.default for k, p in pack.samplers.REGISTRY["poisson_flow"].params.items()}
    sampler = sampler_node.execute(**{**opts, "noise": "poisson"})[0]
    prior = nodes.NODE_CLASS_MAPPINGS["SamplerLabPoissonNoise"].execute(noise_seed=11, D=opts["D"])[0]
    ms = mp.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "karras", round(12 / denoise))[-13:]
    via_noise = comfy.sample.sample_custom(mp, prior.generate_noise({"samples": latent}), 1.0, sampler, sigmas,
                                           cond(1.0), cond(-1.0), latent, disable_pbar=True, seed=11)
    torch.testing.assert_close(via_ksampler, via_noise, rtol=1e-4, atol=1e-4)
    if denoise == 1.0:
        assert float((via_ksampler - exact(noise, 1.0, float(sigmas[0]), flow)).pow(2).mean().sqrt()) < 0.05


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_tracking_node_wraps_a_builtin_sampler(host, flow):
    nodes, pack = host
    import comfy.sample
    import comfy.samplers
    import torch

    mp = analytic_model(flow)
    latent = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 5)
    sigmas = comfy.samplers.calculate_sigmas(mp.get_model_object("model_sampling"), "karras", 16)
    node = nodes.NODE_CLASS_MAPPINGS["SamplerLabNoiseTracking"]
    opts = {k: p.default for k, p in pack.samplers.tracking.TRACK_PARAMS.items()}
    for builtin in ("euler", "dpmpp_2m", "euler_ancestral"):
        sampler = node.execute(sampler=comfy.samplers.sampler_object(builtin), **{**opts, "track": "stein"})[0]
        steps = []
        out = comfy.sample.sample_custom(mp, noise, 1.0, sampler, sigmas, cond(1.0), cond(-1.0), latent,
                                         callback=lambda i, x0, x, total: steps.append(i), disable_pbar=True, seed=5)
        assert len(steps) == len(sigmas) - 1 and torch.isfinite(out).all()
        if builtin != "euler_ancestral":
            assert float((out - exact(noise, 1.0, float(sigmas[0]), flow)).pow(2).mean().sqrt()) < 0.1
    with pytest.raises(ValueError, match="track"):
        node.execute(sampler=comfy.samplers.sampler_object("euler"), **{**opts, "track": "bogus"})


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_poisson_D_patch_carries_D_through_a_plain_ksampler(host, flow):
    """KSampler + sl_poisson_flow on a model patched with *Poisson D* = the PFGM++ reference route (Poisson noise at
    that D, then the plain inner solver at the nominal levels); unpatched it is the diffusion route (kappa sigma)."""
    nodes, pack = host
    import comfy.sample
    import comfy.samplers
    import torch

    mp = analytic_model(flow)
    patched = nodes.NODE_CLASS_MAPPINGS["SamplerLabPoissonD"].execute(model=mp, D=4.0)[0]
    assert pack.nodes.host.PATCH_KEY not in mp.model_options, "the patch leaves the input MODEL untouched"
    latent = torch.zeros(2, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 7)
    args = (noise, 10, 1.0, "sl_poisson_flow", "karras", cond(1.0), cond(-1.0), latent)
    via_patch = comfy.sample.sample(patched, *args, disable_pbar=True, seed=7)
    unpatched = comfy.sample.sample(mp, *args, disable_pbar=True, seed=7)
    prior = nodes.NODE_CLASS_MAPPINGS["SamplerLabPoissonNoise"].execute(noise_seed=7, D=4.0)[0]
    sigmas = comfy.samplers.calculate_sigmas(mp.get_model_object("model_sampling"), "karras", 10)
    reference = comfy.sample.sample_custom(mp, prior.generate_noise({"samples": latent}), 1.0,
                                           comfy.samplers.sampler_object("sl_dpmpp_2m"), sigmas, cond(1.0), cond(-1.0),
                                           latent, disable_pbar=True, seed=7)
    torch.testing.assert_close(via_patch, reference, rtol=1e-4, atol=1e-4)
    assert float((via_patch - unpatched).abs().max()) > 1e-2
    with pytest.raises(ValueError, match="D"):
        nodes.NODE_CLASS_MAPPINGS["SamplerLabPoissonD"].execute(model=mp, D=0.5)
