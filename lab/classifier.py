"""A small CNN digit classifier on lab/digits.py's 16x16 images, shipped as safetensors: the judge of
generated digits (class accuracy) and the feature map of their Frechet distance (its 128-d penultimate
layer). Trained with Adam on the training split, random shifts of up to SHIFT pixels as augmentation;
`python -m samplerlab train classifier` reproduces the shipped file; its held-out accuracy is in the manifest.
"""
import time
from functools import lru_cache

import torch
from torch import nn

from . import digits, shipped

WEIGHTS = shipped.WEIGHTS / "digits_classifier.safetensors"
FEATURES = 128
SHIFT = 1
TRAIN = {"steps": 1200, "seed": 0, "batch": 64, "lr": 1e-3}


class Classifier(nn.Module):
    """conv32-conv32-pool-conv64-pool-fc128 (features) - fc10, ReLU."""

    def __init__(self, classes=digits.CLASSES):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * 4 * 4, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, classes)

    def features(self, x):
        """[N, 1, 16, 16] in [-1, 1] -> penultimate features [N, 128]."""
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


def shift(x, generator, pad=SHIFT):
    """Each image moved by its own random offset in [-pad, pad]^2, the border filled with background (-1)."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (pad,) * 4, value=-1.0)
    off = torch.randint(2 * pad + 1, (n, 2), generator=generator)
    return torch.stack([padded[i, :, oy:oy + h, ox:ox + w] for i, (oy, ox) in enumerate(off.tolist())])


@torch.enable_grad()
def train(steps=TRAIN["steps"], seed=TRAIN["seed"], batch=TRAIN["batch"], lr=TRAIN["lr"]):
    """(classifier, final loss) after `steps` Adam steps on the training split; deterministic in `seed`."""
    x_all, y_all = digits.load("train")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = Classifier()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(x_all), (batch,), generator=g)
        loss = nn.functional.cross_entropy(net(shift(x_all[idx], g)), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    tail = losses[-min(len(losses), 100):]
    return net.eval().requires_grad_(False), sum(tail) / len(tail)


def accuracy(net, x, y):
    """Fraction of images x classified as y."""
    with torch.no_grad():
        return float((net(x.float()).argmax(1) == y).double().mean())


def write(steps, seed, out, command):
    """Train and write weights and manifest (with held-out accuracy) to `out`; returns the manifest."""
    t0 = time.perf_counter()
    net, loss = train(steps, seed)
    xh, yh = digits.load("heldout")
    x, _ = digits.load("train")
    manifest = {
        "network": "lab/classifier.py Classifier (features: the 128-d penultimate layer)",
        "data": "scikit-learn load_digits (bundled), 16x16 bilinear, [-1, 1] (lab/digits.py)",
        "split": {"train": len(x), "heldout": digits.HELD_OUT, "split_seed": digits.SPLIT_SEED},
        "command": command, "seed": seed, "steps": steps, "training": {**TRAIN, "steps": steps, "seed": seed,
                                                                        "shift": SHIFT, "threads": torch.get_num_threads()},
        "final_loss": loss, "heldout_accuracy": accuracy(net, xh, yh), "heldout_n": len(yh),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    return shipped.save(net, out, manifest)


@lru_cache(maxsize=2)
def _load(path):
    state, _ = shipped.load(path)
    net = Classifier()
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)


def network(path=WEIGHTS):
    """The shipped classifier (float32, loaded once, on first use)."""
    return _load(str(path))
