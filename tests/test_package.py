"""The pack as a package: importable without ComfyUI, pure core, generated docs in sync, metadata."""
import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from samplerlab.lab import docs
from samplerlab.schedulers import REGISTRY as SCHEDULERS
from samplerlab.schedulers.registry import for_denoise

ROOT = Path(__file__).resolve().parents[1]


def test_import_without_comfyui_registers_nothing():
    code = "import sys, samplerlab, samplerlab.samplers, samplerlab.lab.cli; assert not [m for m in sys.modules if m == 'comfy' or m.startswith('comfy.')]"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("package", ["samplers", "schedulers", "lab"])
def test_core_never_imports_comfy(package):
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "comfy" or n.startswith(("comfy.", "comfy_")) for n in names), f"{path} imports {names}"


def test_readme_tables_match_registries():
    assert docs.block() in (ROOT / "README.md").read_text(), "README tables are stale: run `python -m samplerlab docs`"


def test_metadata():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["tool"]["comfy"]["PublisherId"] and meta["project"]["name"] == "samplerlab"
    reqs = (ROOT / "requirements.txt").read_text().split()
    assert not [r for r in reqs if r.split("=")[0].split(">")[0].strip().lower() in {"torch", "torchvision", "torchaudio", "k-diffusion"}]
    assert (ROOT / "web").is_dir() and list((ROOT / "web").glob("*.js"))


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_schedules_descend_to_zero(name):
    for n in (1, 2, 7, 30):
        s = SCHEDULERS[name].fn(n, 0.03, 14.6)
        assert len(s) == n + 1 and s[-1] == 0 and s[0] == pytest.approx(14.6) and bool((s[:-1] > s[1:]).all())


@pytest.mark.parametrize("bad", [dict(n=0), dict(sigma_min=0.0), dict(sigma_min=20.0), dict(sigma_max=float("inf")), dict(n=2.5)])
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_schedule_bad_input_named(name, bad):
    args = {"n": 5, "sigma_min": 0.03, "sigma_max": 14.6, **bad}
    with pytest.raises(ValueError, match="|".join(bad)):
        SCHEDULERS[name].fn(**args)


def test_denoise_tail_as_basic_scheduler():
    sched = lambda n: SCHEDULERS["karras"].fn(n, 0.03, 14.6)
    torch.testing.assert_close(for_denoise(sched, 10, 0.5), sched(20)[-11:])
    assert torch.equal(for_denoise(sched, 10, 1.0), sched(10))
    with pytest.raises(ValueError, match="denoise"):
        for_denoise(sched, 10, 0.0)
