"""Host contract of the Calibrated sampler node inside a real ComfyUI (runs only when COMFYUI_PATH is set)."""
import json
import logging

import pytest

from comfy_host import analytic_model, comfy, cond, needs_comfyui

pytestmark = needs_comfyui


@pytest.fixture(scope="module")
def host():
    return comfy()


def args(mp, cache_dir, **kw):
    import torch

    return dict(model=mp, positive=cond(1.0), negative=cond(-1.0), latent={"samples": torch.zeros(1, 4, 8, 8)}, steps=5,
                cfg=1.0, seed=3, seeds=2, mode="reuse", cache_dir=str(cache_dir), **kw)


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_calibrated_sampler_in_sample_custom_and_cached(host, flow, tmp_path, monkeypatch):
    nodes, pack = host
    import comfy.sample
    import torch

    mp = analytic_model(flow)
    node = nodes.NODE_CLASS_MAPPINGS["SamplerLabCalibratedSampler"]
    out = node.execute(**args(mp, tmp_path))
    sampler, sigmas = out[:2]
    levels_reach_the_page(pack, mp, out, flow)
    files = list(tmp_path.glob("calibrated-5-*.json"))
    assert len(files) == 1 and len(sigmas) == 6 and float(sigmas[-1]) == 0 and bool((sigmas[:-1] > sigmas[1:]).all())
    assert not flow or float(sigmas[0]) == 1.0
    noise = comfy.sample.prepare_noise(torch.zeros(2, 4, 8, 8), 11)
    calls = []

    def run(sampler, s):
        return comfy.sample.sample_custom(mp, noise, 1.0, sampler, s, cond(1.0), cond(-1.0), torch.zeros(2, 4, 8, 8),
                                          disable_pbar=True, seed=11, callback=lambda *a: calls.append(a[0]))

    def karras(steps):
        return nodes.NODE_CLASS_MAPPINGS["SamplerLabScheduleKarras"].execute(model=mp, steps=steps, denoise=1.0, rho=7.0)[0]

    base = nodes.NODE_CLASS_MAPPINGS["SamplerLabExpMultistep"].execute(order=3)[0]
    target = run(base, karras(200))  # the host's own converged solve from the same noise
    calls.clear()
    mine = float((run(sampler, sigmas) - target).pow(2).mean().sqrt())
    assert calls == list(range(5))
    assert mine < 0.1 * float((run(base, karras(5)) - target).pow(2).mean().sqrt())
    with pytest.raises(ValueError, match="its own sigmas"):
        run(sampler, karras(5))

    calibrated = pack.nodes.calibrated.solver
    monkeypatch.setattr(calibrated, "calibrate_solver", lambda *a, **k: pytest.fail("the cache was not used"))
    again = node.execute(**args(mp, tmp_path))
    torch.testing.assert_close(again[1], sigmas)
    monkeypatch.undo()
    files[0].write_text("{broken")
    torch.testing.assert_close(node.execute(**args(mp, tmp_path))[1], sigmas)  # recalibrated: same model, same result
    assert len(list(tmp_path.glob("calibrated-5-*.json"))) == 1


def test_a_calibrated_sampler_seeded_with_one_step_fewer(host, tmp_path, monkeypatch):
    """Chained: the SIGMAS of a 5-step Calibrated sampler as the `start` of a 6-step one; the start is in the
    cache key (a run without it is another entry); a start of another length is a ValueError that names it.
    chain_from = 5 on a 6-step node is the same chain, from the cache, and recalibrated the same solver from one
    reference solve; out of range, a ValueError that names it."""
    import torch

    nodes, pack = host
    mp = analytic_model(False)
    node = nodes.NODE_CLASS_MAPPINGS["SamplerLabCalibratedSampler"]
    five = node.execute(**args(mp, tmp_path))[1]
    six = node.execute(**dict(args(mp, tmp_path), steps=6, start=five))[1]
    assert len(six) == 7 and float(six[-1]) == 0 and bool((six[:-1] > six[1:]).all())
    [entry] = tmp_path.glob("calibrated-6-*.json")
    assert json.loads(entry.read_text())["key"]["start"] == five.double().tolist()
    node.execute(**dict(args(mp, tmp_path), steps=6))
    assert len(list(tmp_path.glob("calibrated-6-*.json"))) == 2
    with pytest.raises(ValueError, match="start must be 7 or 8 host levels"):
        node.execute(**dict(args(mp, tmp_path), steps=7, start=torch.tensor([14.6, 1.0, 0.0])))
    chained = node.execute(**dict(args(mp, tmp_path), steps=6, chain_from=5))[1]  # the same chain in one node
    torch.testing.assert_close(chained, six)
    assert len(list(tmp_path.glob("calibrated-*.json"))) == 3
    core, solved = pack.nodes.calibrated.solver, []
    monkeypatch.setattr(core, "solve_reference", lambda *a, real=core.solve_reference: solved.append(1) or real(*a))
    again = node.execute(**dict(args(mp, tmp_path), steps=6, chain_from=5, mode="recalibrate"))[1]
    torch.testing.assert_close(again, six)  # both calibrated anew, the 6-step one on the 5-step one's reference
    assert solved == [1]
    monkeypatch.undo()
    for bad in (2, 7):
        with pytest.raises(ValueError, match=r"chain_from must be 0 \(off\) or a step count in \[3, steps = 6\]"):
            node.execute(**dict(args(mp, tmp_path), steps=6, chain_from=bad))


