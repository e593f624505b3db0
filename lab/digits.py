"""The digits data set: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes, read from
the package on disk, never downloaded), upsampled to 16x16 and scaled to [-1, 1], one channel.

Pixels 0..16 are scaled to [0, 1], upsampled bilinearly (torch's `interpolate`, align_corners=False: a
convex combination, so values stay in range), then mapped to [-1, 1]. The split is fixed: a permutation
of the 1797 indices by `torch.Generator().manual_seed(SPLIT_SEED)`; its first HELD_OUT indices are the
held-out set, the rest the training set. scikit-learn is imported only when data is first needed.
"""
from functools import lru_cache

import torch

SIZE = 16
CLASSES = 10
SPLIT_SEED = 0
HELD_OUT = 297
SPLITS = ("train", "heldout", "all")


@lru_cache(maxsize=1)
def _all():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.as_tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return (2 * x - 1).contiguous(), torch.as_tensor(data.target, dtype=torch.int64)


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
