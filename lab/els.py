"""The equivariant local score (ELS) machine and the empirical (memorising) denoiser over a training set
of images (Kamb & Ganguli, arXiv 2412.20292; SCIENCE.md §6). Both are lab problems: `model("ve"|"flow")`.

Noisy state x = alpha x0 + sigma n (VE: alpha = 1; flow: alpha = 1 - t, sigma = t, the exact change of
variables x_ve = x / alpha at sigma_ve = sigma / alpha). Training images y_i, i = 1..N, shape [C, H, W].

Empirical denoiser (the optimal denoiser of the training set, which memorises it):
    D(x)  = sum_i w_i y_i,   w_i = softmax_i( -|x - alpha y_i|^2 / (2 sigma^2) ).
ELS machine (the paper's, in its DDPM notation x_t = sqrt(abar) x0 + sqrt(1 - abar) eps with weights
exp(-|Omega_p(x_t) - sqrt(abar) Omega_q(y_i)|^2 / (2 (1 - abar))); here alpha = sqrt(abar), sigma = sqrt(1 - abar),
checked against the authors' reference code, not against equation numbers):
    D(x)[p] = sum_{i, q in Q(p)} w_{i,q}(p) y_i[q],
    w_{i,q}(p) = softmax_{i, q in Q(p)}( -|Omega_p(x) - alpha Omega_q(y_i)|^2 / (2 sigma^2) ),
where Omega_p is the P x P patch (all channels) centred on pixel p, P = P(sigma_ve) odd (the
patch-size schedule), and the centre pixel y_i[q] of the training patch is the predicted value.
Translation equivariance = every position q of every training image takes part:
  - padding="circular": query and training images on the torus, Q(p) = all H W positions (the paper's
    theory, for circularly padded networks; the authors' code takes training patches at unpadded
    positions only);
  - padding="zero": patches reaching over the border are zero-filled and Q(p) holds the positions q whose
    patch overlaps the border exactly as p's does (same clipped distances to each edge), so interior
    pixels use all interior patches, edge pixels slide along their edge only and corners are fixed. This
    is the paper's boundary-aware ELS for zero-padded networks (authors' code LocalEquivBordersScoreModule),
    the padding of the shipped digits UNet, and the default.
Class-conditional: the training set restricted to one class (labels == classes is the null label: all).

Streaming: the softmax is a log-sum-exp over training-image chunks (running max, denominator and weighted
sum), so a block of logits never exceeds max(chunk, H W * H W) numbers whatever N is. The |Omega_p(x)|^2
term is constant over (i, q) and dropped; logits are (alpha <Omega_p x, Omega_q y> - alpha^2 |Omega_q y|^2
/ 2) / sigma^2, in float64 (float32 cancels at small sigma).
Cost per denoiser call and image: 2 N (H W)^2 (C P^2 + C) multiply-adds plus N (H W)^2 exponentials
(`flops`); the empirical denoiser: 2 N C H W + N exponentials.
"""
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .problems import Problem

F64 = torch.float64
PADDINGS = ("zero", "circular")
SCHEDULE_FILE = Path(__file__).with_name("els_schedule.json")
DEVELOPMENT_SCHEDULE = ((0.05, 3), (0.2, 3), (0.5, 5), (1.0, 7), (2.0, 9), (5.0, 11))


class PatchSchedule:
    """P(sigma_ve): the patch size of the calibration level nearest in log sigma (constant beyond the ends)."""

    def __init__(self, points):
        points = sorted((float(s), int(p)) for s, p in points)
        if not points or any(s <= 0 or p < 1 or p % 2 == 0 for s, p in points):
            raise ValueError(f"schedule: (sigma > 0, odd patch size >= 1) pairs required, got {points}")
        self.sigmas = torch.tensor([s for s, _ in points], dtype=F64)
        self.sizes = [p for _, p in points]

    @classmethod
    def load(cls, path=SCHEDULE_FILE):
        """The calibrated schedule stored by `calibrate` (a JSON file with 'sigmas' and 'sizes')."""
        data = json.loads(Path(path).read_text())
        return cls(zip(data["sigmas"], data["sizes"]))

    def breaks(self):
        """The VE levels where P changes (nearest level in log sigma: the geometric mean of two neighbours)."""
        return tuple(float((a * b).sqrt()) for a, b, p, q in zip(self.sigmas, self.sigmas[1:], self.sizes, self.sizes[1:])
                     if p != q)

    def __call__(self, sigma_ve):
        if math.isinf(sigma_ve):
            return self.sizes[-1]
        i = int((self.sigmas.log() - math.log(sigma_ve)).abs().argmin())
        return self.sizes[i]


