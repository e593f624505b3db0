"""The WebUI registrations against a real A1111 / Forge / reForge checkout (A1111_PATH, FORGE_PATH, REFORGE_PATH).

Each host runs in its own Python process (`python tests/test_hosts_webui.py ROOT FLAVOUR`, printing JSON),
since a WebUI brings its own `modules` and `k_diffusion` packages. There the WebUI's real sampler modules
are imported (sd_samplers, sd_samplers_common, sd_samplers_kdiffusion, sd_samplers_cfg_denoiser,
sd_samplers_extra, sd_schedulers; its k-diffusion; Forge's backend predictors); everything else they import
(shared state, UI, VAE previews, prompt parser, memory management, torchvision) is an inert stand-in.
Then `register_into` is called twice, and an sl_ sampler with an sl_ schedule is run through the
WebUI's own KDiffusionSampler.sample (its get_sigmas, noise scaling and call of the sampler function),
the CFG denoiser's forward replaced by an exact Gaussian denoiser; the result must be the registry's
own run of the same sampler, schedule, denoiser, space and seed. Without the variable the test is skipped.
"""
import importlib.abc
import importlib.machinery
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

HOSTS = {"a1111": "A1111_PATH", "forge": "FORGE_PATH", "reforge": "REFORGE_PATH"}
REAL = {"modules.sd_samplers", "modules.sd_samplers_common", "modules.sd_samplers_kdiffusion", "modules.sd_schedulers",
        "modules.sd_samplers_extra", "modules.sd_samplers_cfg_denoiser", "backend.modules.k_prediction",
        "modules.sd_samplers_kdiffusion_smea", "backend.sampling.sampling_function", "backend.sampling.condition",
        "backend.patcher.base"}
PACKAGES = {"modules": "modules", "modules_forge": "modules_forge", "backend": "backend",
            "backend.modules": "backend/modules", "backend.sampling": "backend/sampling", "backend.patcher": "backend/patcher"}
STUBBED = ("modules", "modules_forge", "backend", "ldm", "sgm", "ldm_patched", "gradio", "lark")
SIGMA_DATA = 0.5


