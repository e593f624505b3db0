"""nodes/reference.py inside a real ComfyUI: the Reference MODEL predicts the lab model exactly (EPS and FLOW),
its conditioning drives ComfyUI's own CFG, and bad input is a clear error (runs only with COMFYUI_PATH)."""
import pytest

from comfy_host import comfy, needs_comfyui

pytestmark = needs_comfyui


@pytest.fixture(scope="module")
def pack():
    return comfy()[1]


@pytest.mark.parametrize("variant", ["eps", "flow"])
@pytest.mark.parametrize("name", ["digits_unet", "mixture", "field", "digits_els"])
def test_one_euler_step_with_cfg_is_the_reference_cfg_prediction(pack, name, variant):
    import comfy.sample
    import torch

    ref, R = pack.nodes.reference, pack.lab.reference_models
    spec = R.spec(name)
    mp = ref.ReferenceModel.execute(name, variant).args[0]
    label = 1 if spec.classes else -1
    pos, neg = ref.ReferenceCondition.execute(mp, label).args
    latent = ref.ReferenceLatent.execute(mp, 2).args[0]["samples"]
    noise = comfy.sample.prepare_noise(latent, 3)
    cfg = 2.5
    out = comfy.sample.sample(mp, noise, 1, cfg, "euler", "simple", pos, neg, latent)
    ms = mp.get_model_object("model_sampling")
    s0 = ms.sigma_max.reshape(1)
    x = ms.noise_scaling(s0, noise, latent, max_denoise=True).double()
    space = "flow" if variant == "flow" else "ve"
    sig = s0.double().expand(2)
    if spec.classes:
        c = R.predict(name, x, sig, torch.full((2,), label), space)
        u = R.predict(name, x, sig, None, space)
        want = u + cfg * (c - u)
    else:
        want = R.predict(name, x, sig, None, space)
    assert torch.allclose(out.double(), want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_bad_input_is_a_clear_error(pack):
    import comfy.sample
    import torch

    ref = pack.nodes.reference
    mp = ref.ReferenceModel.execute("mixture", "eps").args[0]
    with pytest.raises(ValueError, match=r"label must be 0\.\.3 or -1"):
        ref.ReferenceCondition.execute(mp, 4)
    field = ref.ReferenceModel.execute("field", "flow").args[0]
    with pytest.raises(ValueError, match="unconditional"):
        ref.ReferenceCondition.execute(field, 0)
    pos, neg = ref.ReferenceCondition.execute(mp, 0).args
    wrong = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"\[B, 3, 16, 16\].*width 128, height 128"):
        comfy.sample.sample(mp, torch.randn(1, 3, 8, 8), 2, 1.0, "euler", "simple", pos, neg, wrong)
    with pytest.raises(ValueError, match="Reference condition made for it"):
        comfy.sample.sample(mp, torch.randn(1, 3, 16, 16), 2, 1.0, "euler", "simple", [[torch.zeros(1, 1, 8), {}]], neg, torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="from the Reference model node"):
        ref.ReferenceCondition.execute(object(), 0)
    with pytest.raises(ValueError, match=r"\[B, 1 or 3, H, W\]"):
        ref.ReferenceDecode.execute({"samples": torch.zeros(1, 4, 8, 8)}, 2)


def test_decode_and_empty_latent_fit_the_model(pack):
    import torch

    ref = pack.nodes.reference
    mp = ref.ReferenceModel.execute("mixture", "eps").args[0]
    latent = ref.ReferenceLatent.execute(mp, 3).args[0]
    assert latent["samples"].shape == (3, 3, 16, 16)
    img = ref.ReferenceDecode.execute({"samples": torch.linspace(-2, 2, 3 * 16 * 16).reshape(1, 3, 16, 16)}, 4).args[0]
    assert img.shape == (1, 64, 64, 3) and float(img.min()) == 0.0 and float(img.max()) == 1.0
    assert mp.get_model_object("latent_format").latent_channels == 3
