"""Issue 11 in a real ComfyUI (runs only when COMFYUI_PATH is set): calibrated-schedule budget and cache_dir,
Compare with a NaN contender, PlotSigmas without matplotlib, Critical level at 2 steps."""
import json
import logging
import sys

import pytest

from comfy_host import analytic_model, comfy, cond, needs_comfyui

pytestmark = needs_comfyui


@pytest.fixture(scope="module")
def host():
    return comfy()


def calibrated_args(tmp_path, **kw):
    import torch

    return {**dict(model=analytic_model(False), positive=cond(1.0), negative=cond(-1.0), latent={"samples": torch.zeros(1, 4, 8, 8)},
                   cfg=1.0, solver="euler", steps=4, seeds=1, reference_calls=20, mode="reuse", cache_dir=str(tmp_path)), **kw}


@pytest.mark.parametrize("bad,match", [(dict(steps=60, reference_calls=100), r"^steps.*\[1, 49\]"),
                                       (dict(cache_dir="FILE"), "^cache_dir"), (dict(cache_dir="/proc/samplerlab"), "^cache_dir")])
def test_calibrated_schedule_refuses_before_calibrating(host, tmp_path, monkeypatch, bad, match):
    nodes, pack = host
    (tmp_path / "FILE").write_text("x")
    if bad.get("cache_dir") == "FILE":
        bad = {"cache_dir": str(tmp_path / "FILE")}
    monkeypatch.setattr(pack.nodes.schedules, "calibrate_in_host", lambda *a, **k: pytest.fail("calibrated"))
    with pytest.raises(ValueError, match=match):
        nodes.NODE_CLASS_MAPPINGS["SamplerLabCalibratedSchedule"].execute(**calibrated_args(tmp_path, **bad))


def test_calibrated_schedule_kept_when_the_cache_cannot_be_written(host, tmp_path, caplog):
    """A directory where the cache file goes: load warns, the save fails, the schedule is still returned."""
    nodes, pack = host
    args = calibrated_args(tmp_path)
    node = nodes.NODE_CLASS_MAPPINGS["SamplerLabCalibratedSchedule"]
    sigmas = node.execute(**args)[0]
    (path,) = tmp_path.glob("*.json")
    path.unlink()
    path.mkdir()
    with caplog.at_level(logging.WARNING):
        again = node.execute(**args)[0]
    assert len(again) == 5 and "not cached" in caplog.text and "unusable" in caplog.text
    assert again.tolist() == sigmas.tolist()


def test_steps_33_calibrates(host, tmp_path):
    nodes, _ = host
    sigmas = nodes.NODE_CLASS_MAPPINGS["SamplerLabCalibratedSchedule"].execute(**calibrated_args(tmp_path, steps=33, reference_calls=70))[0]
    assert len(sigmas) == 34 and bool((sigmas[:-1] > sigmas[1:]).all())


def test_compare_with_a_nan_contender(host, tmp_path):
    nodes, _ = host
    import comfy.samplers
    import folder_paths
    import torch
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise

    before = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path))
    try:
        mp = analytic_model(False)
        ms = mp.get_model_object("model_sampling")
        sigmas = comfy.samplers.calculate_sigmas(ms, "karras", 6).cpu()
        euler = comfy.samplers.sampler_object("euler")

        def broken(model, x, sigmas, extra_args=None, callback=None, disable=None):
            out = euler.sampler_function(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable)
            out[:, 0, 0, 0] = float("nan")
            return out

        contender = nodes.NODE_CLASS_MAPPINGS["SamplerLabContender"]
        make = lambda s, label, sampler: contender.execute(sampler=sampler, sigmas=s, label=label)[0]
        ref_sigmas = comfy.samplers.calculate_sigmas(ms, "karras", 24).cpu()
        out = nodes.NODE_CLASS_MAPPINGS["SamplerLabCompare"].execute(
            model=mp, positive=cond(1.0), negative=cond(-1.0), cfg=1.0, latent_image={"samples": torch.zeros(1, 4, 16, 16)},
            noise=Noise_RandomNoise(3), reference=make(ref_sigmas, "ref", euler), seeds=2,
            contender_1=make(sigmas, "euler", euler), contender_2=make(sigmas, "broken", comfy.samplers.KSAMPLER(broken)))
        report = json.loads(out[2], parse_constant=lambda c: pytest.fail(f"bare {c}"))
        status = {r["label"]: r["status"] for r in report["contenders"]}
        assert status == {"euler": "ok", "broken": "non-finite"} and report["nonfinite"]
        (written,) = (tmp_path / "samplerlab").glob("compare_*.json")
        json.loads(written.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
        assert out[1].shape[-1] == 3
    finally:
        folder_paths.set_output_directory(before)


def test_plot_sigmas_without_matplotlib(host, monkeypatch):
    nodes, _ = host
    import torch

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    img = nodes.NODE_CLASS_MAPPINGS["SamplerLabPlotSigmas"].execute(sigmas=torch.tensor([14.6, 3.0, 0.5, 0.03, 0.0]), width=128, height=96)[0]
    assert img.shape == (1, 96, 128, 3) and float(img.min()) < 0.5


def test_critical_level_with_two_steps_says_it_cannot_measure(host):
    nodes, _ = host
    import torch

    node = nodes.NODE_CLASS_MAPPINGS["SamplerLabCriticalLevel"]
    with pytest.raises(ValueError, match=r"^steps: with steps = 2 sigma_c cannot be measured"):
        node.execute(model=analytic_model(False), conditioning=cond(0.0), latent_image={"samples": torch.zeros(1, 4, 8, 8)}, seed=0, steps=2)
