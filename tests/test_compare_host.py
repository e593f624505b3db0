"""Host contract of the A/B nodes inside a real ComfyUI (runs only when COMFYUI_PATH is set), on the
analytic EPS and FLOW models of comfy_host.py. The VAE is optional in the nodes; here a trivial
"VAE" (first three latent channels, affinely mapped to [0, 1]) exercises the SSIM / pixel path."""
import json

import pytest

from comfy_host import analytic_model, comfy, cond, exact, needs_comfyui

pytestmark = needs_comfyui
FLOWS = pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])


@pytest.fixture(scope="module")
def host():
    return comfy()


@pytest.fixture(autouse=True)
def output_dir(tmp_path):
    import folder_paths

    before = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path))
    yield tmp_path
    folder_paths.set_output_directory(before)


class LatentRGB:
    """Stands in for a VAE: decode(x [B, 4, H, W]) -> [B, H, W, 3] in [0, 1]."""

    def decode(self, x):
        return (x[:, :3].movedim(1, -1) * 0.25 + 0.5).clamp(0, 1)


def node(nodes, node_id):
    assert node_id in nodes.NODE_CLASS_MAPPINGS, f"{node_id} not visible to ComfyUI"
    return nodes.NODE_CLASS_MAPPINGS[node_id]


def setup(nodes, flow, size=16, batch=1):
    import comfy.samplers
    import torch
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise

    mp = analytic_model(flow)
    ms = mp.get_model_object("model_sampling")
    contender = node(nodes, "SamplerLabContender")

    def make(name, steps, label="", sampler=None, **kw):
        sigmas = comfy.samplers.calculate_sigmas(ms, "karras", steps).cpu()
        return contender.execute(sampler=sampler or comfy.samplers.sampler_object(name), sigmas=sigmas, label=label, **kw)[0]

    base = dict(model=mp, positive=cond(1.0), negative=cond(-1.0), cfg=1.0,
                latent_image={"samples": torch.zeros(batch, 4, size, size)}, noise=Noise_RandomNoise(11))
    return mp, ms, make, base


@FLOWS
def test_compare_counts_pairs_and_measures(host, flow, output_dir):
    nodes, _ = host
    import comfy.sample
    import comfy.samplers

    mp, ms, make, base = setup(nodes, flow)
    out = node(nodes, "SamplerLabCompare").execute(**base, reference=make("heun", 48), seeds=3, vae=LatentRGB(),
                                                   contender_1=make("euler", 8), contender_2=make("heun", 8), contender_3=make("euler", 8))
    grid, heat, text = out[0], out[1], out[2]
    report = json.loads(text)
    rows = {r["label"]: r for r in report["contenders"]}
    assert list(rows) == ["euler 8", "heun 8", "euler 8 #2"]
    assert rows["euler 8"]["model_calls"]["per_seed"] == [8, 8, 8]          # counted, equal to the known cost
    assert rows["heun 8"]["model_calls"]["per_seed"] == [15, 15, 15]        # 2 per step, Euler on the last step to 0
    assert rows["heun 8"]["network_passes"]["per_seed"] == [15, 15, 15]    # cfg 1: no uncond pass
    assert report["reference"]["model_calls"]["per_seed"] == [95] * 3
    assert rows["heun 8"]["rmse"]["mean"] < rows["euler 8"]["rmse"]["mean"]
    assert rows["heun 8"]["paired_vs"]["rmse"]["lower"] == 3
    assert rows["euler 8 #2"]["rmse"]["per_sample"] == rows["euler 8"]["rmse"]["per_sample"]  # identical seeds: paired
    assert rows["euler 8 #2"]["paired_vs"]["rmse"]["mean_diff"] == 0
    assert 0 < rows["euler 8"]["ssim"]["mean"] <= 1 and rows["heun 8"]["ssim"]["mean"] > rows["euler 8"]["ssim"]["mean"]

    # seed k is SamplerCustom's run with seed 11 + k; the reference is close to the exact answer
    latent = base["latent_image"]["samples"]
    sig = comfy.samplers.calculate_sigmas(ms, "karras", 48).cpu()
    for k, seed in enumerate(report["seeds"]):
        noise = comfy.sample.prepare_noise(latent, seed)
        ref = comfy.sample.sample_custom(mp, noise, 1.0, comfy.samplers.sampler_object("heun"), sig, cond(1.0), cond(-1.0), latent,
                                         disable_pbar=True, seed=seed)
        assert float((ref - exact(noise, 1.0, float(sig[0]), flow)).pow(2).mean().sqrt()) < 0.05  # as test_comfyui_host
        eul = comfy.sample.sample_custom(mp, noise, 1.0, comfy.samplers.sampler_object("euler"),
                                         comfy.samplers.calculate_sigmas(ms, "karras", 8).cpu(), cond(1.0), cond(-1.0), latent,
                                         disable_pbar=True, seed=seed)
        assert rows["euler 8"]["rmse"]["per_sample"][k] == pytest.approx(float((eul - ref).pow(2).mean().sqrt()), rel=1e-4)

    assert grid.ndim == 4 and grid.shape[0] == 1 and grid.shape[-1] == 3 and heat.shape[-1] == 3
    saved = json.loads((output_dir / "samplerlab" / "compare_00001.json").read_text())
    assert saved["contenders"][0]["label"] == "euler 8"