@pytest.mark.parametrize("flavour", sorted(HOSTS))
def test_webui_registration(flavour):
    root = os.environ.get(HOSTS[flavour])
    if not root:
        pytest.skip(f"{HOSTS[flavour]} is not set (a checkout of the {flavour} WebUI; its code is never committed)")
    out = subprocess.run([sys.executable, __file__, root, flavour], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["added"] == result["expected"] and result["second_call_added"] == 0
    assert result["samplers_visible"] and result["schedulers_listed"]
    assert result["infotext"] == ["sl_exp_pc", "sl_critical_window"]  # an infotext's Sampler / Schedule type read back
    if flavour == "forge":
        pulse = result["pulse"]
        assert pulse["max_err"] < 1e-5 and pulse["chained_scales_ok"] and pulse["original_untouched"], pulse
        assert pulse["uncond_where_unguided"] == 0 and pulse["uncond_where_guided"] > 0 and 0 < pulse["guided_levels"] < 7, pulse
    for run in result["runs"]:
        assert run["space"] == run["want_space"], run
        assert run["rel_err"] < 1e-6, run
        assert run["sigmas_match"], run


class Stub(types.ModuleType):
    """An inert stand-in: every attribute is another stand-in, callable, iterable (empty), false."""

    def __init__(self, name="stub"):
        super().__init__(name)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return Stub(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        return Stub(self.__name__ + "()")

    def __iter__(self):
        return iter(())

    def __bool__(self):
        return False

    def __lt__(self, other):
        return False

    __gt__ = __lt__


class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Stand-ins for the WebUI modules the sampler modules import but the test does not need."""

    def __init__(self, root):
        self.root = root

    def find_spec(self, name, path=None, target=None):
        if name in REAL or name.split(".")[0] not in STUBBED:
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec):
        if spec.name in PACKAGES:
            module = types.ModuleType(spec.name)
            module.__path__ = [str(self.root / PACKAGES[spec.name])]
            return module
        stub = Stub(spec.name)
        stub.__path__ = []  # a stand-in may have stand-in submodules
        return stub

    def exec_module(self, module):
        pass


class Opts(types.SimpleNamespace):
    def __getattr__(self, name):
        return False


def install_shared(sd_model):
    import torch

    shared = types.ModuleType("modules.shared")
    shared.opts = Opts(hide_samplers=[], sd_sampling="A1111", rho=0, sigma_min=0, sigma_max=0, eta_ancestral=1.0,
                       img2img_extra_noise=0, enable_quantization=False, live_preview_content="Combined")
    shared.state = types.SimpleNamespace(interrupted=False, skipped=False, sampling_step=0, sampling_steps=0)
    shared.total_tqdm = types.SimpleNamespace(update=lambda *a: None)
    shared.sd_model, shared.device, shared.batch_cond_uncond = sd_model, torch.device("cpu"), True
    devices = types.ModuleType("modules.devices")
    devices.cpu = devices.device = torch.device("cpu")
    devices.test_for_nans = lambda *a: None
    sys.modules["modules.shared"], sys.modules["modules.devices"] = shared, devices
    return shared


def gaussian(space):
    """The exact denoiser of data N(0, SIGMA_DATA^2) per pixel, at VE level sigma or flow level t."""
    def denoise(x, sigma, **extra):
        s = sigma.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))
        a = 1 - s if space == "flow" else 1
        return x * a * SIGMA_DATA ** 2 / (a * a * SIGMA_DATA ** 2 + s * s)
    return denoise


def models(flavour, root):
    """(label, fake sd_model, the space it should be read as) per model family the host's k-diffusion path serves."""
    import torch
    ns = types.SimpleNamespace
    if flavour == "forge":
        from backend.modules import k_prediction
        unet = lambda predictor: ns(model=ns(predictor=predictor))  # noqa: E731
        return [("eps", ns(is_sdxl=False, forge_objects=ns(unet=unet(k_prediction.Prediction(prediction_type="epsilon")))), "ve"),
                ("flow", ns(is_sdxl=False, forge_objects=ns(unet=unet(k_prediction.PredictionDiscreteFlow(shift=3.0)))), "flow")]
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    model = ns(is_sdxl=False, parameterization="eps", alphas_cumprod=torch.cumprod(1 - betas, 0).float(),
               model=ns(conditioning_key="crossattn"), cond_stage_key="txt")
    model.apply_model = lambda x, t, cond: torch.zeros_like(x)
    if flavour == "reforge":  # its UNet carries a ComfyUI-style model_sampling (ldm_patched); stand-in of that class
        model.forge_objects = ns(unet=ns(model=ns(model_sampling=type("EPS", (), {})())))
    return [("eps", model, "ve")]


def light_package(name, path):
    """An empty package object over `path`: its submodules load, its heavy __init__ does not."""
    package = types.ModuleType(name)
    package.__path__ = [str(path)]
    sys.modules[name] = package
    if "." in name:
        parent, child = name.rsplit(".", 1)
        setattr(sys.modules[parent], child, package)


def light_k_diffusion(root):
    """The host's own k-diffusion (Forge: k_diffusion/; A1111: repositories/k-diffusion; reForge: k_diff/), else
    the installed one, as a package without its __init__ (which imports training code)."""
    import importlib.util

    if (root / "k_diff" / "k_diffusion").is_dir():
        light_package("k_diff", root / "k_diff")
        light_package("k_diff.k_diffusion", root / "k_diff" / "k_diffusion")
    for path in (root / "k_diffusion", root / "repositories" / "k-diffusion" / "k_diffusion"):
        if path.is_dir():
            return light_package("k_diffusion", path)
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        raise SystemExit("no k-diffusion for the WebUI")
    light_package("k_diffusion", spec.submodule_search_locations[0])


class P(types.SimpleNamespace):
    def __getattr__(self, name):
        return None


def probe(root, flavour):
    import torch

    root = Path(root).resolve()
    sys.meta_path.insert(0, Finder(root))
    sys.path.insert(0, str(root))
    light_k_diffusion(root)
    try:
        import diffusers  # noqa: F401  (before the torchvision stand-ins: diffusers probes for torchvision)
    except ImportError:
        pass
    for name in ("torchvision", "torchvision.transforms"):
        light_package(name, root / "absent")
    for name in ("torchvision.transforms.functional", "diffusers.pipelines.flux.pipeline_flux"):
        sys.modules[name] = Stub(name)  # image helpers; Flux's shift formula (Forge's Flux predictor, unused here)
    shared = install_shared(None)
    alter = sys.modules["modules_forge.forge_alter_samplers"] = Stub("modules_forge.forge_alter_samplers")
    alter.AlterSampler, alter.samplers_data_alter = type("AlterSampler", (), {}), []  # reForge's isinstance check
    from modules import sd_samplers, sd_samplers_common, sd_samplers_kdiffusion, sd_schedulers

    from samplerlab.hosts import webui
    from samplerlab.samplers import REGISTRY
    from samplerlab.schedulers import REGISTRY as SCHEDULES

    for name in ("sampling_prepare", "sampling_cleanup"):  # Forge's GPU memory management around a run
        if hasattr(sd_samplers_kdiffusion, name):
            setattr(sd_samplers_kdiffusion, name, lambda *a, **k: None)
    before = (len(sd_samplers.all_samplers), len(sd_schedulers.schedulers))
    names = webui.register_into(sd_samplers, sd_samplers_common, sd_samplers_kdiffusion, sd_schedulers)
    middle = (len(sd_samplers.all_samplers), len(sd_schedulers.schedulers))
    webui.register_into(sd_samplers, sd_samplers_common, sd_samplers_kdiffusion, sd_schedulers)
    after = (len(sd_samplers.all_samplers), len(sd_schedulers.schedulers))
    visible = set(sd_samplers.visible_sampler_names())
    result = {"added": sum(middle) - sum(before), "expected": len(REGISTRY) + len(SCHEDULES),
              "second_call_added": sum(after) - sum(middle),
              "samplers_visible": all(webui.PREFIX + n in visible for n in REGISTRY),
              "schedulers_listed": all(sd_schedulers.schedulers_map[webui.PREFIX + n].label == webui.PREFIX + n
                                       for n in SCHEDULES),
              "infotext": list(sd_samplers.get_sampler_and_scheduler("sl_exp_pc", "sl_critical_window")),
              "names": names, "runs": []}
    for family, sd_model, want in models(flavour, root):
        shared.sd_model = sd_model
        for sampler, schedule in (("dpmpp_2m", "karras"), ("poisson_flow", "exponential"), ("euler", "linear_t")):
            result["runs"].append(run_one(sd_samplers, sampler, schedule, family, sd_model, want))
    if flavour == "forge":
        result["pulse"] = forge_pulse()
    print(json.dumps(result))


def forge_pulse():
    """A pulse patch on Forge's real ModelPatcher, run through Forge's real sampling_function_inner."""
    import torch
    from backend.modules.k_prediction import Prediction
    from backend.patcher.base import ModelPatcher
    from backend.sampling.condition import Condition
    from backend.sampling.sampling_function import sampling_function_inner

    from samplerlab.hosts import forge
    from samplerlab.samplers.guidance import weight

    calls = []

    class Net(torch.nn.Module):
        """Exact Gaussian denoiser whose mean is the conditioning's mean (cond 1, uncond 0)."""

        def __init__(self):
            super().__init__()
            self.predictor = Prediction(prediction_type="epsilon")

        def memory_required(self, input_shape):
            return 0

        def apply_model(self, x, t, c_crossattn=None, transformer_options=None, **kw):
            calls.append((float(t[0]), float(c_crossattn.mean())))
            return direct(x, t, c_crossattn)

    def direct(x, t, c):
        mean = c.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)
        return mean + gaussian("ve")(x - mean, t)

    net = Net()
    unet = ModelPatcher(net, torch.device("cpu"), torch.device("cpu"), size=1)
    seen = []
    unet.set_model_sampler_cfg_function(lambda args: seen.append(args["cond_scale"]) or args["input"] - (
        args["uncond_denoised"] + args["cond_scale"] * (args["cond_denoised"] - args["uncond_denoised"])))
    schedule = forge.pulse_schedule(unet, "gaussian", 0.5, 0.5, 1.0, 0.2, 0.6)
    patched = forge.pulse_patch(unet, schedule)
    plain = forge.pulse_patch(ModelPatcher(net, torch.device("cpu"), torch.device("cpu"), size=1), schedule)
    c_on, c_off = torch.ones([1, 4, 8]), torch.zeros([1, 4, 8])
    cond = [{"model_conds": {"c_crossattn": Condition(c_on)}}]
    uncond = [{"model_conds": {"c_crossattn": Condition(c_off)}}]
    x = torch.randn([1, 4, 8, 8], generator=torch.Generator().manual_seed(2)) * 3
    out = {"max_err": 0.0, "uncond_where_unguided": 0, "uncond_where_guided": 0, "guided_levels": 0,
           "chained_scales_ok": True}
    for sigma in (14.0, 6.0, 2.5, 1.2, 0.6, 0.2, 0.05):
        s = torch.tensor([sigma])
        w = float(weight(schedule, sigma, peak=5.0))
        want = direct(x, s, c_off) + w * (direct(x, s, c_on) - direct(x, s, c_off))
        for model in (plain, patched):
            del calls[:], seen[:]
            got = sampling_function_inner(model.model, x, s, uncond, cond, 5.0, model.model_options)
            out["max_err"] = max(out["max_err"], float((got - want).abs().max()))
            uncond_calls = sum(1 for _, m in calls if m == 0)
            out["uncond_where_guided" if w != 1 else "uncond_where_unguided"] += uncond_calls
            if model is patched and w != 1:
                out["chained_scales_ok"] &= len(seen) == 1 and abs(seen[0] - w) < 1e-5 * w
        out["guided_levels"] += w != 1
    out["original_untouched"] = unet.model_options.get("sampler_pre_cfg_function") is None
    return out


def run_one(sd_samplers, sampler, schedule, family, sd_model, want):
    """One txt2img sampling through the WebUI's KDiffusionSampler.sample and the registry's own run."""
    import torch

    from samplerlab.hosts import webui
    from samplerlab.samplers import REGISTRY
    from samplerlab.schedulers import REGISTRY as SCHEDULES

    made = sd_samplers.create_sampler(webui.PREFIX + sampler, sd_model)
    wrap = made.model_wrap
    seen = {}

    def forward(x, sigma, **extra):
        seen.setdefault("space", webui.space_of(made.model_wrap_cfg))
        return gaussian(want)(x, sigma)

    made.model_wrap_cfg.forward = forward
    steps, seed = 8, 1234
    p = P(scheduler=webui.PREFIX + schedule, hr_scheduler=None, is_hr_pass=False, steps=steps, cfg_scale=5.0, eta=None,
          sampler_noise_scheduler_override=None, extra_generation_params={}, seeds=[seed, seed + 1], s_min_uncond=0.0,
          rng=None, scripts=None)
    noise = torch.randn([2, 4, 8, 8], generator=torch.Generator().manual_seed(7))
    got = made.sample(p, noise, conditioning=None, unconditional_conditioning=None, steps=steps)
    sigma_min, sigma_max = float(wrap.sigmas[0]), float(wrap.sigmas[-1])
    sigmas = SCHEDULES[schedule].fn(steps, sigma_min, sigma_max, space=want).float()
    webui_sigmas = made.get_sigmas(p, steps)
    x = noise * sigmas[0] if want == "ve" else noise
    ref = REGISTRY[sampler].fn(gaussian(want), x, sigmas, extra_args={"seed": seed}, disable=True, space=want)
    return {"family": family, "sampler": sampler, "schedule": schedule, "space": seen.get("space"), "want_space": want,
            "rel_err": float((got - ref).norm() / ref.norm()),
            "sigmas_match": bool(torch.allclose(webui_sigmas.float(), sigmas, rtol=1e-5, atol=1e-7))}


if __name__ == "__main__":
    probe(sys.argv[1], sys.argv[2])


FAKE_WEBUI = '''
import sys, types
from collections import namedtuple
m = types.ModuleType("modules"); m.__path__ = []
common = types.ModuleType("modules.sd_samplers_common")
common.SamplerData = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])
kd = types.ModuleType("modules.sd_samplers_kdiffusion")
kd.KDiffusionSampler = lambda fn, model: (fn, model)
samplers = types.ModuleType("modules.sd_samplers")
samplers.all_samplers, samplers.all_samplers_map, samplers.calls = [], {}, []
samplers.set_samplers = lambda: samplers.calls.append(1)
sched = types.ModuleType("modules.sd_schedulers")
sched.Scheduler = lambda *a, **k: types.SimpleNamespace(name=a[0], label=a[1], function=a[2], **k)
sched.schedulers, sched.schedulers_map = [], {}
for name, mod in (("sd_samplers_common", common), ("sd_samplers_kdiffusion", kd), ("sd_samplers", samplers),
                  ("sd_schedulers", sched)):
    sys.modules["modules." + name] = mod
    setattr(m, name, mod)
sys.modules["modules"] = m
import runpy, json
for _ in range(2):  # the WebUI runs scripts again on "Reload UI"
    runpy.run_path(sys.argv[1])
print(json.dumps({"package": sys.modules["samplerlab"].__file__, "samplers": [s.name for s in samplers.all_samplers],
                  "schedulers": [s.label for s in sched.schedulers], "set_samplers": len(samplers.calls)}))
'''


@pytest.mark.parametrize("switch", ["", "1"])
def test_extension_entry_loads_package_from_any_folder_name(tmp_path, switch):
    """scripts/samplerlab_webui.py in a clone named otherwise (as "Install from URL" names it) imports this
    checkout as `samplerlab` with nothing on sys.path, registers once over two runs, and honours the switch."""
    import shutil

    from samplerlab.samplers import REGISTRY
    from samplerlab.schedulers import REGISTRY as SCHEDULES

    repo = Path(__file__).resolve().parents[1]
    clone = tmp_path / "sd-webui-samplerlab-main"
    shutil.copytree(repo, clone, ignore=shutil.ignore_patterns(".git", "__pycache__", "docs", "example_workflows"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["SAMPLERLAB_NO_REGISTER"] = switch
    out = subprocess.run([sys.executable, "-c", FAKE_WEBUI, str(clone / "scripts" / "samplerlab_webui.py")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(result["package"]).parent == clone
    if switch:
        assert result["samplers"] == [] and result["schedulers"] == []
    else:
        assert result["samplers"] == ["sl_" + n for n in sorted(REGISTRY)]
        assert result["schedulers"] == ["sl_" + n for n in sorted(SCHEDULES)]


def test_space_is_read_from_the_model_chain():
    """Forge predictor, ComfyUI-style model_sampling (own, .model, Forge UNet), A1111 parameterization; else an error."""
    from samplerlab.hosts.webui import space_of

    ns = types.SimpleNamespace
    const, eps = type("CONST", (), {}), type("EPS", (), {})
    flow_ms = type("ModelSamplingDiscreteFlow", (const,), {})()
    assert space_of(ns(inner_model=ns(predictor=ns(prediction_type="const")))) == "flow"
    assert space_of(ns(inner_model=ns(predictor=ns(prediction_type="v_prediction")))) == "ve"
    assert space_of(ns(inner_model=ns(inner_model=ns(model=ns(model_sampling=flow_ms))))) == "flow"
    assert space_of(ns(inner_model=ns(forge_objects=ns(unet=ns(model=ns(model_sampling=eps())))))) == "ve"
    assert space_of(ns(inner_model=ns(inner_model=ns(parameterization="v")))) == "ve"
    with pytest.raises(ValueError, match="parametrisation"):
        space_of(ns(inner_model=ns()))


def test_forge_pulse_schedule_from_percents():
    """Percents through the predictor's percent_to_sigma (flow levels turned VE); bad settings name the parameter."""
    import math

    from samplerlab.hosts import forge

    flow = types.SimpleNamespace(model=types.SimpleNamespace(predictor=types.SimpleNamespace(
        prediction_type="const", percent_to_sigma=lambda q: 1.0 - q)))
    pulse = forge.pulse_schedule(flow, "cosine", 0.75, 0.4, 1.5, 0.2, 0.6)
    assert math.isclose(pulse.center, 0.25 / 0.75) and (pulse.shape, pulse.width, pulse.base) == ("cosine", 0.4, 1.5)
    interval = forge.pulse_schedule(flow, "interval", 0.5, 0.5, 1.0, 0.2, 0.6)
    assert math.isclose(interval.sigma_hi, 0.8 / 0.2) and math.isclose(interval.sigma_lo, 0.4 / 0.6)
    for bad, match in ((("ring", 0.5, 0.5, 1.0, 0.2, 0.6), "shape"), (("gaussian", 1.0, 0.5, 1.0, 0.2, 0.6), "center_percent"),
                       (("interval", 0.5, 0.5, 1.0, 0.6, 0.2), "end_percent")):
        with pytest.raises(ValueError, match=match):
            forge.pulse_schedule(flow, *bad)
