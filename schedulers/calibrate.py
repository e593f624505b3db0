"""A schedule calibrated for the model at hand (pure torch; the caller supplies the model, SCIENCE.md §4).

1. Reference: one fine Heun trajectory (EDM, Karras et al. 2022) from a few start states x_T over a teacher
   grid (at most `reference_calls` model calls, the batch of seeds counting once), recording at every
   grid level s_j the state x_j and the x0 prediction D_j there, and per sample a Jacobian gain
   g_j = <D(x_j) - D(x~_j), x_j - x~_j> / |x_j - x~_j|^2 from the two calls Heun makes at level s_j
   (at its Euler predictor x~_j and at the corrected x_j): the model's response along the direction in
   which a solver's error lies, at no extra call.
2. Surrogate: D(x; s_j) ~ D_j + g_j (x - x_j), linear in x, so every state a solver reaches lies in the
   span of {x_j, D_j}; an orthonormal basis of that span per sample makes each simulated run cost a few
   hundred numbers instead of a latent, exactly.
3. Search (as OSS, arXiv 2503.21774, and GITS, arXiv 2405.11326): dynamic programming over the grid, best
   path reaching level j in k steps = the one whose simulated solver state is nearest the reference x_j,
   for k = 1..K, ending at 0; then coordinate descent on the simulated final error. Any registered
   solver is simulated by running its own function on the surrogate, so no solver is written twice.
"""
import hashlib
import json
import logging
import math
import numbers
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..samplers import REGISTRY as SAMPLERS
from ..samplers.space import resolve
from .registry import REGISTRY, check_range, first_tie

F64 = torch.float64


@dataclass
class Reference:
    """The teacher trajectory: grid levels s [M+1] (last 0), states xs [M+1, B, r], predictions ds [M, B, r]
    and gains [M, B], in orthonormal coordinates per sample (|x - y| is kept exactly)."""

    s: list
    xs: torch.Tensor
    ds: torch.Tensor
    gains: torch.Tensor
    calls: int
    x_end: torch.Tensor


