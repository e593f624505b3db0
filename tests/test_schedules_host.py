"""Host contract of the schedule nodes inside a real ComfyUI (runs only when COMFYUI_PATH is set)."""
import pytest

from comfy_host import analytic_model, comfy, cond, exact, needs_comfyui

pytestmark = needs_comfyui


@pytest.fixture(scope="module")
def host():
    return comfy()


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_calibrated_schedule_node_in_sample_custom(host, flow, tmp_path):
    nodes, pack = host
    import comfy.sample
    import torch

    mp = analytic_model(flow)
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    node = nodes.NODE_CLASS_MAPPINGS["SamplerLabCalibratedSchedule"]
    args = dict(model=mp, positive=cond(1.0), negative=cond(-1.0), latent=latent, cfg=1.0, solver="exp_multistep",
                steps=6, seeds=2, reference_calls=100, mode="reuse", cache_dir=str(tmp_path))
    out = node.execute(**args)
    sigmas = out[0]
    # the page keeps these levels while the widgets of their cache key keep their values (web/lib/graph.js)
    [key] = out.ui["sl_key"]
    assert {k: key[k] for k in args if k in key and isinstance(args[k], (int, float, str))} == {"cfg": 1.0, "solver": "exp_multistep", "steps": 6, "seeds": 2, "reference_calls": 100}
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and len(sigmas) == 7 and float(sigmas[-1]) == 0 and bool((sigmas[:-1] > sigmas[1:]).all())
    assert not flow or float(sigmas[0]) == 1.0
    again = node.execute(**args)[0]  # from the cache: same levels
    torch.testing.assert_close(again, sigmas)
    sampler = nodes.NODE_CLASS_MAPPINGS["SamplerLabExpMultistep"].execute(order=3)[0]
    noise = comfy.sample.prepare_noise(torch.zeros(2, 4, 8, 8), 11)
    target = exact(noise, 1.0, float(sigmas[0]), flow)

    def rms(s):
        out = comfy.sample.sample_custom(mp, noise, 1.0, sampler, s, cond(1.0), cond(-1.0), torch.zeros(2, 4, 8, 8), disable_pbar=True, seed=11)
        return float((out - target).pow(2).mean().sqrt())

    karras = nodes.NODE_CLASS_MAPPINGS["SamplerLabScheduleKarras"].execute(model=mp, steps=6, denoise=1.0, rho=7.0)[0]
    assert rms(sigmas) <= rms(karras) * 1.001 and rms(sigmas) < 0.05
    files[0].write_text("{broken")
    torch.testing.assert_close(node.execute(**args)[0], sigmas)  # recomputed, same model: same schedule


def test_plot_sigmas_image(host):
    nodes, _ = host
    import torch

    img = nodes.NODE_CLASS_MAPPINGS["SamplerLabPlotSigmas"].execute(sigmas=torch.tensor([14.6, 3.0, 0.5, 0.03, 0.0]), width=256, height=160)[0]
    assert img.shape == (1, 160, 256, 3) and 0 <= float(img.min()) and float(img.max()) <= 1
    with pytest.raises(ValueError, match="sigmas"):
        nodes.NODE_CLASS_MAPPINGS["SamplerLabPlotSigmas"].execute(sigmas=torch.tensor([float("nan"), 0.0]), width=256, height=160)


def test_new_schedules_in_ksampler_list_flow_aware(host):
    _, pack = host
    import comfy.samplers

    mp = analytic_model(True)
    ms = mp.get_model_object("model_sampling")
    for name in ("polyexponential", "critical_window", "poisson_aligned"):
        s = comfy.samplers.calculate_sigmas(ms, f"sl_{name}", 10)
        assert float(s[0]) == 1.0 and float(s[-1]) == 0 and bool((s[:-1] > s[1:]).all()), name
