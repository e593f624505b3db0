"""A small class-conditional UNet with EDM preconditioning (Karras et al. 2022, "Elucidating the design
space of diffusion-based generative models", Table 1 and Sec. 5), for 1 x 16 x 16 images.

D(x; sigma) = c_skip x + c_out F(c_in x, c_noise, label), with c_skip = sd^2 / (sigma^2 + sd^2),
c_out = sigma sd / sqrt(sigma^2 + sd^2), c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4 (sd =
sigma_data). Written for a state x = alpha x0 + sigma n (VE: alpha = 1) through the exact change of
variables x_ve = x / alpha, sigma_ve = sigma / alpha, multiplied out so that alpha = 0 (a flow's t = 1)
is finite: c_in x_ve = x / sqrt(sigma^2 + sd^2 alpha^2), c_skip x_ve = sd^2 alpha x / (sigma^2 + sd^2 alpha^2).
The noise embedding saturates outside sigma_ve in [EMB_SIGMA_MIN, EMB_SIGMA_MAX]. Below, c_out leaves it nothing
to change. Above the training range (ln sigma ~ N(-1.2, 1.2^2), lab/trained.py) it is untrained: the shipped
network's x0 prediction changes by about 40 % between sigma_ve = 2e3 and the saturation at 1e4 (t = 0.9995 and
1 in flow), which a flow solver's first step from t = 1 has to resolve (samplers/calibrated.py, step 1).
Class labels 0..classes-1, and `classes` itself is the null label (label dropout in training, the
unconditional branch of classifier-free guidance).
"""
import math

import torch
from torch import nn

EMB_SIGMA_MIN, EMB_SIGMA_MAX = 1e-4, 1e4


def positional(c_noise, dim, max_period=100.0):
    """[B] -> [B, dim] sin/cos features of c_noise at frequencies geometric from 1 to max_period."""
    freqs = torch.exp(torch.linspace(0.0, math.log(max_period), dim // 2, dtype=c_noise.dtype, device=c_noise.device))
    ang = c_noise[:, None] * freqs[None]
    return torch.cat([ang.cos(), ang.sin()], 1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, then an embedding-driven scale and shift (FiLM), GroupNorm-SiLU-conv; 1x1 skip."""

    def __init__(self, cin, cout, emb_dim, groups=8):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * cout)
        self.norm2, self.conv2 = nn.GroupNorm(groups, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x, emb):
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, 1)
        h = self.conv2(nn.functional.silu(self.norm2(h) * (1 + scale) + shift))
        return self.skip(x) + h


class UNet(nn.Module):
    """F(x, c_noise, label): three resolutions (16, 8, 4) with `widths` channels, one ResBlock per level
    each way, skip connections by concatenation; embedding = MLP(positional(c_noise)) + class embedding."""

    def __init__(self, widths=(16, 32, 64), emb_dim=64, classes=10):
        super().__init__()
        self.config = {"widths": list(widths), "emb_dim": emb_dim, "classes": classes}
        self.classes = classes
        self.emb_dim = emb_dim
        self.noise_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(classes + 1, emb_dim)
        w0, w1, w2 = widths
        self.conv_in = nn.Conv2d(1, w0, 3, padding=1)
        self.enc = nn.ModuleList([ResBlock(w0, w0, emb_dim), ResBlock(w0, w1, emb_dim), ResBlock(w1, w2, emb_dim)])
        self.mid = ResBlock(w2, w2, emb_dim)
        self.dec = nn.ModuleList([ResBlock(2 * w2, w1, emb_dim), ResBlock(2 * w1, w0, emb_dim), ResBlock(2 * w0, w0, emb_dim)])
        self.norm_out, self.conv_out = nn.GroupNorm(8, w0), nn.Conv2d(w0, 1, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x, c_noise, labels):
        emb = nn.functional.silu(self.noise_mlp(positional(c_noise, self.emb_dim)) + self.label_emb(labels))
        h = self.conv_in(x)
        skips = []
        for i, block in enumerate(self.enc):
            if i:
                h = nn.functional.avg_pool2d(h, 2)
            h = block(h, emb)
            skips.append(h)
        h = self.mid(h, emb)
        for i, block in enumerate(self.dec):
            if i:
                h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
            h = block(torch.cat([h, skips.pop()], 1), emb)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))


class EDMDenoiser(nn.Module):
    """The preconditioned denoiser D(x; alpha, sigma, labels) of a UNet F (module docstring)."""

    def __init__(self, net: UNet, sigma_data: float):
        super().__init__()
        self.net, self.sigma_data = net, float(sigma_data)

    def forward(self, x, alpha, sigma, labels):
        """x [B, 1, H, W] = alpha x0 + sigma n; alpha, sigma [B] in x's dtype; labels [B] int64 (null = classes)."""
        a, s, sd = alpha.reshape(-1, 1, 1, 1), sigma.reshape(-1, 1, 1, 1), self.sigma_data
        r2 = s ** 2 + sd ** 2 * a ** 2
        sigma_ve = (sigma / alpha.clamp_min(1e-300)).clamp(EMB_SIGMA_MIN, EMB_SIGMA_MAX)
        f = self.net(x / r2.sqrt(), sigma_ve.log() / 4, labels)
        return sd ** 2 * a * x / r2 + s * sd / r2.sqrt() * f
