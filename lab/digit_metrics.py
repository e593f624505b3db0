"""Metrics of generated digits, judged by the shipped classifier (lab/classifier.py): class accuracy with
a Wilson 95% interval, and the Frechet distance between Gaussian fits of its 128-d penultimate features,
|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) (Heusel et al. 2017), computed by torchmetrics'
FrechetInceptionDistance with the classifier as its feature extractor, with a bootstrap interval.
torchmetrics is imported only here, when a distance is computed.
"""
import math

import torch
from torch import nn

from . import classifier
from .metrics import bias_shifted_ci


def classify(x, path=classifier.WEIGHTS, chunk=2048):
    """The classifier's labels [N] of images x [N, 1, 16, 16], `chunk` images at a time."""
    net = classifier.network(path)
    with torch.no_grad():
        return torch.cat([net(x[i:i + chunk].float()).argmax(1) for i in range(0, len(x), chunk)])


def correct(x, labels, path=classifier.WEIGHTS):
    """Per image of x [N, 1, 16, 16]: whether the classifier assigns it its label (labels [N]); bool [N]."""
    return classify(x, path) == torch.as_tensor(labels)


def accuracy(x, labels, path=classifier.WEIGHTS):
    """(fraction of images x [N, 1, 16, 16] classified as labels [N], Wilson 95% interval (lo, hi))."""
    k = int(correct(x, labels, path).sum())
    return k / len(x), wilson(k, len(x))


def wilson(k, n, z=1.96):
    """The Wilson score interval of a binomial proportion k / n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def features(x, path=classifier.WEIGHTS):
    """The classifier's penultimate features [N, 128] (float64) of images x [N, 1, 16, 16] in [-1, 1]."""
    with torch.no_grad():
        return classifier.network(path).features(x.float()).double()


class _Given(nn.Module):
    """The feature extractor handed to torchmetrics: the features are computed already (one pass over
    each image set, reused by every bootstrap resample)."""

    def __init__(self, dim):
        super().__init__()
        self.num_features = dim

    def forward(self, f):
        return f


def distance(fa, fb):
    """The Frechet distance of feature sets fa [N, d] and fb [M, d] (torchmetrics), no interval."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Given(fa.shape[1]))
    metric.update(fa, real=True)
    metric.update(fb, real=False)
    return float(metric.compute())


def frechet(fa, fb, boot=200, seed=0):
    """(Frechet distance F of feature sets fa [N, d] and fb [M, d], bootstrap 95% interval (lo, hi)).

    `boot` seeded resamples of both sets with replacement; the estimator is biased upward by O(d / N)
    and a resample's estimate once more, so the percentile interval of the replicates F*_b is shifted
    by the bootstrap bias estimate mean(F*) - F (Efron & Tibshirani 1993, Sec. 10.2) to lie around F."""
    g = torch.Generator().manual_seed(seed)
    reps = [distance(fa[torch.randint(len(fa), (len(fa),), generator=g)],
                     fb[torch.randint(len(fb), (len(fb),), generator=g)]) for _ in range(boot)]
    value = distance(fa, fb)
    return value, bias_shifted_ci(reps, value)


def frechet_ratio(fa, fb, ref, boot=200, seed=0):
    """(F(fa, ref) / F(fb, ref), paired bootstrap 95% interval (lo, hi)) for feature sets fa, fb [N, d] whose
    rows are paired (sample k of both from the same seed) and a reference set ref [M, d].

    Each of `boot` seeded replicates draws one index set for fa and fb together and one for ref, so the
    seeds' shared variation cancels in the ratio; the percentile interval is shifted by the bootstrap
    bias mean(R*) - R as in `frechet`."""
    if fa.shape != fb.shape:
        raise ValueError(f"fa and fb must be paired feature sets of one shape, got {list(fa.shape)} and {list(fb.shape)}")
    g = torch.Generator().manual_seed(seed)
    reps = []
    for _ in range(boot):
        i, j = torch.randint(len(fa), (len(fa),), generator=g), torch.randint(len(ref), (len(ref),), generator=g)
        reps.append(distance(fa[i], ref[j]) / distance(fb[i], ref[j]))
    value = distance(fa, ref) / distance(fb, ref)
    return value, bias_shifted_ci(reps, value)