def teacher_steps(calls):
    """Heun steps of the teacher grid for `calls` model calls (2 per step, 1 on the last step to 0)."""
    return max(2, (calls + 1) // 2)


def max_steps(reference_calls):
    """The most steps a schedule calibrated on a `reference_calls` reference can have: its path must skip at
    least one teacher level (steps < len(grid) - 1)."""
    return teacher_steps(reference_calls) - 1


def check_budget(steps, reference_calls):
    """reference_calls as an int once it is an integer in [3, 200] and steps <= max_steps(reference_calls); a
    ValueError naming the parameter otherwise (before any model call)."""
    if isinstance(reference_calls, bool) or not isinstance(reference_calls, numbers.Integral) or not 3 <= reference_calls <= 200:
        raise ValueError(f"reference_calls must be an integer in [3, 200], got {reference_calls!r}")
    reference_calls = int(reference_calls)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= max_steps(reference_calls):
        raise ValueError(f"steps must be an integer in [1, {max_steps(reference_calls)}] with reference_calls = {reference_calls} "
                         f"(the schedule is chosen among the reference's {teacher_steps(reference_calls) + 1} levels), got {steps!r}")
    return reference_calls


def teacher_grid(sigma_min, sigma_max, calls, space):
    """Heun's grid for `calls` model calls (`teacher_steps`): Karras rho = 7 levels."""
    steps = teacher_steps(calls)
    return REGISTRY["karras"].fn(steps, sigma_min, sigma_max, space=space).tolist()


def reference(model, x_T, sigma_min, sigma_max, space="ve", extra_args=None, calls=200, progress=None):
    """The fine reference trajectory of `model` from x_T (module docstring, step 1)."""
    space = resolve(space)
    s = teacher_grid(sigma_min, sigma_max, calls, space)
    seen, states = [], []

    def recording(x, sigma, **kw):
        d = model(x, sigma, **kw)
        seen.append((float(sigma.reshape(-1)[0]), flat(x), flat(d)))
        if progress is not None:
            progress(len(seen), 2 * len(s) - 3)
        return d

    def step(info):
        states.append((flat(info["x"]), flat(info["denoised"])))

    grid = torch.tensor(s, dtype=x_T.dtype)
    s = grid.tolist()  # the levels the solver will see, in x's precision
    x_end = SAMPLERS["heun"].fn(recording, x_T, grid, extra_args=extra_args,
                                callback=step, disable=True, space=space.name)
    xs = [x for x, _ in states] + [flat(x_end)]
    ds = [d for _, d in states]
    gains = []
    for j, (x, d) in enumerate(states):
        other = [(xo, do) for level, xo, do in seen if level == s[j] and not torch.equal(xo, x)]
        if not other:
            gains.append(torch.zeros(x.shape[0], dtype=F64))
            continue
        dx, dd = x - other[0][0], d - other[0][1]
        gains.append((dd * dx).sum(1) / dx.pow(2).sum(1).clamp_min(1e-300))
    xs, ds = torch.stack(xs), torch.stack(ds)
    basis = orthonormal_coordinates(torch.cat([xs, ds]))
    return Reference(s, basis[: len(xs)], basis[len(xs):], torch.stack(gains).clamp(0.0, 1.5), len(seen), xs[-1])


def flat(x):
    """A float64 copy [B, N] (the solver may later change its tensors in place)."""
    return x.detach().to(F64, copy=True).flatten(1)


def orthonormal_coordinates(vectors):
    """Coordinates [V, B, r] of vectors [V, B, N] in an orthonormal basis of their span, per sample b."""
    if vectors.shape[2] <= vectors.shape[0]:
        return vectors
    q = torch.linalg.qr(vectors.permute(1, 2, 0)).Q  # [B, N, V]
    return torch.einsum("vbn,bnr->vbr", vectors, q)


def surrogate(ref: Reference):
    """The linear surrogate model D(x; s) = D_j + g_j (x - x_j) at grid levels, linear in s between them."""
    s = torch.tensor(ref.s, dtype=F64)

    def model(x, sigma, **kw):
        level = float(sigma.reshape(-1)[0])
        j = int(torch.searchsorted(-s, torch.tensor(-level, dtype=F64), right=True)) - 1
        j = min(max(j, 0), len(ref.s) - 2)
        w = (ref.s[j] - level) / (ref.s[j] - ref.s[j + 1])
        if j + 1 >= len(ref.ds) or w == 0.0:
            return ref.ds[j] + ref.gains[j, :, None] * (x - ref.xs[j])
        d = torch.lerp(ref.ds[j], ref.ds[j + 1], w)
        g = torch.lerp(ref.gains[j], ref.gains[j + 1], w)
        return d + g[:, None] * (x - torch.lerp(ref.xs[j], ref.xs[j + 1], w))

    return model


def simulate(ref, model, solver, path, space, options):
    """The solver's state after the grid levels `path` (indices), on the surrogate."""
    sig = torch.tensor([ref.s[i] for i in path], dtype=F64)
    return SAMPLERS[solver].fn(model, ref.xs[path[0]], sig, disable=True, space=space, **options)


def path_error(ref, model, solver, path, space, options):
    x = simulate(ref, model, solver, path, space, options)
    return float((x - ref.xs[path[-1]]).pow(2).sum(1).mean().sqrt())


def search(ref, solver, steps, space="ve", options=None, candidates=32, progress=None):
    """Grid indices of `steps` + 1 levels from the top to 0 minimising the solver's simulated final error
    (module docstring, step 3). Returns (path, surrogate RMS error per sample and coordinate)."""
    space, options = resolve(space).name, dict(options or {})
    model = surrogate(ref)
    last = len(ref.s) - 1
    if not 1 <= steps < last:
        raise ValueError(f"steps must be an integer in [1, {last - 1}] for this reference, got {steps!r}")
    count = min(max(candidates, steps), last)  # a path of `steps` levels needs steps grid levels before the last
    grid = sorted(set(round(v) for v in torch.linspace(0, last - 1, count).tolist()))
    best = {0: ([0], 0.0)}
    for k in range(1, steps + 1):
        targets = [last] if k == steps else [j for j in grid if j >= k]
        nxt = {}
        for j in targets:
            options_j = [(path_error(ref, model, solver, p + [j], space, options), p + [j])
                         for i, (p, _) in best.items() if i < j and last - j >= steps - k]
            if options_j:
                e, p = min(options_j)
                nxt[j] = (p, e)
        best = nxt
        if progress is not None:
            progress(k, steps)
    path, err = best[last]
    path, err = refine(ref, model, solver, path, space, options, err)
    n = ref.xs.shape[2]
    return path, err / math.sqrt(n)


def refine(ref, model, solver, path, space, options, err, sweeps=4):
    """Coordinate descent: move each inner level to any grid level between its neighbours while the
    simulated final error falls."""
    path = list(path)
    for _ in range(sweeps):
        improved = False
        for pos in range(1, len(path) - 1):
            for j in range(path[pos - 1] + 1, path[pos + 1]):
                if j == path[pos]:
                    continue
                trial = path[:pos] + [j] + path[pos + 1:]
                e = path_error(ref, model, solver, trial, space, options)
                if e < err:
                    path, err, improved = trial, e, True
        if not improved:
            break
    return path, err


@dataclass
class Calibration:
    sigmas: list
    solver: str
    steps: int
    model_calls: int
    seconds: float
    error: float


GAIN_SCALES = (1.0, 0.5, 2.0)


def calibrate(model, x_T, sigma_min, sigma_max, solver, steps, space="ve", extra_args=None, options=None,
              reference_calls=200, progress=None):
    """The calibrated schedule (steps + 1 host levels ending in 0) of `solver` for `model` from start states
    x_T [B, ...] at sigma_max: `reference`, then `choose`. progress(stage, done, total) is called along the
    way and may raise to cancel."""
    check_range(steps, sigma_min, sigma_max)
    reference_calls = check_budget(steps, reference_calls)
    if solver not in SAMPLERS:
        raise ValueError(f"solver must be one of {sorted(SAMPLERS)}, got {solver!r}")
    t0 = time.perf_counter()
    ref = reference(model, x_T, sigma_min, sigma_max, space, extra_args, reference_calls, _stage(progress, "reference"))
    cal = choose(model, x_T, ref, solver, steps, space, extra_args, options, progress)
    cal.seconds = time.perf_counter() - t0
    return cal


def _stage(progress, name):
    return (lambda done, total: progress(name, done, total)) if progress else (lambda done, total: None)


def choose(model, x_T, ref, solver, steps, space="ve", extra_args=None, options=None, progress=None):
    """Given the reference: one surrogate search per Jacobian-gain scale in GAIN_SCALES (the gain is measured
    along one direction only), then each candidate, Karras' schedule among them, run once on the real model
    (steps calls each, the seeds batched); the one ending nearest the reference end state is kept."""
    if solver not in SAMPLERS:
        raise ValueError(f"solver must be one of {sorted(SAMPLERS)}, got {solver!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps < len(ref.s) - 1:
        raise ValueError(f"steps must be an integer in [1, {len(ref.s) - 2}], got {steps!r}")
    space, options = resolve(space), dict(options or {})
    t0 = time.perf_counter()
    candidates = [REGISTRY["karras"].fn(steps, ref.s[-2], ref.s[0], space=space).tolist()]
    for k, scale in enumerate(GAIN_SCALES):
        scaled = Reference(ref.s, ref.xs, ref.ds, ref.gains * scale, ref.calls, ref.x_end)
        path, _ = search(scaled, solver, steps, space, options)
        candidates.append([ref.s[i] for i in path])
        _stage(progress, "search")(k + 1, len(GAIN_SCALES))
    calls = [0]

    def counted(x, sigma, **kw):
        calls[0] += 1
        return model(x, sigma, **kw)

    scored = []
    for k, sig in enumerate(candidates):
        x = SAMPLERS[solver].fn(counted, x_T, torch.tensor(sig, dtype=x_T.dtype), extra_args=extra_args,
                                disable=True, space=space.name, **options)
        scored.append((float((flat(x) - ref.x_end).pow(2).mean(1).sqrt().mean()), k))
        _stage(progress, "verify")(k + 1, len(candidates))
    err, k = min(scored)
    return Calibration(candidates[k], solver, steps, ref.calls + calls[0], time.perf_counter() - t0, err)


FORMAT = "samplerlab.calibrated_schedule/1"


def cache_path(directory, key: dict) -> Path:
    """The cache file of a calibration key (a JSON-able dict: model identity, solver, options, steps, ...)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return Path(directory) / f"{key.get('solver', 'schedule')}-{key.get('steps', 0)}-{digest}.json"


def check_cache_dir(directory) -> Path:
    """The cache folder as a Path once it is (or can be made) a writable directory: created if missing and probed
    with a temporary file. A ValueError naming cache_dir otherwise (a file, a read-only or missing parent, a path
    under /proc, ...); call it before calibrating so that a finished calibration is never lost to a bad folder."""
    folder = Path(directory)
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"{folder} is not a directory")
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"cache_dir {str(folder)!r} cannot hold the calibration cache ({type(e).__name__}: {e}); "
                         "choose a writable folder") from e
    return folder


def _number(v, name, low=-math.inf, high=math.inf, integer=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        raise ValueError(f"{name} is {v!r}, not {'an integer' if integer else 'a number'}")
    if not (math.isfinite(v) and low <= v <= high):
        raise ValueError(f"{name} = {v!r} is outside [{low}, {high}]")
    return v


def validated(data, key: dict, levels=None) -> Calibration:
    """The Calibration in a parsed cache file, once format, key, field types and the schedule check out:
    steps + 1 finite numbers strictly descending in float32 (`registry.first_tie`) to a final 0, starting at the
    model's sigma_max when levels = (sigma_min, sigma_max) is given. A ValueError saying what is wrong otherwise."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("not a samplerlab calibration file")
    if data.get("key") != json.loads(json.dumps(key, sort_keys=True)):
        raise ValueError("written for another model, solver or format")
    fields = data.get("calibration")
    if not isinstance(fields, dict) or set(fields) != set(Calibration.__dataclass_fields__):
        raise ValueError(f"its calibration fields are not {sorted(Calibration.__dataclass_fields__)}")
    cal = Calibration(**fields)
    if not isinstance(cal.solver, str) or cal.solver != key.get("solver", cal.solver):
        raise ValueError(f"solver is {cal.solver!r}")
    _number(cal.steps, "steps", 1, key.get("steps", math.inf), integer=True)
    _number(cal.model_calls, "model_calls", 0, integer=True)
    _number(cal.seconds, "seconds", 0)
    _number(cal.error, "error", 0)
    s = cal.sigmas
    if not isinstance(s, list) or len(s) != cal.steps + 1:
        raise ValueError(f"sigmas is not a list of steps + 1 = {cal.steps + 1} levels")
    for v in s:
        _number(v, "a sigma", 0, 3e38)
    if s[-1] != 0 or first_tie(torch.tensor(s, dtype=F64)) is not None:
        raise ValueError("its sigmas are not a strictly descending schedule ending in 0")
    if levels is not None and not (math.isclose(s[0], levels[1], rel_tol=1e-6) and min(s[:-1]) >= levels[0] * (1 - 1e-6)):
        raise ValueError(f"its sigmas {s[0]:.6g}..{min(s[:-1]):.6g} leave the model's range [{levels[0]:.6g}, {levels[1]:.6g}]")
    return cal


def load_cached(directory, key: dict, levels=None):
    """The cached Calibration for `key`, or None when absent; a corrupt, foreign or unreadable file (or a
    directory in its place) is ignored with a warning (it will be recomputed). `levels` = (sigma_min,
    sigma_max) of the model, when known, is checked too (`validated`)."""
    return read_cached(cache_path(directory, key), lambda data: validated(data, key, levels))


def read_cached(path: Path, parse):
    """parse(the JSON at path), or None when the file is absent; a file that cannot be read or parsed (parse
    raising ValueError, TypeError, KeyError, ...) is ignored with a warning, to be recomputed."""
    try:
        if not path.exists():
            return None
        return parse(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError, AttributeError, OSError, RecursionError, UnicodeDecodeError) as e:
        logging.warning("samplerlab: calibration cache %s is unusable (%s); recalibrating", path, e)
        return None


def save_cached(directory, key: dict, cal: Calibration) -> Path:
    """Write the calibration as JSON atomically (`write_atomic`); a ValueError naming cache_dir when it cannot be
    written (the caller still holds `cal`)."""
    path = cache_path(directory, key)
    text = json.dumps({"format": FORMAT, "key": key, "calibration": asdict(cal)}, indent=1, sort_keys=True, allow_nan=False)
    write_atomic(path, text, directory)
    return path


def write_atomic(path: Path, text: str, directory=None):
    """Write text to path atomically: a temporary file in the same directory, then os.replace; a ValueError
    naming cache_dir (`directory`, else the file's folder) when it cannot be written."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        where = str(path.parent if directory is None else directory)
        raise ValueError(f"cache_dir {where!r}: cannot write {path.name} ({type(e).__name__}: {e})") from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
