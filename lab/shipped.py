"""Networks whose weights ship in lab/weights/: a safetensors file (read with `safetensors` only, never
pickle) and a manifest JSON beside it (data, command, seed, steps, loss, sha256, versions, wall time).

`load` checks the file's sha256 against its manifest before reading a byte of it as weights; a missing
or altered file is an error naming the file and the expected sha256.
"""
import hashlib
import json
import platform
import time
from pathlib import Path

import torch

WEIGHTS = Path(__file__).resolve().parent / "weights"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_path(path):
    return Path(path).with_suffix(".json")


def load(path):
    """(state dict of float32 tensors, manifest dict) of a shipped network at `path` (a .safetensors file)."""
    path = Path(path)
    mpath = manifest_path(path)
    if not mpath.is_file():
        raise FileNotFoundError(f"weights manifest {mpath} is missing (it states the sha256 of {path.name})")
    manifest = json.loads(mpath.read_text())
    expected = manifest["sha256"]
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} is missing; expected a file with sha256 {expected}")
    got = sha256(path)
    if got != expected:
        raise ValueError(f"weights file {path} is corrupted: sha256 {got}, expected {expected}")
    from safetensors.torch import load_file

    return load_file(str(path)), manifest


def save(module, path, manifest):
    """Write module's state dict (float32, contiguous) to `path` and the manifest beside it (`save_tensors`);
    returns the full manifest."""
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in module.state_dict().items()}
    return save_tensors(state, path, {**manifest, "parameters": sum(p.numel() for p in module.parameters())})


def save_tensors(state, path, manifest):
    """Write the tensors `state` to `path` (safetensors) and the manifest (plus file, bytes, sha256, versions)
    beside it; returns the full manifest."""
    import sklearn
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    manifest = {**manifest, "file": path.name, "bytes": path.stat().st_size, "sha256": sha256(path),
                "torch": torch.__version__, "scikit_learn": sklearn.__version__, "python": platform.python_version(),
                "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    manifest_path(path).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
