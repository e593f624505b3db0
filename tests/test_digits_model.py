"""The shipped digits denoiser and classifier: loading (sha256, corrupted or missing files), the
denoiser's interface and bad input, VE/flow equivalence, CFG, held-out accuracy, reproducible training,
lazy import, and the trained model as a lab problem."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from samplerlab.lab import classifier, digit_metrics, digits, digits_lab, shipped, trained
from samplerlab.lab.runner import registry_contenders, run_grid

F64 = torch.float64


@pytest.mark.parametrize("path", [trained.WEIGHTS, classifier.WEIGHTS])
def test_shipped_weights_match_their_manifest(path):
    manifest = json.loads(shipped.manifest_path(path).read_text())
    assert shipped.sha256(path) == manifest["sha256"]
    assert path.stat().st_size < 4_000_000 and manifest["parameters"] < 500_000
    assert manifest["command"].startswith("python -m samplerlab train ")


def _copy(tmp_path, path):
    out = tmp_path / path.name
    shutil.copy(path, out)
    shutil.copy(shipped.manifest_path(path), shipped.manifest_path(out))
    return out, json.loads(shipped.manifest_path(path).read_text())["sha256"]


def test_corrupted_or_missing_weights_name_the_file_and_sha256(tmp_path):
    path, sha = _copy(tmp_path, trained.WEIGHTS)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{path.name}.*corrupted.*expected {sha}"):
        trained.model("ve", path=path)(torch.zeros(1, 1, 16, 16), torch.ones(1))
    path.unlink()
    with pytest.raises(FileNotFoundError, match=f"{path.name}.*missing.*{sha}"):
        trained.network(path=path)


def test_denoiser_shape_dtype_and_bad_input():
    model = trained.model("ve")
    x = torch.randn(3, 1, 16, 16)
    d = model(x, torch.tensor([0.5, 2.0, 10.0]), cond=torch.tensor([0, 4, 9]))
    assert d.shape == x.shape and d.dtype == x.dtype and torch.isfinite(d).all()
    assert model(x.double(), torch.tensor(1.0), cond=7).dtype == F64
    with pytest.raises(ValueError, match=r"\[B, 1, 16, 16\]"):
        model(torch.randn(3, 3, 16, 16), torch.ones(3))
    with pytest.raises(ValueError, match=r"\[B, 1, 16, 16\]"):
        model(torch.randn(3, 1, 32, 32), torch.ones(3))
    for bad in (10, -1, torch.tensor([0, 1, 12])):
        with pytest.raises(ValueError, match=r"0\.\.9"):
            model(x, torch.ones(3), cond=bad)
    with pytest.raises(ValueError, match="integers"):
        model(x, torch.ones(3), cond=torch.tensor([0.5, 1.0, 2.0]))
    with pytest.raises(ValueError, match="cfg"):
        model(x, torch.ones(3), cond=1, cfg=-1.0)


def test_flow_form_is_the_exact_change_of_variables():
    g = torch.Generator().manual_seed(1)
    x_ve = torch.randn(4, 1, 16, 16, generator=g, dtype=F64) * 2
    sigma = torch.tensor([0.01, 0.3, 2.0, 40.0], dtype=F64)
    t = sigma / (1 + sigma)
    labels = torch.tensor([1, 2, 3, 4])
    d_ve = trained.model("ve")(x_ve, sigma, cond=labels, cfg=2.5)
    d_flow = trained.model("flow")(x_ve * (1 - t).reshape(-1, 1, 1, 1), t, cond=labels, cfg=2.5)
    torch.testing.assert_close(d_flow, d_ve, rtol=1e-10, atol=1e-10)
    at_one = trained.model("flow")(x_ve[:1], torch.ones(1, dtype=F64), cond=3)
    assert torch.isfinite(at_one).all()


def test_cfg_one_is_the_conditional_model_and_zero_the_unconditional():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 1, 16, 16, generator=g, dtype=F64)
    sigma = torch.tensor([0.2, 0.7, 1.5, 5.0], dtype=F64)
    labels = torch.tensor([0, 3, 5, 8])
    net = trained.network(F64)
    with torch.no_grad():
        cond = net(x, torch.ones(4, dtype=F64), sigma, labels)
        null = net(x, torch.ones(4, dtype=F64), sigma, torch.full((4,), digits.CLASSES))
    model = trained.model("ve")
    torch.testing.assert_close(model(x, sigma, cond=labels, cfg=1.0), cond, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model(x, sigma, cond=labels, cfg=0.0), null, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model(x, sigma), null)
    assert (cond - null).abs().max() > 1e-3, "the label must change the prediction"


def test_classifier_heldout_accuracy():
    x, y = digits.load("heldout")
    acc, (lo, hi) = digit_metrics.accuracy(x, y)
    assert acc >= 0.97 and lo < acc < hi
    assert json.loads(shipped.manifest_path(classifier.WEIGHTS).read_text())["heldout_accuracy"] == pytest.approx(acc)


def test_frechet_agrees_with_the_closed_form():
    pytest.importorskip("torchmetrics", reason="the Frechet distance is torchmetrics' (the lab and test extras)")
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(3)
    fa = torch.randn(300, 6, generator=g, dtype=F64)
    fb = 0.5 + torch.randn(200, 6, generator=g, dtype=F64) @ torch.diag(torch.linspace(0.5, 2, 6, dtype=F64))
    ca, cb = torch.cov(fa.T).numpy(), torch.cov(fb.T).numpy()
    root = scipy_linalg.sqrtm(ca @ cb).real
    expected = float(((fa.mean(0) - fb.mean(0)) ** 2).sum()) + float((ca + cb - 2 * root).trace())
    value, (lo, hi) = digit_metrics.frechet(fa, fb, boot=20)
    assert value == pytest.approx(expected, rel=1e-6)
    assert lo < value < hi


def test_training_is_deterministic_in_the_seed():
    a, fa = trained.train(steps=3, seed=5, batch=8)
    b, fb = trained.train(steps=3, seed=5, batch=8)
    c, _ = trained.train(steps=3, seed=6, batch=8)
    assert fa == fb
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert any(not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values()))
    n1, l1 = classifier.train(steps=3, seed=5, batch=8)
    n2, l2 = classifier.train(steps=3, seed=5, batch=8)
    assert l1 == l2 and all(torch.equal(p, q) for p, q in zip(n1.parameters(), n2.parameters()))


def test_importing_the_pack_loads_no_weights_and_is_fast():
    code = ("import time, sys, torch\n"
            "t = time.process_time()\n"
            "import samplerlab, samplerlab.lab.digits_lab, samplerlab.lab.trained as tr, samplerlab.lab.classifier as cl\n"
            "dt = time.process_time() - t\n"
            "import samplerlab.lab.cli\n"
            "assert tr._load.cache_info().currsize == 0 and cl._load.cache_info().currsize == 0\n"
            "assert not {'sklearn', 'torchmetrics', 'safetensors.torch'} & set(sys.modules), sys.modules.keys()\n"
            "assert dt < 0.5, dt\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_digits_problem_in_the_runner():
    problem = trained.Digits()
    problem.reference_steps = 24
    (rec,) = run_grid(problem, registry_contenders(["heun"]), ["karras"], [16], range(2), "ve")
    assert rec.problem == "digits" and rec.nfe == 15 and 0 < rec.error < 1
    x_T, labels = problem.draw([0, 1], "flow")
    assert x_T.shape == (2, 1, 16, 16) and labels.shape == (2,)


def test_samples_depend_on_their_own_seed_only():
    a = digits_lab.sample([3, 7], [11, 12], "euler", 4)
    b = digits_lab.sample([5, 7], [13, 12], "euler", 4)
    torch.testing.assert_close(a[1], b[1])


def test_digits_eval_command_writes_figures(tmp_path):
    pytest.importorskip("torchmetrics", reason="the Frechet distance is torchmetrics' (the lab and test extras)")
    from samplerlab.lab.cli import main

    out = tmp_path / "eval.json"
    main(["digits-eval", "--sampler", "euler", "--steps", "3", "--cfg", "1", "2", "--per-class", "2", "--boot", "5",
          "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["command"].startswith("python -m samplerlab digits-eval --sampler euler --steps 3 --cfg 1 2")
    for row in result["rows"]:
        assert row["samples"] == 20 and 0 <= row["accuracy"] <= 1 and row["frechet"] > 0
        assert row["accuracy_ci"][0] <= row["accuracy"] <= row["accuracy_ci"][1]
    assert out.with_suffix(".png").stat().st_size > 1000
