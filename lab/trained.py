"""The trained class-conditional digits denoiser (lab/unet.py on lab/digits.py), shipped as safetensors.

Training (EDM, Karras et al. 2022, Sec. 5): ln sigma ~ N(P_MEAN, P_STD^2), loss weight
lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 on |D(x0 + sigma n; sigma) - x0|^2, Adam, an EMA of the
weights (the shipped ones); labels are replaced by the null label with probability LABEL_DROPOUT, so
classifier-free guidance D_w = D(x | null) + w (D(x | c) - D(x | null)) is learned, not simulated.
`python -m samplerlab train digits` reproduces the shipped file (CPU, fixed seeds, one thread).
"""
import time
from copy import deepcopy
from functools import lru_cache

import torch

from ..samplers.space import resolve
from . import digits, shipped
from .problems import Problem
from .unet import EDMDenoiser, UNet

WEIGHTS = shipped.WEIGHTS / "digits_unet.safetensors"
P_MEAN, P_STD = -1.2, 1.2
LABEL_DROPOUT = 0.12
DEFAULT_CFG = 2.0
CFG_RANGE = (0.0, 30.0)
SHAPE = (1, digits.SIZE, digits.SIZE)
TRAIN = {"steps": 5000, "seed": 0, "batch": 64, "lr": 2e-3, "warmup": 200, "ema": 0.999}


