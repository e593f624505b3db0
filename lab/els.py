"""The equivariant local score (ELS) machine and the empirical (memorising) denoiser over a training set
of images (Kamb & Ganguli, arXiv 2412.20292; SCIENCE.md §6). Both are lab problems: `model("ve"|"flow")`.

Noisy state x = alpha x0 + sigma n (VE: alpha = 1; flow: alpha = 1 - t, sigma = t, the exact change of
variables x_ve = x / alpha at sigma_ve = sigma / alpha). Training images y_i, i = 1..N, shape [C, H, W].

Empirical denoiser (the optimal denoiser of the training set, which memorises it):
    D(x)  = sum_i w_i y_i,   w_i = softmax_i( -|x - alpha y_i|^2 / (2 sigma^2) ).
ELS machine (the paper's Eq. 9, ELS form of its Eq. 7, in VE units: alpha_t -> alpha, 1 - alpha_t^2 -> sigma^2):
    D(x)[p] = sum_{i, q in Q(p)} w_{i,q}(p) y_i[q],
    w_{i,q}(p) = softmax_{i, q in Q(p)}( -|Omega_p(x) - alpha Omega_q(y_i)|^2 / (2 sigma^2) ),
where Omega_p is the P x P patch (all channels) centred on pixel p, P = P(sigma_ve) odd (the
patch-size schedule), and the centre pixel y_i[q] of the training patch is the predicted value.
Translation equivariance = every position q of every training image takes part:
  - padding="circular": images on the torus, Q(p) = all H W positions (the paper's theory, for
    circularly padded networks);
  - padding="zero": patches reaching over the border are zero-filled and Q(p) holds the positions q whose
    patch overlaps the border exactly as p's does (same clipped distances to each edge), so interior
    pixels use all interior patches, edge pixels slide along their edge only and corners are fixed. This
    is the paper's boundary-aware ELS for zero-padded networks (its best match to trained UNets and
    ResNets; reference code LocalEquivBordersScoreModule), and the default.
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