def flops(n_train, shape, patch):
    """Floating-point operations of one ELS call on one image (matmul, weighted sum, exponentials)."""
    c, h, w = shape
    pairs = n_train * (h * w) ** 2
    return 2 * pairs * c * patch ** 2 + 2 * pairs * c + pairs


def _check(images, labels, classes):
    if images.ndim != 4:
        raise ValueError(f"images: a [N, C, H, W] training set is required, got shape {tuple(images.shape)}")
    if labels is not None and labels.shape != (images.shape[0],):
        raise ValueError(f"labels: shape ({images.shape[0]},) required, got {tuple(labels.shape)}")
    if labels is not None and classes is None:
        classes = int(labels.max()) + 1
    return classes if labels is not None else 0


class _Stream:
    """Running log-sum-exp state of softmax-weighted means: rows [*rows], values of width C."""

    def __init__(self, rows, width):
        self.m = torch.full(rows, -math.inf, dtype=F64)
        self.num = torch.zeros(*rows, width + 1, dtype=F64)

    def update(self, logits, values1, rows=slice(None)):
        """logits [*rows, K] (finite somewhere in every row; overwritten) against values1 = [values | 1], [K, C + 1]."""
        m_new = torch.maximum(self.m[rows], logits.amax(-1))
        scale = torch.exp(self.m[rows] - m_new)
        self.num[rows] = self.num[rows] * scale[..., None] + logits.sub_(m_new[..., None]).exp_() @ values1
        self.m[rows] = m_new

    def mean(self):
        return self.num[..., :-1] / self.num[..., -1:]


def _ones(values):
    return torch.cat([values, torch.ones(len(values), 1, dtype=F64)], 1)


class _TrainingSet(Problem):
    """A finite training set as a lab problem: sample_data draws a training image (of the class)."""

    def __init__(self, images, labels=None, classes=None, chunk=1 << 20):
        self.classes = _check(images, labels, classes)
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1 (logits per block), got {chunk}")
        self.images = images.to(F64)
        self.labels = None if labels is None else labels.to(torch.int64)
        self.shape = tuple(images.shape[1:])
        self.chunk = int(chunk)

    def subset(self, label):
        """The training images of class `label` (all for None or the null label `classes`)."""
        if label is None or label == self.classes:
            return self.images
        if self.labels is None:
            raise ValueError("labels: this training set has no classes")
        if not 0 <= label < self.classes:
            raise ValueError(f"label must be in [0, {self.classes}] ({self.classes} = unconditional), got {label}")
        return self.images[self.labels == label]

    def sample_data(self, generator, label=None):
        pool = self.subset(label)
        return pool[int(torch.randint(len(pool), (1,), generator=generator))]

    def denoise(self, x, alpha, sigma, labels=None):
        """E[x0 | x] under the machine; samples sharing (label, alpha, sigma) are computed together."""
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x: shape [B, {', '.join(map(str, self.shape))}] expected, got {list(x.shape)}")
        if bool((sigma <= 0).any()):
            raise ValueError("sigma must be > 0: the softmax denoisers are defined at positive noise levels only")
        out = torch.empty(x.shape, dtype=F64)
        keys = [(None if labels is None else int(labels[b]), float(alpha[b]), float(sigma[b])) for b in range(x.shape[0])]
        for label, a, s in dict.fromkeys(keys):
            idx = torch.tensor([b for b, k in enumerate(keys) if k == (label, a, s)])
            out[idx] = self._denoise(x[idx].to(F64), a, s, self.subset(label))
        return out