@torch.enable_grad()
def train(steps=TRAIN["steps"], seed=TRAIN["seed"], batch=TRAIN["batch"], lr=TRAIN["lr"],
          warmup=TRAIN["warmup"], ema=TRAIN["ema"], progress=None):
    """(EMA denoiser, facts) after `steps` Adam steps on the training split; deterministic in `seed`."""
    x_all, y_all = digits.load("train")
    sigma_data = round(float(x_all.std()), 2)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = EDMDenoiser(UNet(classes=digits.CLASSES), sigma_data)
    avg = deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup)
        idx = torch.randint(len(x_all), (batch,), generator=g)
        x0, labels = x_all[idx], y_all[idx].clone()
        labels[torch.rand(batch, generator=g) < LABEL_DROPOUT] = digits.CLASSES
        sigma = (P_MEAN + P_STD * torch.randn(batch, generator=g)).exp()
        noisy = x0 + sigma[:, None, None, None] * torch.randn(x0.shape, generator=g)
        weight = (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2
        loss = (weight[:, None, None, None] * (model(noisy, torch.ones(batch), sigma, labels) - x0) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay = min(ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_avg, p in zip(avg.parameters(), model.parameters()):
                p_avg.lerp_(p, 1 - decay)
        losses.append(loss.item())
        if progress is not None:
            progress(step, losses[-1])
    tail = losses[-min(len(losses), 200):]
    return avg, {"sigma_data": sigma_data, "final_loss": sum(tail) / len(tail), "loss_window": len(tail)}


def write(steps, seed, out, command, progress=None):
    """Train and write the weights and manifest to `out` (a .safetensors path); returns the manifest."""
    t0 = time.perf_counter()
    model, facts = train(steps, seed, progress=progress)
    x, _ = digits.load("train")
    manifest = {
        "network": "lab/unet.py UNet " + str(model.net.config) + ", EDM preconditioning (lab/unet.py)",
        "data": "scikit-learn load_digits (bundled), 16x16 bilinear, [-1, 1] (lab/digits.py)",
        "split": {"train": len(x), "heldout": digits.HELD_OUT, "split_seed": digits.SPLIT_SEED},
        "command": command, "seed": seed, "steps": steps,
        "training": {**TRAIN, "steps": steps, "seed": seed, "p_mean": P_MEAN, "p_std": P_STD,
                     "label_dropout": LABEL_DROPOUT, "threads": torch.get_num_threads()},
        **facts, "config": model.net.config, "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    return shipped.save(model, out, manifest)


@lru_cache(maxsize=4)
def _load(path, dtype):
    state, manifest = shipped.load(path)
    net = UNet(**manifest["config"])
    net.load_state_dict({k[len("net."):]: v for k, v in state.items()})
    return EDMDenoiser(net, manifest["sigma_data"]).to(dtype).eval().requires_grad_(False)


def network(dtype=torch.float32, path=WEIGHTS):
    """The shipped EDM denoiser module in `dtype` (loaded once, on first use)."""
    return _load(str(path), dtype)


def check_latent(x):
    if x.ndim != 4 or tuple(x.shape[1:]) != SHAPE:
        raise ValueError(f"x: the digits model takes latents of shape [B, 1, 16, 16], got {list(x.shape)}")


def class_labels(cond, batch):
    """cond (None, an int, or [B] ints in 0..9) as [B] int64 labels; None -> the null label 10."""
    if cond is None:
        return torch.full((batch,), digits.CLASSES, dtype=torch.int64)
    labels = torch.as_tensor(cond).reshape(-1)
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"cond: class labels must be integers in 0..{digits.CLASSES - 1}, got dtype {labels.dtype}")
    labels = labels.to(torch.int64).expand(batch) if labels.numel() == 1 else labels.to(torch.int64)
    if labels.numel() != batch:
        raise ValueError(f"cond: expected one class label or {batch} (one per sample), got {labels.numel()}")
    bad = (labels < 0) | (labels >= digits.CLASSES)
    if bad.any():
        raise ValueError(f"cond: class labels must be in 0..{digits.CLASSES - 1}, got {labels[bad].tolist()}")
    return labels


def guided(x, alpha, sigma, cond=None, cfg=DEFAULT_CFG, path=WEIGHTS):
    """D_w(x) = D(x | null) + w (D(x | c) - D(x | null)) at x = alpha x0 + sigma n, in x's dtype and device;
    cond None is the unconditional model (cfg unused). alpha, sigma: [B] tensors."""
    check_latent(x)
    cfg = float(cfg)
    if not CFG_RANGE[0] <= cfg <= CFG_RANGE[1]:
        raise ValueError(f"cfg must be in [{CFG_RANGE[0]}, {CFG_RANGE[1]}], got {cfg}")
    net = network(x.dtype if x.is_floating_point() else torch.float32, path).to(x.device)
    b = x.shape[0]
    alpha, sigma = alpha.to(x.device, x.dtype).reshape(-1).expand(b), sigma.to(x.device, x.dtype).reshape(-1).expand(b)
    null = class_labels(None, b).to(x.device)
    with torch.no_grad():
        if cond is None:
            return net(x, alpha, sigma, null)
        labels = class_labels(cond, b).to(x.device)
        both = net(torch.cat([x, x]), torch.cat([alpha, alpha]), torch.cat([sigma, sigma]), torch.cat([labels, null]))
    d_cond, d_null = both.chunk(2)
    return d_null + cfg * (d_cond - d_null)


def model(space="ve", path=WEIGHTS):
    """A k-diffusion-style denoiser model(x, sigma, cond=None, cfg=DEFAULT_CFG, **extra_args) -> x0 of the
    shipped network; space "ve" (x = x0 + sigma n) or "flow" (x = (1 - t) x0 + t n, sigma = t: the
    exact change of variables x_ve = x / (1 - t), sigma_ve = t / (1 - t), finite at t = 1)."""
    space = resolve(space)

    def denoiser(x, sigma, cond=None, cfg=DEFAULT_CFG, **extra_args):
        s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
        alpha = 1 - s if space.flow else torch.ones_like(s)
        return guided(x, alpha, s, cond, cfg, path)

    return denoiser


class Digits(Problem):
    """The trained digits network as a lab problem: class-conditional with CFG at `cfg`; the reference is
    a fine float64 solve of the network's own probability-flow ODE (problems.reference_solve, RK4 in
    lambda, `reference_steps` steps); draws start from noise around a training image of a seeded class."""

    name = "digits"
    shape = SHAPE
    classes = digits.CLASSES
    sigma_min, sigma_max = 0.002, 80.0
    reference_steps = 256

    def __init__(self, cfg=DEFAULT_CFG, path=WEIGHTS):
        self.cfg, self.path = cfg, path

    def denoise(self, x, alpha, sigma, labels=None):
        return guided(x, alpha, sigma, labels, self.cfg, self.path)

    def sample_data(self, generator, label=None):
        x, y = digits.load("train")
        pool = torch.nonzero(y == label).reshape(-1) if label is not None else torch.arange(len(y))
        return x[pool[int(torch.randint(len(pool), (1,), generator=generator))]].to(torch.float64)