def test_cfg_counts_one_batched_pass_per_call(host):
    nodes, _ = host
    mp, ms, make, base = setup(nodes, False)
    report = json.loads(node(nodes, "SamplerLabCompare").execute(**{**base, "cfg": 3.0}, reference=make("euler", 12), seeds=1,
                                                                 contender_1=make("euler", 6), contender_2=make("dpmpp_2m", 6))[2])
    for row in report["contenders"]:
        assert row["model_calls"]["per_seed"] == [6] and row["network_passes"]["per_seed"] == [6]
    assert report["pixel_space"] is False and report["contenders"][0]["ssim"] is None


def test_failing_contender_is_reported_and_others_run(host):
    nodes, _ = host
    import comfy.samplers

    mp, ms, make, base = setup(nodes, True)

    def broken(model, x, sigmas, **kw):
        raise RuntimeError("this sampler is broken")

    def wrong_shape(model, x, sigmas, **kw):
        return x[:, :2]

    out = node(nodes, "SamplerLabCompare").execute(
        **base, reference=make("euler", 16), seeds=2,
        contender_1=make("euler", 4), contender_2=make("", 4, "broken", comfy.samplers.KSAMPLER(broken)),
        contender_3=make("", 4, "narrow", comfy.samplers.KSAMPLER(wrong_shape)), contender_4=make("heun", 4))
    rows = {r["label"]: r for r in json.loads(out[2])["contenders"]}
    assert rows["broken"]["status"] == "failed" and "this sampler is broken" in rows["broken"]["error"]
    assert rows["narrow"]["status"] == "failed" and "ValueError: latent: shape (1, 2, 16, 16)" in rows["narrow"]["error"]
    assert rows["euler 4"]["status"] == rows["heun 4"]["status"] == "ok"
    assert out[0].shape[2] > 4 * 200  # reference + four columns, failed ones as grey tiles


def test_bad_input_is_a_value_error(host):
    nodes, _ = host
    mp, ms, make, base = setup(nodes, False)
    compare_node = node(nodes, "SamplerLabCompare")
    with pytest.raises(ValueError, match="contenders: need at least 2"):
        compare_node.execute(**base, reference=make("euler", 16), seeds=1, contender_1=make("euler", 4))
    with pytest.raises(ValueError, match="reference: 8 steps is fewer than contender 'euler 12'"):
        compare_node.execute(**base, reference=make("euler", 8), seeds=1, contender_1=make("euler", 4), contender_3=make("euler", 12))
    with pytest.raises(ValueError, match="steps"):
        node(nodes, "SamplerLabConvergenceSweep").execute(**base, reference=make("euler", 16), seeds=1, steps="4, x",
                                                          contender_1=make("euler", 4))


def test_cancellation_propagates(host):
    nodes, _ = host
    import comfy.model_management

    mp, ms, make, base = setup(nodes, False)
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            node(nodes, "SamplerLabCompare").execute(**base, reference=make("euler", 8), seeds=2,
                                                     contender_1=make("euler", 4), contender_2=make("heun", 4))
    finally:
        comfy.model_management.interrupt_current_processing(False)


@FLOWS
def test_sweep_and_trajectory(host, flow, output_dir):
    nodes, pack = host
    mp, ms, make, base = setup(nodes, flow)
    plot, table = node(nodes, "SamplerLabConvergenceSweep").execute(**base, reference=make("heun", 64), seeds=1, steps="4, 8, 16",
                                                                    schedule="karras", contender_1=make("euler", 4), contender_2=make("heun", 4))[:2]
    assert plot.ndim == 4 and "| euler 4 |" in table and "(16)" in table and "(31)" in table
    saved = json.loads((output_dir / "samplerlab" / "sweep_00001.json").read_text())
    err = {(r["sampler"], r["steps"]): r["error"] for r in saved["records"]}
    assert err[("euler 4", 16)] < err[("euler 4", 4)] and err[("heun 4", 16)] < err[("euler 4", 16)]

    plot, text = node(nodes, "SamplerLabTrajectory").execute(**{k: v for k, v in base.items()}, contender=make("euler", 12), bands=4)[:2]
    t = json.loads(text)
    assert len(t["bands"]) == 4 and len(t["energy"]) == 12 and t["fraction_of_final"][-1] == [1.0] * 4
    assert t["peak_speed_step"] is not None and plot.shape[-1] == 3
