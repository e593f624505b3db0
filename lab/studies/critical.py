"""`python -m samplerlab study critical`: critical phenomena along the reverse process of the trained digits
network and of ELS, and where the pack's online sigma_c detector lands (issue 14, item 1).

Unconditional probability-flow ODE trajectories (Heun on a geometric grid of VE levels, SUBSTEPS steps between
grid levels, from SIGMA_TOP to 0); at each grid level sigma, on the state x_sigma of every trajectory:
- mode response (a): g_b = <v, J v> for unit random-phase probes v supported on radial frequency band b
  (lab/metrics.py band_edges), J v = (D(x + eps v) - D(x)) / eps, eps = EPS sigma sqrt(N) (0.1 of the noise);
  the Gaussian model of the data, D = mu + S (S + sigma^2)^-1 (x - mu), gives g_b = <v, S (S + sigma^2)^-1 v>
  with the same probes (SCIENCE.md section 2). sigma_c(a): the steepest change of g of the lowest non-DC band
  per nat of sigma (the interior peak of -dg/dlog sigma by central differences; in the Gaussian model this is
  where g = 1/2, sigma^2 = the mode's variance); where that g crosses 1/2 is reported too ("low_mode_half").
- correlation length (b): the column J e_p of a one-pixel perturbation (eps = sigma at that pixel) at central
  sites p; xi^2 = sum_q |dD_q| |q - p|^2 / sum_q |dD_q|. sigma_c(b): the interior peak of the mean xi(sigma)
  (log-parabola through the top three grid points; none when the largest value is at an end of the grid).
- commitment (c): the classifier (lab/classifier.py) on D(x_sigma) against the class of the trajectory's
  final sample ("x0"); "renoise": the final sample forward-noised to sigma with fresh noise and re-solved
  by the same ODE (Sclocchi et al.); "clone": the state x_sigma re-solved by the ancestral (stochastic) Euler
  sampler with fresh noise (Biroli et al.'s cloning). sigma_c(c): where the fraction that keeps its class
  crosses 1/2 (interpolated in log sigma, from the top of the grid down).
Intervals: Wilson for fractions, percentile bootstrap over trajectories for every sigma_c (all measures
resampled jointly, so ratios between them are paired). Per class: trajectories grouped by final class.
The detector: the pack's GuidedRun (samplers/guidance.py, as the Guidance pulse node runs it: auto-centred
Gaussian pulse, 4 JVP probes of the unconditional denoiser, the x0-speed tracker on the conditional one),
on a 20-step Karras Euler run of the same start noise, labelled with the unconditional trajectory's class.
ELS (lab/els.py, unconditional over the training split, calibrated patch schedule): the same measures on a
few trajectories (about 1 s per image and call on one core), the ODE by Euler on the grid itself.
Constants (EPS, SUBSTEPS, the bands, the sites, the 1/2 thresholds) were set on development seeds below
lab/digits_lab.EVAL_SEED0; the reported runs use seeds from EVAL_SEED0 on.
"""
import math
import time

import torch

from ...samplers import REGISTRY as SAMPLERS
from ...samplers.critical import probe_sigma_c, sigma_c_from_data
from ...samplers.guidance import Pulse, ScheduledCFG
from ...schedulers import REGISTRY as SCHEDULERS
from .. import digit_metrics, digits, trained
from ..digit_metrics import classify
from ..digits_lab import EVAL_SEED0
from ..metrics import band_edges, percentile_ci
from . import output

F64 = torch.float64
SIGMA_TOP, SIGMA_LO, SIGMA_HI = 80.0, 0.05, 40.0
SUBSTEPS = 3
EPS = 0.1
BANDS = 5
SITES = ((6, 6), (6, 9), (9, 6), (9, 9), (7, 8), (8, 7))


def grid(levels=14, lo=SIGMA_LO, hi=SIGMA_HI):
    """`levels` VE levels, geometric from hi down to lo (descending floats)."""
    return [math.exp(math.log(hi) + (math.log(lo) - math.log(hi)) * k / (levels - 1)) for k in range(levels)]