class Empirical(_TrainingSet):
    """D(x) = sum_i softmax_i(-|x - alpha y_i|^2 / (2 sigma^2)) y_i over the training images (module docstring)."""

    name = "empirical"

    def _denoise(self, x, a, s, ys):
        q = x.flatten(1)
        state = _Stream((len(q),), q.shape[1])
        per = max(1, self.chunk // len(q))
        for start in range(0, len(ys), per):
            y = ys[start:start + per].flatten(1)
            logits = torch.addmm((y * y).sum(1) * (-a * a / (2 * s * s)), q, y.T, alpha=a / (s * s))
            state.update(logits, _ones(y))
        return state.mean().reshape(x.shape)


class ELS(_TrainingSet):
    """The equivariant local score machine (module docstring): per pixel, the posterior-weighted mean of the
    centre pixels of all training patches of size P(sigma_ve), `padding` 'zero' (boundary-aware) or 'circular'."""

    name = "els"

    def __init__(self, images, labels=None, classes=None, schedule=None, padding="zero", chunk=1 << 20):
        super().__init__(images, labels, classes, chunk)
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        self.padding = padding
        self.schedule = schedule if callable(schedule) else PatchSchedule(schedule or DEVELOPMENT_SCHEDULE)
        self.max_patch = 2 * min(self.shape[1:]) - 1

    @property
    def breaks(self):
        """The VE levels where the patch size, and so D, jumps (none known for a plain callable schedule)."""
        return self.schedule.breaks() if isinstance(self.schedule, PatchSchedule) else ()

    def patch_size(self, a, s):
        """P at host (alpha, sigma), i.e. at sigma_ve = sigma / alpha."""
        p = int(self.schedule(s / a if a > 0 else math.inf))
        if p < 1 or p % 2 == 0 or p > self.max_patch:
            raise ValueError(f"patch size must be odd in [1, {self.max_patch}], the schedule gave {p} at sigma_ve {s / a if a else math.inf}")
        return p

    def _patches(self, x, p):
        """[B, L, C P^2] patches centred on every pixel (L = H W), padded per self.padding."""
        d = p // 2
        x = F.pad(x, (d, d, d, d), mode="circular" if self.padding == "circular" else "constant")
        return F.unfold(x, p).transpose(1, 2)

    def _mask(self, p):
        """Additive [L, L] bias: 0 where position q may serve pixel p (same border overlap), -inf elsewhere."""
        _, h, w = self.shape
        L = h * w
        if self.padding == "circular":
            return torch.zeros(L, L, dtype=F64)
        d = p // 2

        def same(n):
            i = torch.arange(n)
            cls = torch.stack([i.clamp(max=d), (n - 1 - i).clamp(max=d)], 1)
            return (cls[:, None] == cls[None, :]).all(-1)

        ok = same(h)[:, None, :, None] & same(w)[None, :, None, :]
        return torch.zeros(L, L, dtype=F64).masked_fill(~ok.reshape(L, L), -math.inf)

    def _denoise(self, x, a, s, ys):
        b, c = x.shape[:2]
        p = self.patch_size(a, s)
        L = self.shape[1] * self.shape[2]
        q = self._patches(x, p)
        state = _Stream((b, L), c)
        per = max(1, self.chunk // (L * L))
        group = max(1, self.chunk // (L * L * per))
        bias = self._mask(p).repeat(1, min(per, len(ys)))
        for start in range(0, len(ys), per):
            y = ys[start:start + per]
            keys = self._patches(y, p).reshape(-1, q.shape[-1])
            shift = bias[:, :len(keys)] - (keys * keys).sum(1) * (a * a / (2 * s * s))
            values = _ones(y.flatten(2).transpose(1, 2).reshape(-1, c))
            for g in range(0, b, group):
                rows = slice(g, g + group)
                logits = torch.baddbmm(shift[None], q[rows], keys.T.expand(len(q[rows]), -1, -1), alpha=a / (s * s))
                state.update(logits, values, rows)
        return state.mean().transpose(1, 2).reshape(x.shape)


def r2(pred, target):
    """Per-image coefficient of determination of `pred` against `target` [B, ...]:
    1 - sum (pred - target)^2 / sum (target - mean target)^2."""
    t = target.flatten(1).to(F64)
    sst = ((t - t.mean(1, keepdim=True)) ** 2).sum(1)
    return 1 - ((pred.flatten(1).to(F64) - t) ** 2).sum(1) / sst


def calibrate(network, machine, images, labels, sigmas, sizes, seed=0):
    """The paper's calibration of P(sigma): at each VE level sigma, noisy held-out images x = y + sigma n
    (class `labels`, or None) go through the network and through the ELS `machine` at every candidate patch
    size; P(sigma) = the size with the highest median r^2 against the network's x0 prediction.
    `network` and `machine` are lab problems (`model("ve", labels)`). Returns (schedule points, r2 table
    [len(sigmas), len(sizes)] of medians)."""
    g = torch.Generator().manual_seed(seed)
    table = torch.zeros(len(sigmas), len(sizes), dtype=F64)
    schedule = machine.schedule
    try:
        for i, s in enumerate(sigmas):
            x = images.to(F64) + s * torch.randn(images.shape, generator=g, dtype=F64)
            level = torch.full((len(x),), float(s), dtype=F64)
            target = network.model("ve", labels)(x, level)
            for j, p in enumerate(sizes):
                machine.schedule = PatchSchedule([(1.0, p)])
                table[i, j] = r2(machine.model("ve", labels)(x, level), target).quantile(0.5)
    finally:
        machine.schedule = schedule
    return [(float(s), int(sizes[int(table[i].argmax())])) for i, s in enumerate(sigmas)], table


CALIBRATION_SIGMAS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.5, 3.0, 8.0)
CALIBRATION_SIZES = (1, 3, 5, 7, 9, 11, 15)


def cost(n_images=4, sizes=(3, 7, 15)):
    """Measured milliseconds per image per ELS call over the digits training split (unconditional: every
    training image), with the FLOPs of `flops`, one row per patch size."""
    import time

    from . import digits

    train, _ = digits.load("train")
    x = torch.randn(n_images, *train.shape[1:], generator=torch.Generator().manual_seed(0), dtype=F64)
    level = torch.full((n_images,), 0.5, dtype=F64)
    rows = []
    for p in sizes:
        machine = ELS(train, schedule=[(1.0, p)])
        start = time.perf_counter()
        machine.model("ve")(x, level)
        ms = (time.perf_counter() - start) / n_images * 1e3
        rows.append({"patch": p, "train_images": len(train), "ms_per_image": round(ms), "gflop_per_image": round(flops(len(train), train.shape[1:], p) / 1e9, 2)})
    return rows


def nearest_distance(x, pool):
    """RMS per-pixel distance from each x [B, ...] to its nearest image in pool [N, ...]."""
    return torch.cdist(x.flatten(1).to(F64), pool.flatten(1).to(F64)).amin(1) / math.sqrt(x[0].numel())


def main(argv=None):
    """python -m samplerlab.lab.els calibrate --network NAME: calibrate P(sigma) of the class-conditional ELS
    over the digits training split against reference model NAME (lab/reference_models.py) on held-out digits
    0..k-1 (noise seed 0), report r^2 on held-out digits k..3k-1 (noise seed 1), write SCHEDULE_FILE.
    python -m samplerlab.lab.els cost: measured time and FLOPs per image per call.
    (Samples and their novelty: `python -m samplerlab study creativity`.)"""
    import argparse
    import time

    from . import digits
    from .reference_models import load

    ap = argparse.ArgumentParser(prog="python -m samplerlab.lab.els", description=main.__doc__)
    ap.add_argument("command", choices=["calibrate", "cost"])
    ap.add_argument("--network", help="reference model to calibrate against (calibrate)")
    ap.add_argument("--images", type=int, default=8, help="held-out images to calibrate on (twice as many to report on)")
    ap.add_argument("--out", default=str(SCHEDULE_FILE))
    args = ap.parse_args(argv)
    if args.command == "cost":
        for row in cost():
            print(json.dumps(row))
        return
    if not args.network:
        ap.error("calibrate needs --network")
    start = time.perf_counter()
    network = load(args.network)
    train, train_labels = digits.load("train")
    held, held_labels = digits.load("heldout")
    machine = ELS(train, train_labels, classes=digits.CLASSES)
    k = args.images
    points, table = calibrate(network, machine, held[:k], held_labels[:k], CALIBRATION_SIGMAS, CALIBRATION_SIZES, seed=0)
    machine.schedule = PatchSchedule(points)
    g = torch.Generator().manual_seed(1)
    report = []
    for s in CALIBRATION_SIGMAS:
        x = held[k:3 * k].to(F64) + s * torch.randn(held[k:3 * k].shape, generator=g, dtype=F64)
        level = torch.full((len(x),), s, dtype=F64)
        labels = held_labels[k:3 * k]
        report.append(float(r2(machine.model("ve", labels)(x, level), network.model("ve", labels)(x, level)).quantile(0.5)))
    data = {
        "sigmas": [s for s, _ in points], "sizes": [p for _, p in points],
        "command": f"python -m samplerlab.lab.els calibrate --network {args.network} --images {k}",
        "network": args.network, "padding": machine.padding, "train_images": len(train),
        "calibration": {"heldout": [0, k], "noise_seed": 0, "sizes_tried": list(CALIBRATION_SIZES),
                        "median_r2": [[round(float(v), 4) for v in row] for row in table]},
        "evaluation": {"heldout": [k, 3 * k], "noise_seed": 1, "median_r2": [round(v, 4) for v in report],
                       "median_over_levels": round(float(torch.tensor(report).quantile(0.5)), 4)},
        "seconds": round(time.perf_counter() - start, 1),
    }
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(data["evaluation"]), f"{data['seconds']} s")


if __name__ == "__main__":
    main()
