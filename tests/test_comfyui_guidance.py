"""Host contract of the guidance nodes: the MODEL patch in the KSampler path, the GUIDER through guider.sample,
the critical-level node, on the analytic EPS and FLOW models (runs only when COMFYUI_PATH is set)."""
import logging

import pytest

from comfy_host import S0, analytic_model, comfy, cond, needs_comfyui

pytestmark = needs_comfyui
STEPS = 16
FULL = dict(shape="interval", center="percent", center_percent=0.5, width=0.5, base=1.0, start_percent=0.0, end_percent=1.0)
AUTO = dict(shape="cosine", center="auto", center_percent=0.5, width=0.7, base=1.0, start_percent=0.0, end_percent=1.0)


@pytest.fixture(scope="module")
def host():
    return comfy()


def counting(mp):
    """The patcher with a unet wrapper that counts negative (uncond) rows evaluated."""
    seen = {"uncond": 0}

    def wrapper(apply_model, args):
        seen["uncond"] += sum(1 for c in args["cond_or_uncond"] if c == 1)
        return apply_model(args["input"], args["timestep"], **args["c"])

    mp = mp.clone()
    mp.set_model_unet_function_wrapper(wrapper)
    return mp, seen


def ve_sigma_c(flow):
    """The analytic model is N(mu, S0^2) per pixel: every Jacobian eigenvalue is S0^2 / (S0^2 + sigma^2), sigma_c = S0."""
    return S0


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_pulse_patch_in_ksampler(host, flow, caplog):
    nodes, _ = host
    import comfy.sample
    import torch

    node = nodes.NODE_CLASS_MAPPINGS["SamplerLabGuidancePulse"]
    mp = analytic_model(flow)
    latent = torch.zeros(2, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 5)
    run = lambda m: comfy.sample.sample(m, noise, STEPS, 3.0, "euler", "karras", cond(1.0), cond(-1.0), latent, disable_pbar=True, seed=5)
    plain = run(mp)
    full = run(node.execute(model=mp, probes=4, **FULL)[0])
    torch.testing.assert_close(full, plain, rtol=1e-5, atol=1e-5)

    patched, seen = counting(node.execute(model=mp, probes=4, **AUTO)[0])
    with caplog.at_level(logging.INFO, logger="samplerlab"):
        out = run(patched)
    assert bool(torch.isfinite(out).all())
    assert 1.2 < float(out.mean()) < float(plain.mean()) - 0.5  # guided, but less than constant cfg 3 (mean 5)
    assert 0 < seen["uncond"] < 2 * STEPS  # 2 rows (batch) per call: fewer negative calls than steps
    assert any("sigma_c = 0.5" in r.getMessage() or "sigma_c = 0.49" in r.getMessage() for r in caplog.records), caplog.text


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_pulse_guider_through_guider_sample(host, flow):
    nodes, _ = host
    import comfy.sample
    import comfy.samplers
    import torch

    node = nodes.NODE_CLASS_MAPPINGS["SamplerLabPulseGuider"]
    mp = analytic_model(flow)
    ms = mp.get_model_object("model_sampling")
    latent = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 9)
    sigmas = comfy.samplers.calculate_sigmas(ms, "karras", STEPS).cpu()
    sampler = comfy.samplers.sampler_object("euler")
    plain = comfy.sample.sample_custom(mp, noise, 3.0, sampler, sigmas, cond(1.0), cond(-1.0), latent, disable_pbar=True, seed=9)
    guider = node.execute(model=mp, positive=cond(1.0), negative=cond(-1.0), cfg=3.0, probes=4, **FULL)[0]
    assert isinstance(guider, comfy.samplers.CFGGuider)
    full = guider.sample(noise, latent, sampler, sigmas, disable_pbar=True, seed=9)
    torch.testing.assert_close(full, plain, rtol=1e-5, atol=1e-5)

    guider = node.execute(model=mp, positive=cond(1.0), negative=cond(-1.0), cfg=3.0, probes=4, **AUTO)[0]
    out = guider.sample(noise, latent, sampler, sigmas, disable_pbar=True, seed=9)
    run = guider.last_run
    assert float(run.sigma_c.median()) == pytest.approx(ve_sigma_c(flow), rel=0.1)
    assert run.queries == STEPS and run.uncond_calls < STEPS and run.probe_calls == 4
    assert 1.2 < float(out.mean()) < float(plain.mean()) - 0.5
    again = guider.sample(noise, latent, sampler, sigmas, disable_pbar=True, seed=9)
    torch.testing.assert_close(again, out)  # no state carried from one run to the next


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_critical_level_node(host, flow):
    nodes, _ = host
    import torch

    node = nodes.NODE_CLASS_MAPPINGS["SamplerLabCriticalLevel"]
    mp = analytic_model(flow)
    out = node.execute(model=mp, conditioning=cond(-1.0), latent_image={"samples": torch.zeros(1, 4, 8, 8)}, seed=1, steps=20, probes=4)
    sigma_c, percent, t_c, report = out[0], out[1], out[2], out[3]
    host_level = S0 / (1 + S0) if flow else S0
    assert sigma_c == pytest.approx(host_level, rel=0.1) and 0 < percent < 1 and "sigma_c" in report
    assert t_c == pytest.approx(S0 / (1 + S0), rel=0.1)