def schedule(levels, substeps=SUBSTEPS, top=SIGMA_TOP):
    """The ODE's levels: top, then `substeps` geometric steps between consecutive grid levels, then 0; and the
    index of each grid level in it."""
    out = [top] if top > levels[0] else []
    where = []
    for k, s in enumerate(levels):
        where.append(len(out))
        out.append(s)
        if k + 1 < len(levels):
            out += [s * (levels[k + 1] / s) ** (j / substeps) for j in range(1, substeps)]
    return out + [0.0], where


def noise(seeds, salt, shape=trained.SHAPE, dtype=torch.float32):
    """One standard normal draw per seed, from Generator(seed * 1000 + salt): sample k depends on seeds[k] alone."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s) * 1000 + salt), dtype=dtype)
                        for s in seeds])


def network():
    """The shipped network's unconditional denoiser (null label), model(x, sigma)."""
    return trained.model("ve")


def els_machine(n_train=None):
    """The unconditional ELS over the training split (the first n_train images, all for None), calibrated schedule."""
    from ..els import ELS, PatchSchedule

    train, labels = digits.load("train")
    n = len(train) if n_train is None else n_train
    return ELS(train[:n], labels[:n], digits.CLASSES, schedule=PatchSchedule.load()).model("ve")


def solve(model, x, sigmas, sampler="heun", seeds=None, record=None):
    """x solved over `sigmas` (list) by a registered sampler, or "ancestral" (Euler ancestral, eta 1, noise from
    `seeds`); record(i, x, d) is called at every step start."""
    cb = None if record is None else (lambda info: record(info["i"], info["x"], info["denoised"]))
    s = torch.tensor(sigmas, dtype=F64)
    if sampler != "ancestral":
        return SAMPLERS[sampler].fn(model, x, s, callback=cb, disable=True)
    ones = x.new_ones([len(x)])
    for i in range(len(sigmas) - 1):
        a, b = sigmas[i], sigmas[i + 1]
        d = model(x, ones * a)
        if record is not None:
            record(i, x, d)
        up = math.sqrt(b * b * (a * a - b * b) / (a * a))
        down = math.sqrt(b * b - up * up)
        x = d + (x - d) * (down / a)
        if up > 0:
            x = x + up * noise(seeds, 500 + i, x.shape[1:], x.dtype)
    return x


def trajectories(model, seeds, levels, substeps=SUBSTEPS, sampler="heun", dtype=torch.float32):
    """ODE trajectories from sigma_top n (n from the seeds): {"states", "x0"} [L, B, ...] at the grid levels,
    "final" [B, ...], and "all_x0" / "all_levels" at every step (for the x0 speed)."""
    sigmas, where = schedule(levels, substeps)
    x = noise(seeds, 0, dtype=dtype) * sigmas[0]
    seen = {}
    final = solve(model, x, sigmas, sampler, record=lambda i, x, d: seen.__setitem__(i, (x.clone(), d.clone())))
    return {"states": torch.stack([seen[i][0] for i in where]), "x0": torch.stack([seen[i][1] for i in where]),
            "final": final, "all_x0": torch.stack([seen[i][1] for i in sorted(seen)]),
            "all_levels": [sigmas[i] for i in sorted(seen)], "sigmas": sigmas, "where": where}


def band_probes(n_probes, seed=0, size=digits.SIZE, bands=BANDS):
    """Unit random-phase probes per radial band [bands, n_probes, 1, H, W]: the real part of the inverse FFT of
    unit-modulus, uniformly random-phase coefficients on the band's frequencies (the DC band: a constant)."""
    g = torch.Generator().manual_seed(seed)
    edges = band_edges(bands)
    f = torch.sqrt(torch.fft.fftfreq(size, dtype=F64)[:, None] ** 2 + torch.fft.fftfreq(size, dtype=F64)[None, :] ** 2)
    masks = [f == 0] + [(f > lo) & (f <= hi) for lo, hi in zip(edges[:-1], edges[1:])]
    out = torch.zeros(bands, n_probes, 1, size, size, dtype=F64)
    for b, m in enumerate(masks):
        for k in range(n_probes):
            phase = torch.rand(size, size, generator=g, dtype=F64) * 2 * math.pi
            v = torch.fft.ifft2(m * torch.exp(1j * phase)).real
            out[b, k, 0] = v / v.norm()
    return out


def _batched(model, x, sigma, chunk=1024):
    ones = torch.ones(min(chunk, len(x)), dtype=x.dtype)
    return torch.cat([model(x[i:i + chunk], ones[:len(x[i:i + chunk])] * sigma) for i in range(0, len(x), chunk)])


