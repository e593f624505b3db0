"""lab/reference_models.py: the registry of reference models (no ComfyUI needed)."""
import subprocess
import sys

import pytest
import torch

from samplerlab.lab import reference_models as R

F64 = torch.float64


def batch(name, n=2, seed=0):
    return torch.randn(n, *R.spec(name).shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("name", list(R.REGISTRY))
def test_flow_prediction_is_the_ve_prediction_by_change_of_variables(name):
    x, t = batch(name), torch.tensor([0.4, 0.7], dtype=F64)
    flow = R.predict(name, x, t, space="flow")
    ve = R.predict(name, x / (1 - t).view(-1, 1, 1, 1), t / (1 - t))
    assert flow.shape == x.shape and torch.isfinite(flow).all()
    assert torch.allclose(flow, ve, atol=1e-10)


@pytest.mark.parametrize("name", [n for n, s in R.REGISTRY.items() if s.classes])
def test_null_label_rows_are_unconditional_and_class_rows_conditional(name):
    spec, x, s = R.spec(name), batch(name, 3), torch.full((3,), 0.8, dtype=F64)
    mixed = R.predict(name, x, s, torch.tensor([1, spec.classes, 0]))
    assert torch.allclose(mixed[1:2], R.predict(name, x[1:2], s[1:2]))
    assert torch.allclose(mixed[0:1], R.load(name).model("ve", torch.tensor([1]))(x[0:1], s[0:1]))
    assert not torch.allclose(mixed[0], mixed[1])


def test_bad_input_names_the_expected_shape_and_labels():
    with pytest.raises(ValueError, match=r"\[B, 3, 16, 16\]"):
        R.predict("mixture", torch.zeros(1, 4, 16, 16), torch.ones(1))
    with pytest.raises(ValueError, match=r"must be in \[0, 4\]"):
        R.predict("mixture", batch("mixture", 1), torch.ones(1), torch.tensor([5]))
    with pytest.raises(ValueError, match="reference model must be one of"):
        R.spec("sdxl")


def test_models_are_built_once():
    assert R.load("field") is R.load("field")


def test_registry_import_is_fast_and_builds_nothing():
    """With torch loaded (as inside ComfyUI), importing the registry and ELS takes < 0.5 s and loads no data."""
    code = ("import time, sys, torch; t = time.perf_counter(); import samplerlab.lab.reference_models as R, samplerlab.lab.els; "
            "print(time.perf_counter() - t, R.load.cache_info().currsize, 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, built, sklearn = out.stdout.split()
    assert float(seconds) < 0.5 and built == "0" and sklearn == "False"