def test_bad_settings_named(host):
    nodes, _ = host
    node = nodes.NODE_CLASS_MAPPINGS["SamplerLabGuidancePulse"]
    mp = analytic_model(False)
    with pytest.raises(ValueError, match="end_percent"):
        node.execute(model=mp, probes=4, **{**FULL, "start_percent": 0.7, "end_percent": 0.2})
    with pytest.raises(ValueError, match="center_percent"):
        node.execute(model=mp, probes=4, **{**AUTO, "center": "percent", "center_percent": 1.0})
    with pytest.raises(ValueError, match="width"):
        node.execute(model=mp, probes=4, **{**AUTO, "width": 0.0})


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_pulse_nodes_send_their_curve_to_the_front_end(host, flow):
    nodes, _ = host
    mp = analytic_model(flow)
    patch = nodes.NODE_CLASS_MAPPINGS["SamplerLabGuidancePulse"].execute(model=mp, probes=4, **{**AUTO, "center": "percent"})
    [shown] = patch.ui["sl_pulse"]
    assert len(shown["percent"]) == len(shown["weight"]) == 65 and max(shown["weight"]) > min(shown["weight"]) == 1.0
    assert "cfg" in shown["caption"]
    guider = nodes.NODE_CLASS_MAPPINGS["SamplerLabPulseGuider"].execute(
        model=mp, positive=cond(1.0), negative=cond(-1.0), cfg=3.0, probes=4, **FULL)
    assert guider.ui["sl_pulse"][0]["weight"] == [3.0] * 65
    auto = nodes.NODE_CLASS_MAPPINGS["SamplerLabGuidancePulse"].execute(model=mp, probes=4, **AUTO)
    assert sorted(auto.ui["sl_pulse"][0]) == ["caption", "model"] and "auto" in auto.ui["sl_pulse"][0]["caption"]
    assert auto.ui["sl_pulse"][0]["model"]["space"] == ("flow" if flow else "ve")  # the model's range, for the plot route


class PageServer:
    """ComfyUI's PromptServer as the pack meets it while a page's prompt runs: the page's client_id, messages recorded."""

    client_id = "the-page"
    last_node_id = None

    def __init__(self):
        self.sent = []

    def send_sync(self, event, data, sid=None):
        self.sent.append((event, data, sid))


def test_auto_pulse_run_tells_its_node_the_detected_sigma_c(host, tmp_path, monkeypatch, caplog):
    """The reference guidance workflow (center = auto) run by ComfyUI's PromptExecutor: the page that queued it gets
    one samplerlab.sigma_c message naming the pulse node, with a finite sigma_c inside the model's range, the one
    logged, and the weight curve centred there."""
    import math
    import re
    import sys

    from test_workflows import ROOT, run_workflow

    page = PageServer()
    monkeypatch.setitem(sys.modules, "server", type(sys)("server"))
    sys.modules["server"].PromptServer = type("PromptServer", (), {"instance": page})
    with caplog.at_level(logging.INFO, logger="samplerlab"):
        prompt, _, _ = run_workflow(ROOT / "example_workflows" / "reference_guidance_pulse_ksampler.json", tmp_path, page)
    [pulse_id] = [nid for nid, v in prompt.items() if v["class_type"] == "SamplerLabGuidancePulse"]
    assert prompt[pulse_id]["inputs"]["center"] == "auto"
    told = [(data, sid) for event, data, sid in page.sent if event == "samplerlab.sigma_c"]
    assert len(told) == 1, page.sent
    [(data, sid)] = told
    assert sid == page.client_id and data["node"] == pulse_id
    model, found = data["model"], data["sigma_c"]
    assert math.isfinite(found["host"]) and model["sigma_min"] < found["host"] < model["sigma_max"], (found, model)
    assert found["samples"][0] <= found["host"] <= found["samples"][1] and 0 < found["percent"] < 1
    [logged] = [float(m) for m in re.findall(r"sigma_c = ([0-9.e+-]+) as a host level", caplog.text)]
    assert found["host"] == pytest.approx(logged, rel=1e-3)
    top = data["percent"][max(range(len(data["weight"])), key=data["weight"].__getitem__)]
    assert abs(top - found["percent"]) <= 1 / len(data["percent"]) and max(data["weight"]) > min(data["weight"]) == 1.0
