"""k-diffusion's reference samplers and model wrappers (the lab's baselines), loaded without its package __init__.

Never imported inside ComfyUI. `import k_diffusion` imports every submodule (CLIP, clean-fid,
torchvision, ...) and its dependency tree pins numpy<2; the lab needs only
`sampling.py` and `external.py`: they are loaded from the installed package as submodules of an empty
package object. `utils.py` (which they import) needs torchvision only for image conversion helpers the
lab never calls; where torchvision cannot be imported (CPU-only machines get a CUDA wheel or none),
an empty `torchvision.transforms.functional` stands in while `utils.py` loads, and is removed again.
Install: `pip install --no-deps k-diffusion==0.1.1.post1` beside the `test` extra (scipy, torchsde, torchdiffeq).
"""
import importlib
import importlib.util
import os
import sys
import types


def load():
    """The k_diffusion package object with `utils`, `sampling` and `external` loaded, or None if not installed."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not any(os.path.exists(os.path.join(p, "external.py")) for p in spec.submodule_search_locations or ()):
        return None  # not installed, or another package of that name (ComfyUI's comfy/k_diffusion once comfy/ is on sys.path)
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["k_diffusion"] = pkg
    stand_in = {}
    try:
        importlib.import_module("torchvision.transforms.functional")
    except Exception:
        for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
            stand_in[name] = sys.modules.pop(name, None)
            sys.modules[name] = types.ModuleType(name)
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
        sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
    try:
        for sub in ("utils", "sampling", "external"):
            setattr(pkg, sub, importlib.import_module(f"k_diffusion.{sub}"))
    finally:
        for name, old in stand_in.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    return pkg

