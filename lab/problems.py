"""Reference problems with exact denoisers D(x; alpha, sigma) = E[x0 | alpha x0 + sigma n = x] (SCIENCE.md §6).

Every problem is usable in both parametrisations (VE: alpha = 1, sigma = s; flow: alpha = 1 - s,
sigma = s) as a k-diffusion-style denoiser `model(x, sigma_batch, **extra_args)`, and knows the exact
probability-flow ODE solution (in closed form, or from a fine float64 reference solve).
"""
import math

import torch

from ..samplers.space import resolve
from ..samplers.stepping import ddim

F64 = torch.float64


def _levels(space, s, batch):
    """alpha and sigma of host levels s (float or [B] tensor) as float64 [B] tensors."""
    s = torch.as_tensor(s, dtype=F64).reshape(-1).expand(batch)
    return (1 - s if space.flow else torch.ones_like(s)), s


def _bcast(v, x):
    return v.reshape(-1, *[1] * (x.ndim - 1))


class Problem:
    """A data distribution with an exact denoiser. Subclasses define `shape`, `denoise`, `sample_data`."""

    name = ""
    shape: tuple = ()
    classes = 0
    sigma_min, sigma_max = 0.002, 80.0
    reference_steps = 4000
    """RK4 steps of `exact`'s reference solve (problems without a closed form)."""
    breaks: tuple = ()
    """VE levels where the denoiser jumps (the ELS machine's patch-size changes): the reference solve steps to them."""

    def denoise(self, x, alpha, sigma, labels=None):
        """E[x0 | x] for x = alpha x0 + sigma n; x float64 [B, *shape], alpha and sigma [B]."""
        raise NotImplementedError

    def sample_data(self, generator, label=None):
        """One draw x0 of the data (of class `label` if given), float64 of `shape`."""
        raise NotImplementedError

    def model(self, space="ve", labels=None):
        """A k-diffusion-style denoiser model(x, sigma, **extra_args) -> x0 prediction, in x's dtype."""
        space = resolve(space)

        def model(x, sigma, **extra_args):
            alpha, sig = _levels(space, sigma.detach().to("cpu", F64), x.shape[0])
            d = self.denoise(x.detach().to("cpu", F64), alpha, sig, labels)
            return d.to(x.device, x.dtype)

        return model

    def draw(self, seeds, space="ve", s_T=None):
        """Start states x_T = alpha x0 + sigma n at host level s_T, one per seed (its own generator),
        and the class labels (None for unconditional problems): sample k depends on seeds[k] alone."""
        space = resolve(space)
        s_T = (space.max_level() if space.flow else self.sigma_max) if s_T is None else s_T
        xs, labels = [], []
        for seed in seeds:
            g = torch.Generator().manual_seed(int(seed))
            label = int(torch.randint(self.classes, (1,), generator=g)) if self.classes else None
            x0 = self.sample_data(g, label)
            n = torch.randn(self.shape, generator=g, dtype=F64)
            xs.append(space.alpha(s_T) * x0 + space.sigma(s_T) * n)
            labels.append(label)
        return torch.stack(xs), (torch.tensor(labels) if self.classes else None)

    def exact(self, x_T, s_T, s_end=0.0, space="ve", labels=None, steps=None):
        """The probability-flow ODE solution from x_T at host level s_T to level s_end (float64; a reference
        solve of `steps` or `reference_steps` steps where there is no closed form)."""
        return reference_solve(self, x_T, s_T, s_end, space, labels, steps or self.reference_steps)

    def v_network(self, sigma_data=1.0):
        """The exact v-prediction network in k-diffusion's convention, so that
        `k_diffusion.external.VDenoiser(problem.v_network())` is this problem's exact VE denoiser."""
        problem = self

        class VNetwork(torch.nn.Module):
            def forward(self, x_in, t, **extra_args):
                sigma = torch.tan(t.to(F64) * math.pi / 2)
                root = (sigma ** 2 + sigma_data ** 2).sqrt()
                x = x_in.to(F64) * _bcast(root, x_in)
                d = problem.model("ve", extra_args.get("labels"))(x, sigma)
                c_skip, c_out = sigma_data ** 2 / root ** 2, -sigma * sigma_data / root
                return ((d - _bcast(c_skip, x) * x) / _bcast(c_out, x)).to(x_in.dtype)

        return VNetwork()


