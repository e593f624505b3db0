"""The digits data set: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes, read from
the package on disk, never downloaded), upsampled to 16x16 and scaled to [-1, 1], one channel.

Pixels 0..16 are scaled to [0, 1], upsampled bilinearly (torch's `interpolate`, align_corners=False: a
convex combination, so values stay in range), then mapped to [-1, 1]. The split is fixed: a permutation
of the 1797 indices by `torch.Generator().manual_seed(SPLIT_SEED)`; its first HELD_OUT indices are the
held-out set, the rest the training set.

The 1797 raw images (pixels 0..16, uint8) and labels ship in lab/weights/digits8x8.safetensors (115 kB; the
UCI "Optical Recognition of Handwritten Digits" set, CC BY 4.0, as scikit-learn bundles it), read with
safetensors after a sha256 check (lab/shipped.py), so ComfyUI, which has no scikit-learn, loads them too.
`python -m samplerlab.lab.digits` rewrites the file and its manifest from scikit-learn's copy.
"""
from functools import lru_cache

import torch

from . import shipped

SIZE = 16
CLASSES = 10
SPLIT_SEED = 0
HELD_OUT = 297
SPLITS = ("train", "heldout", "all")
DATA = shipped.WEIGHTS / "digits8x8.safetensors"


def raw_from_sklearn():
    """(images [1797, 8, 8] uint8 0..16, labels [1797] uint8) from scikit-learn's bundled copy (on disk)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return torch.as_tensor(data.images).to(torch.uint8), torch.as_tensor(data.target).to(torch.uint8)


def write(path=DATA):
    """Write the raw digits to `path` (safetensors) and its manifest (source, licence, sha256) beside it."""
    images, labels = raw_from_sklearn()
    return shipped.save_tensors({"images": images.contiguous(), "labels": labels.contiguous()}, path,
                                {"data": "UCI Optical Recognition of Handwritten Digits (CC BY 4.0), as "
                                         "sklearn.datasets.load_digits", "command": "python -m samplerlab.lab.digits"})


@lru_cache(maxsize=1)
def _all():
    state, _ = shipped.load(DATA)
    x = state["images"].to(torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return (2 * x - 1).contiguous(), state["labels"].to(torch.int64)


def indices(split):
    """The indices of `split` ("train", "heldout" or "all") into the 1797 images, in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    n = len(_all()[1])
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return {"train": perm[HELD_OUT:], "heldout": perm[:HELD_OUT], "all": torch.arange(n)}[split]


def load(split="train"):
    """(images [N, 1, 16, 16] float32 in [-1, 1], labels [N] int64) of `split`; fresh tensors each call."""
    x, y = _all()
    idx = indices(split)
    return x[idx].clone(), y[idx].clone()


if __name__ == "__main__":
    print(write())