def levels_reach_the_page(pack, mp, out, flow):
    """The page's plot after a run (web/samplerlab.js, as for Calibrated schedule): the node's own levels and the
    model's view (space, range), which the plot route takes back for later widget changes."""
    import importlib

    views = importlib.import_module(pack.__name__ + ".nodes.views")
    assert out.ui["sl_sigmas"] == out[1].tolist()
    [view] = out.ui["sl_model"]
    assert view == views.model_view(mp.get_model_object("model_sampling")) and view["space"] == ("flow" if flow else "ve")
    assert view["sigma_min"] <= out.ui["sl_sigmas"][-2] < out.ui["sl_sigmas"][0] <= view["sigma_max"] * (1 + 1e-6)
    routes = importlib.import_module(pack.__name__ + ".nodes.routes")
    drawn = routes.plot({"kind": "schedule", "name": "karras", "steps": 5, "params": {}, "model": view})
    assert drawn["model"]["sigma_max"] == view["sigma_max"] and len(drawn["sigmas"]) == 6
    # the key the levels were calibrated for: the page keeps them while these widgets keep their values
    # (web/lib/graph.js, calibrationStands); mode and cache_dir are not in it
    [key] = out.ui["sl_key"]
    widgets = {k: v for k, v in args(mp, "").items() if isinstance(v, (int, float, str))}
    assert {k: key[k] for k in widgets if k in key} == {"steps": 5, "cfg": 1.0, "seed": 3, "seeds": 2}
    assert key["chain_from"] == 0 and "mode" not in key and "cache_dir" not in key and json.loads(json.dumps(key)) == key


def test_unusable_cache_location_warns_and_still_returns(host, tmp_path, caplog):
    nodes, _ = host
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        out = nodes.NODE_CLASS_MAPPINGS["SamplerLabCalibratedSampler"].execute(**args(analytic_model(False), blocker / "sub"))
    assert len(out[1]) == 6 and "cannot write the calibrated solver cache" in caplog.text


def test_cancel_stops_calibration(host, tmp_path):
    nodes, _ = host
    import comfy.model_management

    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            nodes.NODE_CLASS_MAPPINGS["SamplerLabCalibratedSampler"].execute(**args(analytic_model(False), tmp_path))
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert not list(tmp_path.glob("*.json"))


def test_progress_bar_is_continuous_and_ends_full(host, tmp_path, monkeypatch):
    """The bar never moves back, never jumps over a stage that did not run (the reference check passes here, so
    "order" does not: before, the bar jumped by its 25 units), and ends at its total (the last step, when the
    level search stops with calls left, fills the bar)."""
    import comfy.utils

    bars = []

    class Bar:
        def __init__(self, total):
            self.total, self.values = total, []
            bars.append(self)

        def update_absolute(self, value, total=None, preview=None):
            self.values.append(value)

    monkeypatch.setattr(comfy.utils, "ProgressBar", Bar)
    from samplerlab.samplers import calibrated as solver

    nodes, _ = host
    nodes.NODE_CLASS_MAPPINGS["SamplerLabCalibratedSampler"].execute(**args(analytic_model(False), tmp_path))
    bar = next(b for b in bars if b.total == solver.BUDGET)
    steps = [b - a for a, b in zip([0] + bar.values, bar.values)]
    assert min(steps) >= 0 and max(steps[:-1]) <= 8 and bar.values[-1] == bar.total, (steps, bar.values[-1])
