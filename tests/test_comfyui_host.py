"""Host contract: the pack inside a real ComfyUI (runs only when COMFYUI_PATH is set)."""
import pytest

from comfy_host import analytic_model, comfy, cond, exact, needs_comfyui

pytestmark = needs_comfyui


@pytest.fixture(scope="module")
def host():
    return comfy()


def node_for(nodes, node_id):
    assert node_id in nodes.NODE_CLASS_MAPPINGS, f"{node_id} not visible to ComfyUI"
    return nodes.NODE_CLASS_MAPPINGS[node_id]


def test_nodes_and_names_visible(host):
    nodes, pack = host
    import comfy.samplers

    samplers, schedulers = pack.samplers.REGISTRY, pack.schedulers.REGISTRY
    for name in samplers:
        node_for(nodes, f"SamplerLab{pack.nodes.generated.camel(name)}")
        assert f"sl_{name}" in comfy.samplers.KSampler.SAMPLERS
        assert f"sl_{name}" in comfy.samplers.KSAMPLER_NAMES
    for name in schedulers:
        node_for(nodes, f"SamplerLabSchedule{pack.nodes.generated.camel(name)}")
        assert f"sl_{name}" in comfy.samplers.KSampler.SCHEDULERS
        assert f"sl_{name}" in comfy.samplers.SCHEDULER_HANDLERS
    assert comfy.samplers.KSampler.SAMPLERS is comfy.samplers.SAMPLER_NAMES


def test_registration_is_idempotent_and_switchable(host, monkeypatch):
    _, pack = host
    import comfy.samplers

    before = (list(comfy.samplers.SAMPLER_NAMES), list(comfy.samplers.SCHEDULER_NAMES), dict(comfy.samplers.SCHEDULER_HANDLERS))
    pack.nodes.registration.register_lists()
    after = (list(comfy.samplers.SAMPLER_NAMES), list(comfy.samplers.SCHEDULER_NAMES), dict(comfy.samplers.SCHEDULER_HANDLERS))
    assert before == after
    monkeypatch.setenv("SAMPLERLAB_NO_REGISTER", "1")
    assert pack.nodes.registration.register_lists() == []


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_sampler_nodes_through_sample_custom(host, flow):
    nodes, pack = host
    import comfy.sample
    import torch

    mp = analytic_model(flow)
    latent = torch.zeros(2, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 7)
    sigmas = node_for(nodes, "SamplerLabScheduleKarras").execute(model=mp, steps=24, denoise=1.0, rho=7.0)[0]
    assert sigmas[-1] == 0 and (not flow or float(sigmas[0]) <= 1.0)
    target = exact(noise, 1.0, float(sigmas[0]), flow)
    for name, spec in pack.samplers.REGISTRY.items():
        node = node_for(nodes, f"SamplerLab{pack.nodes.generated.camel(name)}")
        sampler = node.execute(**{k: p.default for k, p in spec.params.items()})[0]
        steps = []
        out = comfy.sample.sample_custom(mp, noise, 1.0, sampler, sigmas, cond(1.0), cond(-1.0), latent,
                                         callback=lambda i, x0, x, total: steps.append(i), disable_pbar=True, seed=7)
        assert len(steps) == len(sigmas) - 1, name
        rms = float((out - target).pow(2).mean().sqrt())
        assert rms < 0.05, f"{name} on {'flow' if flow else 'eps'}: rms {rms}"


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_sl_names_through_ksampler_path(host, flow):
    """KSampler by name = the node's SAMPLER on the scheduler's sigmas (no silent fallback), and accurate."""
    nodes, pack = host
    import comfy.sample
    import comfy.samplers
    import torch

    mp = analytic_model(flow)
    ms = mp.get_model_object("model_sampling")
    latent = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 3)
    for name, spec in pack.samplers.REGISTRY.items():
        sampler = node_for(nodes, f"SamplerLab{pack.nodes.generated.camel(name)}").execute(**{k: p.default for k, p in spec.params.items()})[0]
        for sched in pack.schedulers.REGISTRY:
            out = comfy.sample.sample(mp, noise, 24, 1.0, f"sl_{name}", f"sl_{sched}", cond(1.0), cond(-1.0), latent,
                                      denoise=1.0, disable_pbar=True, seed=3)
            sigmas = comfy.samplers.calculate_sigmas(ms, f"sl_{sched}", 24)
            twin = comfy.sample.sample_custom(mp, noise, 1.0, sampler, sigmas, cond(1.0), cond(-1.0), latent, disable_pbar=True, seed=3)
            torch.testing.assert_close(out, twin, rtol=1e-5, atol=1e-5)
            if sched == "karras":
                rms = float((out - exact(noise, 1.0, float(sigmas[0]), flow)).pow(2).mean().sqrt())
                assert rms < 0.05, f"sl_{name} / sl_{sched} on {'flow' if flow else 'eps'}: rms {rms}"