class Gaussian(Problem):
    """N(mu, diag lam): D = mu + alpha lam / (alpha^2 lam + sigma^2) (x - alpha mu); ODE solved in closed form."""

    name = "gaussian"

    def __init__(self, shape=(4, 8, 8), lam_min=0.01, lam_max=4.0, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.shape = tuple(shape)
        n = math.prod(self.shape)
        self.lam = torch.logspace(math.log10(lam_min), math.log10(lam_max), n, dtype=F64)[torch.randperm(n, generator=g)].reshape(self.shape)
        self.mu = 0.5 * torch.randn(self.shape, generator=g, dtype=F64)

    def denoise(self, x, alpha, sigma, labels=None):
        a, s = _bcast(alpha, x), _bcast(sigma, x)
        return self.mu + a * self.lam / (a ** 2 * self.lam + s ** 2) * (x - a * self.mu)

    def sample_data(self, generator, label=None):
        return self.mu + self.lam.sqrt() * torch.randn(self.shape, generator=generator, dtype=F64)

    def exact(self, x_T, s_T, s_end=0.0, space="ve", labels=None, steps=None):
        """x(s) = alpha mu + (x_T - alpha_T mu) sqrt(alpha^2 lam + sigma^2) / sqrt(alpha_T^2 lam + sigma_T^2) (SCIENCE.md §6)."""
        space = resolve(space)
        x_T = x_T.to(F64)
        aT, sT, a, s = space.alpha(s_T), space.sigma(s_T), space.alpha(s_end), space.sigma(s_end)
        scale = ((a ** 2 * self.lam + s ** 2) / (aT ** 2 * self.lam + sT ** 2)).sqrt()
        return a * self.mu + (x_T - aT * self.mu) * scale

    def modes(self, x):
        """The covariance's eigenvalues [n] and x [B, *shape] in its eigenbasis [B, n] (lab/bound.py)."""
        return self.lam.reshape(-1), x.flatten(1)


class GaussianField(Problem):
    """An image-like stationary Gaussian field (C, H, W) with a 1/(f^2 + f0^2) spectrum per channel, channels
    mixed by an orthogonal colour matrix; diagonal in the (ortho) FFT basis, so D and the ODE are exact."""

    name = "field"

    def __init__(self, shape=(3, 32, 32), f0=1 / 32, channel_std=(0.45, 0.2, 0.12), seed=0):
        self.shape = tuple(shape)
        c, h, w = self.shape
        fy, fx = torch.fft.fftfreq(h, dtype=F64), torch.fft.fftfreq(w, dtype=F64)
        spec = 1.0 / (fy[:, None] ** 2 + fx[None, :] ** 2 + f0 ** 2)
        spec = spec / spec.mean()
        self.p = torch.stack([spec * sd ** 2 for sd in channel_std[:c]])
        g = torch.Generator().manual_seed(seed)
        self.Q = torch.linalg.qr(torch.randn(c, c, generator=g, dtype=F64) + 2 * torch.eye(c, dtype=F64))[0]
        self.mu = (self.Q @ torch.tensor([0.1, -0.05, 0.05][:c], dtype=F64))[:, None, None].expand(self.shape)

    def _filter(self, x, gain):
        """Q . ifft(gain * fft(Q^T x)), gain per channel and frequency (and batch)."""
        z = torch.einsum("dc,bdhw->bchw", self.Q, x)
        z = torch.fft.ifft2(torch.fft.fft2(z, norm="ortho") * gain, norm="ortho").real
        return torch.einsum("cd,bdhw->bchw", self.Q, z)

    def denoise(self, x, alpha, sigma, labels=None):
        a, s = _bcast(alpha, x), _bcast(sigma, x)
        return self.mu + self._filter(x - a * self.mu, a * self.p / (a ** 2 * self.p + s ** 2))

    def sample_data(self, generator, label=None):
        w = torch.randn(self.shape, generator=generator, dtype=F64)[None]
        return self.mu + self._filter(w, self.p.sqrt())[0]

    def exact(self, x_T, s_T, s_end=0.0, space="ve", labels=None, steps=None):
        """Per Fourier mode, as for the Gaussian: gain sqrt(alpha^2 p + sigma^2) / sqrt(alpha_T^2 p + sigma_T^2)."""
        space = resolve(space)
        aT, sT, a, s = space.alpha(s_T), space.sigma(s_T), space.alpha(s_end), space.sigma(s_end)
        gain = ((a ** 2 * self.p + s ** 2) / (aT ** 2 * self.p + sT ** 2)).sqrt()
        return a * self.mu + self._filter(x_T.to(F64) - aT * self.mu, gain)

    def modes(self, x):
        """The covariance's eigenvalues [n] and x [B, *shape] in its (complex, orthonormal) eigenbasis [B, n]."""
        z = torch.fft.fft2(torch.einsum("dc,bdhw->bchw", self.Q, x), norm="ortho")
        return self.p.reshape(-1), z.flatten(1)


class Mixture(Problem):
    """A mixture of diagonal Gaussians, sum_k pi_k N(mu_k, diag lam_k); class c owns components k with
    owner[k] == c, so the class-conditional denoiser is exact and so is classifier-free guidance:
    D = sum_k w_k(x) [mu_k + alpha lam_k / (alpha^2 lam_k + sigma^2)(x - alpha mu_k)],
    w_k ∝ pi_k N(x; alpha mu_k, alpha^2 lam_k + sigma^2) over the allowed components."""

    name = "mixture"

    def __init__(self, dim=8, components=8, classes=4, spread=1.5, lam_range=(0.01, 0.1), conditional=False, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.shape = (dim,)
        self.mu = spread * torch.randn(components, dim, generator=g, dtype=F64)
        lo, hi = lam_range
        self.lam = lo * (hi / lo) ** torch.rand(components, dim, generator=g, dtype=F64)
        self.logpi = torch.log_softmax(0.5 * torch.randn(components, generator=g, dtype=F64), 0)
        self.owner = torch.arange(components) % classes
        self.n_classes = classes
        self.classes = classes if conditional else 0
        if conditional:
            self.name = "mixture_cond"

    def _level_terms(self, alpha, sigma):
        """alpha, sigma [B] as [B', 1, 1] and 1 / (alpha^2 lam + sigma^2) [B', K, dim]: B' = 1 when every sample
        is at the same level (a sampler's step), so that the sums over dim below are matrix products."""
        if bool((alpha == alpha[:1]).all()) and bool((sigma == sigma[:1]).all()):
            alpha, sigma = alpha[:1], sigma[:1]
        a, s = alpha[:, None, None], sigma[:, None, None]
        return a, 1 / (a ** 2 * self.lam + s ** 2)

    @staticmethod
    def _at_levels(spec, u, w):
        """torch.einsum(spec, u, w) for a per-level w [1 or B, K, dim] (spec in its per-sample form, w's subscripts
        starting with b): a shared level drops w's b, so the sum is one matrix product."""
        return torch.einsum(spec.replace(",b", ",", 1), u, w[0]) if len(w) == 1 else torch.einsum(spec, u, w)

    def responsibilities(self, x, alpha, sigma, labels=None):
        """w_k ∝ pi_k N(x; alpha mu_k, alpha^2 lam_k + sigma^2) [B, K] over the allowed components, with
        |x - alpha mu_k|^2_inv = x^2 . inv - 2 alpha x . (mu inv) + alpha^2 mu^2 . inv (float64)."""
        a, inv = self._level_terms(alpha, sigma)
        quad = (self._at_levels("bd,bkd->bk", x * x, inv) - 2 * a[:, :, 0] * self._at_levels("bd,bkd->bk", x, self.mu * inv)
                + (a ** 2 * self.mu ** 2 * inv).sum(-1))
        logw = self.logpi + 0.5 * (inv.log().sum(-1) - quad)
        if labels is not None:
            allowed = self.owner[None, :] == labels.reshape(-1, 1)
            logw = logw.masked_fill(~allowed, -math.inf)
        return torch.softmax(logw, -1)

    def posterior(self, x, alpha, sigma, labels=None):
        """Component responsibilities w [B, K] and per-component means m [B, K, dim]."""
        a, inv = self._level_terms(alpha, sigma)
        return self.responsibilities(x, alpha, sigma, labels), self.mu + a * self.lam * inv * (x[:, None, :] - a * self.mu)

    def denoise(self, x, alpha, sigma, labels=None):
        """sum_k w_k [mu_k + alpha lam_k inv_k (x - alpha mu_k)], contracted over k without forming [B, K, dim]."""
        w = self.responsibilities(x, alpha, sigma, labels)
        a, inv = self._level_terms(alpha, sigma)
        gain = self.lam * inv
        return w @ self.mu + a[:, 0] * (x * self._at_levels("bk,bkd->bd", w, gain)
                                        - a[:, 0] * self._at_levels("bk,bkd->bd", w, gain * self.mu))

    def clean_posterior(self, x0):
        """Component responsibilities [B, K] of clean samples x0 [B, dim] (alpha = 1, sigma = 0)."""
        return self.responsibilities(x0.to(F64), torch.ones(len(x0), dtype=F64), torch.zeros(len(x0), dtype=F64))

    def class_posterior(self, x0):
        """p(class | x0) for clean samples x0 [B, dim]: [B, classes]."""
        return torch.zeros(len(x0), self.n_classes, dtype=F64).index_add_(1, self.owner, self.clean_posterior(x0))

    def component(self, x0):
        """The component [B] most responsible for each clean sample x0 [B, dim] (the mode it lies in)."""
        return self.clean_posterior(x0).argmax(1)

    def sample_data(self, generator, label=None):
        logits = self.logpi if label is None else self.logpi.masked_fill(self.owner != label, -math.inf)
        k = int(torch.multinomial(logits.softmax(0), 1, generator=generator))
        return self.mu[k] + self.lam[k].sqrt() * torch.randn(self.shape, generator=generator, dtype=F64)


class PointSet(Problem):
    """The exact PFGM++ model "trained at D" on a weighted point set {y_i, pi_i} in N = prod(shape) dims
    (PFGM++, arXiv 2302.04265; SCIENCE.md §1): the posterior mean under the kernel (|x - y|^2 + r^2)^(-(N+D)/2)
    with the alignment r = sigma sqrt(D),
        D(x; sigma) = sum_i w_i y_i,   w_i ∝ pi_i (|x - y_i|^2 + D sigma^2)^(-(N+D)/2)   (VE view),
    and D = inf its limit, the Gaussian softmax w_i ∝ pi_i exp(-|x - y_i|^2 / (2 sigma^2)) (the empirical
    denoiser, lab/els.py). A flow state x = alpha x_ve has |x_ve - y|^2 + D s_ve^2 = (|x - alpha y|^2 + D sigma^2)
    / alpha^2, and the factor alpha^-2 cancels in w, so alpha = 0 gives w = pi. Log-weights in float64, the
    squared distance as matrix products |x|^2 - 2 alpha <x, y> + alpha^2 |y|^2 (clamped at 0), normalised by a log-sum-exp.
    Its data are the points with probabilities pi; its probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma
    carries the Student-t marginal at every sigma (PFGM++ Theorem 1), so the prior is x = y + kappa sigma n,
    kappa = sqrt(D / chi2_D) (samplers/poisson.py)."""

    def __init__(self, points, D=math.inf, weights=None, labels=None, name="pointset"):
        points = torch.as_tensor(points, dtype=F64)
        if points.ndim < 2 or len(points) < 1:
            raise ValueError(f"points: a [n, *shape] tensor with n >= 1 expected, got shape {list(points.shape)}")
        D = float(D)
        if not D >= 1:
            raise ValueError(f"D must be >= 1 (or inf), got {D}")
        w = torch.ones(len(points), dtype=F64) if weights is None else torch.as_tensor(weights, dtype=F64)
        if w.shape != (len(points),) or not bool((w > 0).all()) or not bool(torch.isfinite(w).all()):
            raise ValueError(f"weights: {len(points)} positive finite numbers expected")
        self.points, self.D, self.name = points, D, name
        self.shape = tuple(points.shape[1:])
        self.logpi = (w / w.sum()).log()
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.int64)

    def log_weights(self, x, alpha, sigma):
        """log w [B, n] (normalised) for x float64 [B, *shape], alpha and sigma [B]."""
        q = x.flatten(1)
        y = self.points.flatten(1)
        a, s = alpha[:, None], sigma[:, None]
        d2 = ((q * q).sum(1, keepdim=True) - 2 * a * (q @ y.T) + a * a * (y * y).sum(1)).clamp_min(0)
        if math.isinf(self.D):
            logits = -d2 / (2 * s * s)
        else:
            n = q.shape[1]
            logits = -0.5 * (n + self.D) * torch.log(d2 + self.D * s * s)
        return torch.log_softmax(self.logpi + logits, -1)

    def denoise(self, x, alpha, sigma, labels=None):
        if bool((sigma <= 0).any()):
            raise ValueError("sigma must be > 0: the point-set denoiser is defined at positive noise levels only")
        return (self.log_weights(x, alpha, sigma).exp() @ self.points.flatten(1)).reshape(x.shape)

    def sample_data(self, generator, label=None):
        return self.points[int(torch.multinomial(self.logpi.exp(), 1, generator=generator))]

    def nearest(self, x):
        """Index [B] of the point nearest each x (float64 distances)."""
        return torch.cdist(x.flatten(1).to(F64), self.points.flatten(1)).argmin(1)


def reference_solve(problem, x_T, s_T, s_end, space="ve", labels=None, steps=4000, sigma_floor=1e-5):
    """The ODE solution by classical RK4 in lambda on the VE view, dy/dlambda = D(y; e^-lambda) - y,
    float64, `steps` steps, uniform between the problem's `breaks` (each piece its share of the steps, at
    least one; D is evaluated just inside a piece at its ends, so that RK4 keeps its order where D jumps);
    a flow start at s = 1 first takes a DDIM step to 1 - 1e-7 (error O(1e-14)); s_end = 0 is reached as the
    limit sigma_floor (error O(sigma_floor^2))."""
    space = resolve(space)
    x = x_T.to(F64)
    b = x.shape[0]
    ones = torch.ones(b, dtype=F64)
    if space.alpha(s_T) == 0:
        d = problem.denoise(x, ones * 0.0, ones, labels)
        s_T, x = 1 - 1e-7, ddim(space, x, d, 1.0, 1 - 1e-7)
    y = x / space.alpha(s_T)
    lam0 = space.lam(s_T)
    lam1 = -math.log(sigma_floor) if s_end == 0 else space.lam(s_end)
    cuts = [lam0] + sorted(-math.log(v) for v in problem.breaks if lam0 < -math.log(v) < lam1) + [lam1]
    for a, c in zip(cuts, cuts[1:]):
        n = max(1, round(steps * (c - a) / (lam1 - lam0)))
        h, eps = (c - a) / n, 1e-9 * (c - a) / n

        def f(y, lam):
            return problem.denoise(y, ones, ones * math.exp(-min(max(lam, a + eps), c - eps)), labels) - y

        for k in range(n):
            lam = a + k * h
            k1 = f(y, lam)
            k2 = f(y + h / 2 * k1, lam + h / 2)
            k3 = f(y + h / 2 * k2, lam + h / 2)
            k4 = f(y + h * k3, lam + h)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y * space.alpha(s_end)


def named(problem, name):
    """`problem` under its own name (the held-out variants of the classes above)."""
    problem.name = name
    return problem


def reference_convergence(problem, space="ve", seeds=range(4), steps=None):
    """(max, RMS) |x(steps) - x(steps / 2)| of the problem's reference solve (`steps` default: its
    `reference_steps`) from its start level: where the ODE is smooth, RK4's error at `steps` is about 1/15 of it
    (0 for a problem whose `exact` is closed form: it ignores `steps`)."""
    space = resolve(space)
    steps = steps or problem.reference_steps
    s_T = space.max_level() if space.flow else problem.sigma_max
    x_T, labels = problem.draw(list(seeds), space, s_T)
    diff = problem.exact(x_T, s_T, 0.0, space, labels, steps) - problem.exact(x_T, s_T, 0.0, space, labels, steps // 2)
    return float(diff.abs().max()), float(diff.pow(2).mean().sqrt())


PROBLEMS = {
    "gaussian": Gaussian,
    "mixture": Mixture,
    "mixture_cond": lambda: Mixture(conditional=True),
    "field": GaussianField,
    # added after the pack's first choices were made (lab/bench.py DEVELOPMENT and HELD_OUT say which took part since)
    "gaussian96": lambda: named(Gaussian(shape=(96,), lam_min=1e-3, lam_max=30.0, seed=96), "gaussian96"),
    "mixture32": lambda: named(Mixture(dim=32, components=6, classes=6, spread=1.0, lam_range=(0.02, 0.5), seed=32), "mixture32"),
    "memorise16": lambda: named(Mixture(dim=16, components=40, classes=40, spread=1.0, lam_range=(1e-4, 4e-4), seed=16),
                                "memorise16"),
    # held out from the training-free default's design since memorise16 took part in it (lab/bench.py HELD_OUT)
    "gaussian48": lambda: named(Gaussian(shape=(48,), lam_min=3e-4, lam_max=10.0, seed=48), "gaussian48"),
    "mixture20": lambda: named(Mixture(dim=20, components=10, classes=5, spread=1.2, lam_range=(0.005, 0.2), seed=20), "mixture20"),
    "memorise24": lambda: named(Mixture(dim=24, components=64, classes=64, spread=1.0, lam_range=(5e-5, 5e-4), seed=24),
                                "memorise24"),
    # fresh: defined before the 512-seed bench's choice of the training-free default was made, run only after it
    "gaussian64": lambda: named(Gaussian(shape=(64,), lam_min=1e-4, lam_max=20.0, seed=64), "gaussian64"),
    "mixture12": lambda: named(Mixture(dim=12, components=12, classes=3, spread=1.3, lam_range=(0.01, 0.3), seed=12), "mixture12"),
    "memorise32": lambda: named(Mixture(dim=32, components=48, classes=48, spread=1.0, lam_range=(1e-4, 1e-3), seed=33),
                                "memorise32"),
    # development problems of the calibrated solver's scoring starts (samplers/calibrated.py FIT_STARTS); held out
    # from the training-free default, whose choices were made before them (lab/bench.py HELD_OUT)
    "memorise20": lambda: named(Mixture(dim=20, components=50, classes=50, spread=1.0, lam_range=(1e-4, 6e-4), seed=2020),
                                "memorise20"),
    "memorise28": lambda: named(Mixture(dim=28, components=56, classes=56, spread=1.0, lam_range=(5e-5, 8e-4), seed=2028),
                                "memorise28"),
    "digits": lambda: _digits(),
    "els": lambda: _els(),
}


TRAINED = ("digits", "els")
"""Problems whose denoiser stands in for a trained network (the digits UNet, the ELS machine): its reference is
a fine solve of its own ODE, it is not the posterior mean of its data (the exactness tests skip it), and its
calls cost milliseconds to tenths of a second (the bench runs it on its own)."""


def _digits():
    """The trained digits network (lab/trained.py; imported on use: it imports this module)."""
    from .trained import Digits

    return Digits()


def _els():
    """The ComfyUI `digits_els` model as a problem: the ELS machine over 30 training digits per class with the
    calibrated patch sizes (lab/reference_models.py), class-conditional; reference 512 RK4 steps between its
    patch-size changes (`bench --references`)."""
    from .reference_models import els_digits

    problem = named(els_digits(30), "els")
    problem.reference_steps = 512
    return problem


def make(name: str) -> Problem:
    """A built-in problem by name."""
    if name not in PROBLEMS:
        raise ValueError(f"problem must be one of {sorted(PROBLEMS)}, got {name!r}")
    return PROBLEMS[name]()
