"""Reference models: image-shaped denoisers with known answers that stand in for a checkpoint (in the lab,
and inside ComfyUI through nodes/reference.py). One registry entry per model; the ComfyUI choice list,
latent shape and class count are read from it.

A model's latent is the image itself, [C, H, W] in about [-1, 1]; `classes` > 0 makes it class-conditional
with label `classes` as the null (unconditional) label, so classifier-free guidance has an exact meaning.
Every model is a lab Problem (lab/problems.py), built on first use and cached.
"""
import functools
from dataclasses import dataclass
from typing import Callable

import torch

from .problems import GaussianField, Mixture, Problem

F64 = torch.float64


@dataclass(frozen=True)
class ReferenceSpec:
    name: str
    summary: str
    shape: tuple
    classes: int
    build: Callable[[], Problem]


class ImageMixture(Problem):
    """lab's Gaussian mixture (exact class-conditional denoiser) on flattened [C, H, W] images."""

    name = "mixture"

    def __init__(self, shape=(3, 16, 16), components=8, classes=4, seed=0):
        self.shape = tuple(shape)
        self.flat = Mixture(dim=int(torch.tensor(shape).prod()), components=components, classes=classes,
                            spread=0.5, lam_range=(0.005, 0.05), conditional=True, seed=seed)
        self.classes = classes

    def denoise(self, x, alpha, sigma, labels=None):
        return self.flat.denoise(x.flatten(1), alpha, sigma, labels).reshape(x.shape)

    def sample_data(self, generator, label=None):
        return self.flat.sample_data(generator, label).reshape(self.shape)


def _digits(per_class):
    """The digits training split (lab/digits.py), the first `per_class` images of each class (None: all)."""
    from . import digits

    images, labels = digits.load("train")
    if per_class is not None:
        keep = torch.cat([torch.nonzero(labels == c)[:per_class, 0] for c in range(digits.CLASSES)]).sort().values
        images, labels = images[keep], labels[keep]
    return images, labels, digits.CLASSES


def els_digits(per_class):
    """The ELS machine over the first `per_class` training digits of each class, with the patch sizes calibrated
    on digits_unet (lab/els_schedule.json)."""
    from .els import ELS, PatchSchedule

    images, labels, classes = _digits(per_class)
    return ELS(images, labels, classes=classes, schedule=PatchSchedule.load())


def _unet():
    from .trained import Digits

    return Digits(cfg=1.0)  # the plain conditional network: guidance is the host's (CFGGuider, KSampler cfg)


def _empirical():
    from .els import Empirical

    images, labels, classes = _digits(None)
    return Empirical(images, labels, classes=classes)


REGISTRY = {spec.name: spec for spec in (
    ReferenceSpec("digits_unet", "trained class-conditional UNet on the digits (EDM; real network errors)",
                  (1, 16, 16), 10, _unet),
    ReferenceSpec("digits_els", "ELS patch machine over 30 training digits per class (creative patch mosaics)",
                  (1, 16, 16), 10, lambda: els_digits(30)),
    ReferenceSpec("digits_empirical", "empirical optimal denoiser of the digits training set (memorises it)",
                  (1, 16, 16), 10, _empirical),
    ReferenceSpec("mixture", "class-conditional Gaussian mixture on 3x16x16 images (exact denoiser, exact CFG)",
                  (3, 16, 16), 4, ImageMixture),
    ReferenceSpec("field", "stationary Gaussian random field, 3x32x32 (exact denoiser and ODE solution)",
                  (3, 32, 32), 0, lambda: GaussianField(shape=(3, 32, 32))),
)}


def spec(name):
    """The registry entry `name` (ValueError listing the known ones)."""
    if name not in REGISTRY:
        raise ValueError(f"reference model must be one of {sorted(REGISTRY)}, got {name!r}")
    return REGISTRY[name]


@functools.lru_cache(maxsize=None)
def load(name):
    """The reference model `name` as a lab Problem, built once."""
    return spec(name).build()


def predict(name, x, sigma, labels=None, space="ve"):
    """x0 prediction of model `name` at host levels sigma [B] (VE or flow), in x's dtype; labels [B] int with
    `classes` (the null label) for unconditional rows, or None for all unconditional."""
    s = spec(name)
    if tuple(x.shape[1:]) != s.shape:
        raise ValueError(f"reference model {name!r} takes latents of shape [B, {', '.join(map(str, s.shape))}], got {list(x.shape)}")
    if labels is not None and bool(((labels < 0) | (labels > s.classes)).any()):
        raise ValueError(f"labels for {name!r} must be in [0, {s.classes}] ({s.classes} = unconditional), got {labels.tolist()}")
    problem = load(name)
    sigma = sigma.reshape(-1).expand(x.shape[0])
    out = torch.empty_like(x)
    null = torch.ones(x.shape[0], dtype=torch.bool) if labels is None else labels == s.classes
    for rows, lab in ((null, None), (~null, None if labels is None else labels[~null])):
        if bool(rows.any()):
            out[rows] = problem.model(space, lab)(x[rows], sigma[rows])
    return out