def mode_response(model, x, d0, sigma, probes, eps=EPS):
    """g [B, bands]: <v, J v> per band, averaged over the probes, at states x [B, ...] with D(x) = d0."""
    nb, npr = probes.shape[:2]
    delta = eps * sigma * math.sqrt(x[0].numel())
    v = probes.to(x.dtype).reshape(nb * npr, *x.shape[1:])
    xp = (x[:, None] + delta * v[None]).reshape(-1, *x.shape[1:])
    jv = (_batched(model, xp, sigma).reshape(len(x), nb * npr, -1) - d0.reshape(len(x), 1, -1)) / delta
    g = (jv.to(F64) * v.reshape(1, nb * npr, -1).to(F64)).sum(-1)
    return g.reshape(len(x), nb, npr).mean(-1)


def _second_moment(dd, sites, size=digits.SIZE):
    """xi [B, sites] from |dD| [B, sites, H, W]: sqrt(sum |dD| r^2 / sum |dD|), r the distance to the site."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=F64), torch.arange(size, dtype=F64), indexing="ij")
    r2 = torch.stack([(yy - i) ** 2 + (xx - j) ** 2 for i, j in sites])
    w = dd.abs()
    return ((w * r2).sum((-2, -1)) / w.sum((-2, -1)).clamp_min(1e-300)).sqrt()


def correlation_length(model, x, d0, sigma, sites=SITES):
    """xi [B] (mean over sites): the spatial second moment of the change of D under a one-pixel bump of size sigma."""
    b, ns = len(x), len(sites)
    bump = torch.zeros(ns, *x.shape[1:], dtype=x.dtype)
    for k, (i, j) in enumerate(sites):
        bump[k, 0, i, j] = sigma
    dd = _batched(model, (x[:, None] + bump[None]).reshape(-1, *x.shape[1:]), sigma).reshape(b, ns, *x.shape[1:]) - d0[:, None]
    return _second_moment(dd[:, :, 0].to(F64), sites).mean(1)


class Gaussian:
    """The Gaussian model of the training data: D(x) = mu + S (S + sigma^2)^-1 (x - mu), S the sample covariance."""

    def __init__(self, images):
        x = images.flatten(1).to(F64)
        self.shape = images.shape[1:]
        self.mu = x.mean(0)
        self.evals, self.evecs = torch.linalg.eigh(torch.cov(x.T))
        self.evals = self.evals.clamp_min(0)

    def gain(self, sigma):
        """S (S + sigma^2)^-1 as an [N, N] matrix."""
        return (self.evecs * (self.evals / (self.evals + sigma ** 2))) @ self.evecs.T

    def mode_response(self, sigma, probes):
        v = probes.reshape(probes.shape[0], probes.shape[1], -1).to(F64)
        return torch.einsum("bkn,nm,bkm->bk", v, self.gain(sigma), v).mean(1)

    def correlation_length(self, sigma, sites=SITES):
        size = self.shape[-1]
        cols = torch.stack([self.gain(sigma)[:, i * size + j] for i, j in sites]).reshape(1, len(sites), size, size)
        return float(_second_moment(cols, sites).mean())


def crossing(levels, curve, threshold=0.5):
    """The level where `curve` (one value per descending level) first reaches `threshold` from the top of the grid,
    interpolated linearly in log sigma; None when it starts there already or never reaches it."""
    c = [float(v) for v in curve]
    if c[0] >= threshold:
        return None
    for k in range(1, len(c)):
        if c[k] >= threshold:
            t = (threshold - c[k - 1]) / (c[k] - c[k - 1])
            return math.exp(math.log(levels[k - 1]) + t * (math.log(levels[k]) - math.log(levels[k - 1])))
    return None


def peak(levels, curve):
    """The level of the interior maximum of `curve`: the vertex of the parabola in log sigma through the top three
    points; None when the largest value is at an end of the grid (no interior peak)."""
    c = [float(v) for v in curve]
    k = max(range(len(c)), key=c.__getitem__)
    if k == 0 or k == len(c) - 1:
        return None
    u = [math.log(levels[k + j]) for j in (-1, 0, 1)]
    y = c[k - 1:k + 2]
    den = (u[0] - u[1]) * (u[0] - u[2]) * (u[1] - u[2])
    a = (u[2] * (y[1] - y[0]) + u[1] * (y[0] - y[2]) + u[0] * (y[2] - y[1])) / den
    b = (u[2] ** 2 * (y[0] - y[1]) + u[1] ** 2 * (y[2] - y[0]) + u[0] ** 2 * (y[1] - y[2])) / den
    return math.exp(min(max(-b / (2 * a), min(u)), max(u))) if a < 0 else levels[k]


def steepest(levels, curve):
    """The level where `curve` rises fastest as sigma falls: the interior peak of its central difference
    (c[k+1] - c[k-1]) / log(sigma[k-1] / sigma[k+1]) over the interior levels (None: at an end)."""
    c = [float(v) for v in curve]
    slope = [(c[k + 1] - c[k - 1]) / math.log(levels[k - 1] / levels[k + 1]) for k in range(1, len(c) - 1)]
    return peak(levels[1:-1], slope) if len(slope) >= 3 else None


def sigma_c(levels, per):
    """{measure: sigma_c} from per-trajectory curves per = {measure: [B, L] tensor} (means over the trajectories);
    "low_mode" also gives "low_mode_half" (its 1/2 crossing)."""
    out = {}
    for name, v in per.items():
        curve = v.to(F64).mean(0)
        if name == "corr_length":
            out[name] = peak(levels, curve)
        elif name == "low_mode":
            out[name], out["low_mode_half"] = steepest(levels, curve), crossing(levels, curve)
        else:
            out[name] = crossing(levels, curve)
    return out


def bootstrap(levels, per, extra=None, boot=400, seed=0):
    """Point values and 95% percentile intervals of every sigma_c (and of per-trajectory scalars `extra` =
    {name: [B]}, by their median), trajectories resampled jointly; pairwise ratios. Undefined replicates (no
    crossing, no peak) are counted and left out of the interval."""
    extra = extra or {}
    n = len(next(iter(per.values())))
    point = {**sigma_c(levels, per), **{k: float(v.median()) for k, v in extra.items()}}
    g = torch.Generator().manual_seed(seed)
    reps = {k: [] for k in point}
    for _ in range(boot):
        idx = torch.randint(n, (n,), generator=g)
        r = {**sigma_c(levels, {k: v[idx] for k, v in per.items()}), **{k: float(v[idx].median()) for k, v in extra.items()}}
        for k in point:
            reps[k].append(r[k])

    def interval(vals):
        vals = [v for v in vals if v is not None]
        return list(percentile_ci(vals)) if vals else None

    out = {k: {"sigma_c": point[k], "ci": interval(reps[k]), "undefined": sum(v is None for v in reps[k]) / boot}
           for k in point}
    names = list(point)
    ratios = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if point[a] is None or point[b] is None:
                continue
            ratios[f"{a}/{b}"] = {"ratio": point[a] / point[b],
                                  "ci": interval([x / y if x and y else None for x, y in zip(reps[a], reps[b])])}
    return out, ratios


def commitment(model, traj, seeds, levels, protocols=("renoise", "clone")):
    """{"x0", "renoise", "clone"}: [B, L] booleans, whether the class is kept (see the module docstring)."""
    final_class = classify(traj["final"])
    out = {"x0": torch.stack([classify(d) == final_class for d in traj["x0"]], 1)}
    sigmas, where = traj["sigmas"], traj["where"]
    for name in protocols:
        kept = []
        for k, w in enumerate(where):
            tail = sigmas[w:]
            if name == "renoise":
                x = traj["final"] + levels[k] * noise(seeds, 100 + k, dtype=traj["final"].dtype)
                x = solve(model, x, tail, "heun")
            else:
                x = solve(model, traj["states"][k], tail, "ancestral", seeds=[s * 50 + k for s in seeds])
            kept.append(classify(x) == final_class)
        out[name] = torch.stack(kept, 1)
    return out, final_class


def response(model, traj, levels, probes):
    """{"modes": [B, L, bands] gains, "corr_length": [B, L] xi} at the grid states."""
    modes, xi = [], []
    for k, s in enumerate(levels):
        x, d0 = traj["states"][k], traj["x0"][k]
        modes.append(mode_response(model, x, d0, s, probes))
        xi.append(correlation_length(model, x, d0, s))
    return {"modes": torch.stack(modes, 1), "corr_length": torch.stack(xi, 1)}


def detector(seeds, labels, steps=20, sampler="euler", probes=4):
    """Per sample: the JVP detector's sigma_c and whether it was measured (g < 1/2 at a probe), and the x0-speed
    peak, from the pack's ScheduledCFG with an auto pulse on a Karras run of the network (sigma 0.002..80); and
    probe_sigma_c (the sigma_c estimate node's call: unconditional, first level skipped) from 80 and from 20."""
    net = trained.network()
    labels = torch.as_tensor(labels)
    null = torch.full_like(labels, digits.CLASSES)
    one = lambda lab: (lambda x, s, **kw: net(x, torch.ones_like(s), s, lab))
    guided = ScheduledCFG(one(labels), one(null), Pulse(), probes=probes)
    sigmas = SCHEDULERS["karras"].fn(steps, trained.Digits.sigma_min, SIGMA_TOP).float()
    x = SAMPLERS[sampler].fn(guided, noise(seeds, 0) * SIGMA_TOP, sigmas, disable=True)
    run = guided.run
    out = {"jvp": run.probe.sigma_c, "measured": run.probe.measured, "speed": run.speed.sigma_c,
           "accuracy": float((classify(x) == labels).double().mean())}
    for top in (SIGMA_TOP, 20.0):
        s = SCHEDULERS["karras"].fn(steps, trained.Digits.sigma_min, top).float()
        out[f"probe_from_{top:g}"] = probe_sigma_c(network(), noise(seeds, 0) * top, s, "ve", probes).sigma_c
    return out


def x0_speed_peak(traj):
    """Per trajectory, the level of peak x0-prediction speed over every step of the unconditional ODE run
    (the offline form of samplers/critical.py SpeedTracker)."""
    from ...samplers.critical import SpeedTracker

    tracker = SpeedTracker("ve")
    for d, s in zip(traj["all_x0"], traj["all_levels"]):
        tracker.update(d, s)
    return tracker.sigma_c


def wilson_curve(kept):
    """Per level: [fraction, lo, hi] of a [B, L] boolean array."""
    n = kept.shape[0]
    return [[int(k) / n, *digit_metrics.wilson(int(k), n)] for k in kept.sum(0).tolist()]


def _fmt(r):
    if r["sigma_c"] is None:
        return "none" + (f" (undefined in {r['undefined']:.0%} of resamples)" if r["undefined"] < 1 else "")
    ci = r["ci"]
    return f"{r['sigma_c']:.3g} ({ci[0]:.3g}-{ci[1]:.3g})" if ci else f"{r['sigma_c']:.3g}"


def study(n_traj=200, levels=14, n_els=4, els_levels=7, els_train=None, probes_per_band=2, boot=400,
          seed0=EVAL_SEED0, detector_steps=20, substeps=SUBSTEPS, progress=print):
    """The whole measurement as a JSON-able record (see the module docstring)."""
    t0 = time.perf_counter()
    lv = grid(levels)
    seeds = list(range(seed0, seed0 + n_traj))
    probes = band_probes(probes_per_band, seed=seed0)
    model = network()
    traj = trajectories(model, seeds, lv, substeps)
    progress(f"network: {n_traj} trajectories, {time.perf_counter() - t0:.0f} s")
    kept, final_class = commitment(model, traj, seeds, lv)
    progress(f"network: commitment, {time.perf_counter() - t0:.0f} s")
    resp = response(model, traj, lv, probes)
    progress(f"network: responses, {time.perf_counter() - t0:.0f} s")
    det = detector(seeds, final_class, detector_steps)
    speed_offline = x0_speed_peak(traj)
    progress(f"network: detector, {time.perf_counter() - t0:.0f} s")
    train, _ = digits.load("train")
    gauss = Gaussian(train)

    per = {"x0": kept["x0"], "renoise": kept["renoise"], "clone": kept["clone"],
           "low_mode": resp["modes"][:, :, 1], "corr_length": resp["corr_length"]}
    extra = {"detector_jvp": det["jvp"], "detector_speed": det["speed"], "estimate_node": det["probe_from_80"],
             "estimate_from_20": det["probe_from_20"], "speed_offline": speed_offline}
    overall, ratios = bootstrap(lv, per, extra, boot, seed0)
    classes = {}
    for c in range(digits.CLASSES):
        idx = torch.nonzero(final_class == c).reshape(-1)
        if len(idx) >= 5:
            res, rat = bootstrap(lv, {k: v[idx] for k, v in per.items()}, {k: v[idx] for k, v in extra.items()}, boot, seed0 + c)
            classes[str(c)] = {"n": len(idx), "sigma_c": res,
                               "detector_over_renoise": rat.get("renoise/detector_jvp")}
    gauss_modes = torch.stack([gauss.mode_response(s, probes) for s in lv])
    record = {
        "levels": lv, "trajectories": n_traj, "seeds": [seeds[0], seeds[-1]], "substeps": substeps, "eps": EPS,
        "sites": SITES, "probes_per_band": probes_per_band, "band_edges": band_edges(BANDS),
        "class_counts": torch.bincount(final_class, minlength=digits.CLASSES).tolist(),
        "chance_keep": float((torch.bincount(final_class, minlength=digits.CLASSES).double() / n_traj).pow(2).sum()),
        "network": {
            "commitment": {k: wilson_curve(kept[k]) for k in ("x0", "renoise", "clone")},
            "mode_gain": [[_mean_ci(resp["modes"][:, k, b]) for b in range(BANDS)] for k in range(len(lv))],
            "corr_length": [_mean_ci(resp["corr_length"][:, k]) for k in range(len(lv))],
            "sigma_c": overall, "ratios": ratios, "per_class": classes,
            "detector": {"steps": detector_steps, "sampler": "euler", "schedule": "karras", "probes": 4,
                         "measured_fraction": float(det["measured"].double().mean()),
                         "guided_accuracy": det["accuracy"]},
        },
        "gaussian": {"mode_gain": gauss_modes.tolist(), "corr_length": [gauss.correlation_length(s) for s in lv],
                     "sigma_c_low_mode": steepest(lv, gauss_modes[:, 1]), "low_mode_half": crossing(lv, gauss_modes[:, 1]),
                     "sigma_c_top_eigenvalue": sigma_c_from_data(train)},
    }
    if n_els:
        record["els"] = els_study(n_els, els_levels, els_train, probes, boot, seed0)
        progress(f"ELS: {n_els} trajectories, {time.perf_counter() - t0:.0f} s")
    record["seconds_measured"] = time.perf_counter() - t0
    return record


def _mean_ci(v):
    from ..metrics import mean_ci_t

    m, h = mean_ci_t(v)
    return [m, m - h, m + h]


def els_study(n, levels, n_train, probes, boot, seed0):
    """ELS (unconditional): trajectories by Euler on a `levels`-level grid, the classifier on D along them, the mode
    response (first probe per band) and correlation length (first two sites) at every level; per-call seconds."""
    model = els_machine(n_train)
    lv = grid(levels)
    seeds = list(range(seed0, seed0 + n))
    t0 = time.perf_counter()
    traj = trajectories(model, seeds, lv, substeps=1, sampler="euler", dtype=F64)
    calls = n * (len(traj["sigmas"]) - 1)
    per_call = (time.perf_counter() - t0) / calls
    final_class = classify(traj["final"])
    x0 = torch.stack([classify(d) == final_class for d in traj["x0"]], 1)
    modes, xi = [], []
    for k, s in enumerate(lv):
        x, d0 = traj["states"][k], traj["x0"][k]
        modes.append(mode_response(model, x, d0, s, probes[:, :1]))
        xi.append(correlation_length(model, x, d0, s, SITES[:2]))
    modes, xi = torch.stack(modes, 1), torch.stack(xi, 1)
    res, _ = bootstrap(lv, {"x0": x0, "low_mode": modes[:, :, 1], "corr_length": xi}, None, boot, seed0)
    return {"levels": lv, "trajectories": n, "train_images": n_train or len(digits.load("train")[0]),
            "seconds_per_image_call": per_call, "final_classes": final_class.tolist(),
            "commitment_x0": wilson_curve(x0),
            "mode_gain": [[_mean_ci(modes[:, k, b]) for b in range(BANDS)] for k in range(len(lv))],
            "corr_length": [_mean_ci(xi[:, k]) for k in range(len(lv))], "sigma_c": res}


def markdown(r):
    net = r["network"]
    lines = [f"Unconditional trajectories of the trained network: {r['trajectories']} (seeds {r['seeds'][0]}-{r['seeds'][1]}), "
             f"final classes {r['class_counts']}; chance that two samples share a class {r['chance_keep']:.3f}.", "",
             "| measure | sigma_c (95% bootstrap) |", "|---|---|"]
    label = {"x0": "classifier on D(x_sigma) = final class crosses 1/2", "renoise": "renoised final sample keeps class crosses 1/2",
             "clone": "cloned state (ancestral re-solve) keeps class crosses 1/2",
             "low_mode": "steepest change of the low-band gain <v, J v>", "low_mode_half": "low-band gain crosses 1/2",
             "corr_length": "peak of the correlation length",
             "estimate_node": "pack estimate (probe_sigma_c from 80, median)",
             "estimate_from_20": "probe_sigma_c from 20 (median)",
             "detector_jvp": "pack detector, JVP (median over samples)", "detector_speed": "pack detector, x0-speed peak (median)",
             "speed_offline": "x0-speed peak on the unconditional ODE (median)"}
    for k, v in net["sigma_c"].items():
        lines.append(f"| {label[k]} | {_fmt(v)} |")
    g = r["gaussian"]
    num = lambda v: "none" if v is None else f"{v:.3g}"
    lines += ["", f"Gaussian model of the training data: low-band gain changes fastest at {num(g['sigma_c_low_mode'])} and "
                  f"crosses 1/2 at {num(g['low_mode_half'])}; "
                  f"sqrt(top covariance eigenvalue) = {g['sigma_c_top_eigenvalue']:.3g}. Pulse detector: "
                  f"{net['detector']['measured_fraction']:.0%} of samples measured (g < 1/2 at a probe).", "",
              "| ratio | value (95% bootstrap) |", "|---|---|"]
    for k, v in net["ratios"].items():
        if "renoise" not in k:
            continue
        ci = f" ({v['ci'][0]:.3g}-{v['ci'][1]:.3g})" if v["ci"] else ""
        lines.append(f"| {k} | {v['ratio']:.3g}{ci} |")
    cols = ("x0", "renoise", "clone", "low_mode", "corr_length", "detector_jvp", "detector_speed", "estimate_node")
    lines += ["", "| class | n | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for c, v in net["per_class"].items():
        s = v["sigma_c"]
        lines.append(f"| {c} | {v['n']} | " + " | ".join(_fmt(s[k]) for k in cols) + " |")
    lines += ["", "| sigma | " + " | ".join(f"band {b}" for b in range(BANDS)) + " | Gaussian band 1 | xi | xi Gaussian "
              "| x0 keeps | renoise keeps | clone keeps |", "|---" * (BANDS + 8) + "|"]
    for k, s in enumerate(r["levels"]):
        row = [f"{s:.3g}"] + [f"{m[0]:.2f} ({m[1]:.2f}-{m[2]:.2f})" for m in net["mode_gain"][k]]
        row += [f"{g['mode_gain'][k][1]:.2f}", "{:.2f} ({:.2f}-{:.2f})".format(*net["corr_length"][k]),
                f"{g['corr_length'][k]:.2f}"]
        row += ["{:.2f} ({:.2f}-{:.2f})".format(*net["commitment"][p][k]) for p in ("x0", "renoise", "clone")]
        lines.append("| " + " | ".join(row) + " |")
    if "els" in r:
        e = r["els"]
        lines += ["", f"ELS ({e['trajectories']} trajectories over {e['train_images']} training images, "
                      f"{e['seconds_per_image_call']:.2f} s per image and call): final classes {e['final_classes']}", "",
                  "| measure | sigma_c (95% bootstrap) |", "|---|---|"]
        for k, v in e["sigma_c"].items():
            lines.append(f"| {label[k]} | {_fmt(v)} |")
        lines += ["", "| sigma | band 1 gain | xi | x0 keeps |", "|---|---|---|---|"]
        for k, s in enumerate(e["levels"]):
            lines.append(f"| {s:.3g} | " + "{:.2f} ({:.2f}-{:.2f})".format(*e["mode_gain"][k][1]) + " | "
                         + "{:.2f} ({:.2f}-{:.2f})".format(*e["corr_length"][k]) + " | "
                         + "{:.2f} ({:.2f}-{:.2f})".format(*e["commitment_x0"][k]) + " |")
    return "\n".join(lines)


def vline(label, x, lo, hi):
    """A vertical marker as a two-point series (charts.line_chart draws lines between points)."""
    return (label, [x, x * 1.0001], [lo, hi])


def figure(r):
    """Four panels: mode gains, correlation length, commitment, sigma_c per class."""
    from ..charts import line_chart, stack

    lv, net, g = r["levels"], r["network"], r["gaussian"]
    sc = {k: v["sigma_c"] for k, v in net["sigma_c"].items()}
    modes = [(f"band {b}", lv, [m[b][0] for m in net["mode_gain"]]) for b in range(BANDS)]
    modes.append(("Gaussian band 1", lv, [m[1] for m in g["mode_gain"]]))
    if "els" in r:
        modes.append(("ELS band 1", r["els"]["levels"], [m[1][0] for m in r["els"]["mode_gain"]]))
    a = line_chart(modes, "(a) gain <v,Jv> per band", "sigma", "gain", xlog=True, size=(560, 380))
    xi = [("network", lv, [v[0] for v in net["corr_length"]]), ("lo", lv, [v[1] for v in net["corr_length"]]),
          ("hi", lv, [v[2] for v in net["corr_length"]]), ("Gaussian", lv, g["corr_length"])]
    if "els" in r:
        xi.append(("ELS", r["els"]["levels"], [v[0] for v in r["els"]["corr_length"]]))
    b = line_chart(xi, "(b) correlation length xi (px)", "sigma", "xi", xlog=True, size=(560, 380))
    com = [(p, lv, [v[0] for v in net["commitment"][p]]) for p in ("x0", "renoise", "clone")]
    if "els" in r:
        com.append(("ELS x0", r["els"]["levels"], [v[0] for v in r["els"]["commitment_x0"]]))
    for k in ("renoise", "detector_jvp"):
        if sc.get(k):
            com.append(vline(f"| {k}", sc[k], 0, 1))
    c = line_chart(com, "(c) fraction keeping its class", "sigma", "fraction", xlog=True, size=(560, 380))
    per = [(k, [int(c) for c in net["per_class"]], [v["sigma_c"][k]["sigma_c"] for v in net["per_class"].values()])
           for k in ("x0", "renoise", "clone", "low_mode", "corr_length", "detector_jvp", "estimate_node")]
    d = line_chart(per, "(d) sigma_c per class", "class", "sigma_c", ylog=True, size=(560, 380), integer_x=True)
    from PIL import Image

    top, bottom = stack([a, b]), stack([c, d])
    out = Image.new("RGB", (max(top.width, bottom.width), top.height + bottom.height + 6), "white")
    out.paste(top, (0, 0))
    out.paste(bottom, (0, top.height + 6))
    return out


def cmd(args):
    start = time.perf_counter()
    size = QUICK if args.quick else FULL
    r = study(**size, seed0=args.seed0)
    path = output.folder("critical", args.out)
    figure(r).save(path / "critical.png", optimize=True)
    md = output.write(path, "critical", r, markdown(r) + "\n\n![critical](critical.png)", time.perf_counter() - start)
    print(markdown(r))
    print(f"wrote {md}")


FULL = dict(n_traj=200, levels=14, n_els=4, els_levels=7, probes_per_band=2, boot=400)
QUICK = dict(n_traj=12, levels=5, n_els=1, els_levels=3, els_train=30, probes_per_band=1, boot=40, detector_steps=6,
             substeps=2)


def trajectory_parser(sub, name, help, fn):
    """A study subcommand with the options the trajectory studies share: --quick, --seed0, --out."""
    p = sub.add_parser(name, help=help)
    p.add_argument("--quick", action="store_true", help="a small form for the tests (seconds)")
    p.add_argument("--seed0", type=int, default=EVAL_SEED0, help="first trajectory seed (default %(default)s)")
    p.add_argument("--out", default=None, help=f"output folder (default docs/studies/{name})")
    p.set_defaults(fn=fn)
    return p


def add_study(sub):
    trajectory_parser(sub, "critical", "critical phenomena along the reverse process: mode response, correlation "
                                       "length, class commitment, and the pack's sigma_c detector", cmd)
