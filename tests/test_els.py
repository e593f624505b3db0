"""lab/els.py: the ELS machine and the empirical denoiser against direct computations on small sets."""
import json
import math

import pytest
import torch

from samplerlab.lab import els
from samplerlab.lab.els import ELS, Empirical, PatchSchedule

F64 = torch.float64


def direct_els(ys, x, a, s, p, padding):
    """The ELS formula pixel by pixel, patch by patch, with explicit loops (module docstring)."""
    n, c, h, w = ys.shape
    d = p // 2

    def patch(img, i, j):
        out = torch.zeros(c, p, p, dtype=F64)
        for u in range(p):
            for v in range(p):
                r, col = i - d + u, j - d + v
                if padding == "circular":
                    out[:, u, v] = img[:, r % h, col % w]
                elif 0 <= r < h and 0 <= col < w:
                    out[:, u, v] = img[:, r, col]
        return out

    def border(i, size):
        return min(i, d), min(size - 1 - i, d)

    out = torch.zeros(c, h, w, dtype=F64)
    for i in range(h):
        for j in range(w):
            px, logits, values = patch(x, i, j), [], []
            for y in ys:
                for k in range(h):
                    for m in range(w):
                        if padding == "zero" and (border(k, h) != border(i, h) or border(m, w) != border(j, w)):
                            continue
                        logits.append(-((px - a * patch(y, k, m)) ** 2).sum() / (2 * s * s))
                        values.append(y[:, k, m])
            wts = torch.softmax(torch.stack(logits), 0)
            out[:, i, j] = (wts[:, None] * torch.stack(values)).sum(0)
    return out


def data(n=3, shape=(2, 5, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=F64), torch.randn(2, *shape, generator=g, dtype=F64)


LEVELS = (torch.tensor([1.0, 0.7], dtype=F64), torch.tensor([0.8, 0.3], dtype=F64))


@pytest.mark.parametrize("padding", els.PADDINGS)
@pytest.mark.parametrize("p", [1, 3, 5])
def test_els_equals_the_direct_formula(padding, p):
    ys, x = data()
    ref = torch.stack([direct_els(ys, x[b], float(LEVELS[0][b]), float(LEVELS[1][b]), p, padding) for b in range(2)])
    for chunk in (10, 2000, 1 << 20):  # one training image per block, several, all
        out = ELS(ys, schedule=[(1.0, p)], padding=padding, chunk=chunk).denoise(x, *LEVELS)
        assert torch.allclose(out, ref, atol=1e-12, rtol=0)


def test_empirical_equals_the_whole_image_softmax_and_full_patch_els():
    ys, x = data(n=5, shape=(1, 5, 5))
    out = Empirical(ys, chunk=2).denoise(x, *LEVELS)
    for b in range(2):
        a, s = LEVELS[0][b], LEVELS[1][b]
        w = torch.softmax(-((x[b] - a * ys) ** 2).flatten(1).sum(1) / (2 * s * s), 0)
        assert torch.allclose(out[b], (w[:, None, None, None] * ys).sum(0), atol=1e-13)
    # zero padding, P = 2H - 1: every patch covers the whole image at one position only
    full = ELS(ys, schedule=[(1.0, 9)], padding="zero").denoise(x, *LEVELS)
    assert torch.allclose(full, out, atol=1e-13)


@pytest.mark.parametrize("machine", ["els", "empirical"])
def test_peak_block_is_set_by_chunk_whatever_the_training_set(machine, monkeypatch):
    ys, x = data(n=40, shape=(1, 4, 4))
    x = torch.cat([x, x.flip(0), x * 0.5])
    sizes = []
    update = els._Stream.update
    monkeypatch.setattr(els._Stream, "update", lambda self, logits, *a: sizes.append(logits.numel()) or update(self, logits, *a))
    make = (lambda c: ELS(ys, schedule=[(1.0, 3)], chunk=c)) if machine == "els" else (lambda c: Empirical(ys, chunk=c))
    levels = torch.ones(6, dtype=F64), torch.full((6,), 0.6, dtype=F64)
    outs = {}
    for chunk in (256, 1000, 5000, 10 ** 6):
        sizes.clear()
        outs[chunk] = make(chunk).denoise(x, *levels)
        floor = 16 * 16 if machine == "els" else 6
        assert max(sizes) <= max(chunk, floor)
    assert len({round(float(o.sum()), 10) for o in outs.values()}) == 1
    assert all(torch.allclose(o, outs[256], atol=1e-13) for o in outs.values())


@pytest.mark.parametrize("machine", [ELS, Empirical])
def test_flow_form_is_the_exact_change_of_variables(machine):
    ys, x = data(n=4, shape=(1, 6, 6))
    problem = machine(ys)
    t = torch.tensor([0.3, 0.8], dtype=F64)
    flow = problem.model("flow")(x, t)
    ve = problem.model("ve")(x / (1 - t)[:, None, None, None], t / (1 - t))
    assert torch.allclose(flow, ve, atol=1e-12)
    pure = problem.model("flow")(x, torch.ones(2, dtype=F64))  # alpha = 0: every candidate weighs the same
    assert torch.isfinite(pure).all()
    if machine is Empirical:
        assert torch.allclose(pure, ys.mean(0).expand_as(pure), atol=1e-12)


def test_class_conditional_is_the_class_subset_and_null_is_everything():
    ys, x = data(n=6, shape=(1, 5, 5))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    cond = ELS(ys, labels, classes=3, schedule=[(1.0, 3)])
    out = cond.denoise(x, *LEVELS, labels=torch.tensor([1, 3]))
    assert torch.allclose(out[:1], ELS(ys[labels == 1], schedule=[(1.0, 3)]).denoise(x[:1], LEVELS[0][:1], LEVELS[1][:1]), atol=1e-13)
    assert torch.allclose(out[1:], ELS(ys, schedule=[(1.0, 3)]).denoise(x[1:], LEVELS[0][1:], LEVELS[1][1:]), atol=1e-13)
    draws, _ = cond.draw([1, 2, 3])
    assert draws.shape == (3, 1, 5, 5)


def test_bad_input_is_a_clear_error():
    ys, x = data(n=3, shape=(1, 5, 5))
    labels = torch.tensor([0, 1, 1])
    with pytest.raises(ValueError, match=r"\[B, 1, 5, 5\]"):
        ELS(ys).denoise(torch.zeros(1, 1, 4, 4, dtype=F64), *[v[:1] for v in LEVELS])
    with pytest.raises(ValueError, match="label must be in"):
        ELS(ys, labels, classes=2).denoise(x, *LEVELS, labels=torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        Empirical(ys).denoise(x, LEVELS[0], torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match="odd"):
        PatchSchedule([(1.0, 4)])
    with pytest.raises(ValueError, match=r"odd in \[1, 9\]"):
        ELS(ys, schedule=lambda s: 11).denoise(x, *LEVELS)
    with pytest.raises(ValueError, match="padding"):
        ELS(ys, padding="reflect")
    with pytest.raises(ValueError, match="chunk"):
        Empirical(ys, chunk=0)


def test_schedule_picks_the_nearest_level_in_log_sigma(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"sigmas": [0.1, 1.0, 10.0], "sizes": [3, 5, 9]}))
    sched = PatchSchedule.load(path)
    assert [sched(s) for s in (0.01, 0.2, 0.4, 2.0, 4.0, 1e3, math.inf)] == [3, 3, 5, 5, 9, 9, 9]


def test_breaks_are_where_the_patch_size_changes():
    sched = PatchSchedule([(0.1, 3), (0.4, 3), (1.0, 5), (10.0, 9)])
    assert sched.breaks() == pytest.approx((math.sqrt(0.4), math.sqrt(10.0)))
    for b in sched.breaks():
        assert sched(b * (1 - 1e-9)) != sched(b * (1 + 1e-9))
    machine = ELS(*data()[:1], schedule=sched)
    assert machine.breaks == sched.breaks()
    machine.schedule = PatchSchedule([(1.0, 3), (4.0, 5)])
    assert machine.breaks == pytest.approx((2.0,))
    assert ELS(*data()[:1], schedule=lambda s: 3).breaks == ()


def test_cost_formula():
    assert els.flops(10, (1, 4, 4), 3) == 10 * 256 * (2 * 9 + 2 + 1)


def test_calibration_recovers_the_schedule_of_a_known_machine():
    ys, _ = data(n=8, shape=(1, 8, 8), seed=1)
    held, _ = data(n=3, shape=(1, 8, 8), seed=2)
    truth = PatchSchedule([(0.1, 1), (0.5, 3), (2.0, 7)])
    network = ELS(ys, schedule=truth)
    machine = ELS(ys)
    points, table = els.calibrate(network, machine, held, None, [0.1, 0.5, 2.0], [1, 3, 5, 7], seed=0)
    assert points == [(0.1, 1), (0.5, 3), (2.0, 7)]
    assert torch.allclose(table.max(1).values, torch.ones(3, dtype=F64))
    assert machine.schedule(0.5) == 5  # its own (development) schedule is restored


def test_r2_is_one_for_a_perfect_match_and_zero_for_the_mean():
    t = torch.randn(2, 1, 4, 4, dtype=F64)
    assert torch.allclose(els.r2(t, t), torch.ones(2, dtype=F64))
    mean = t.flatten(1).mean(1).view(2, 1, 1, 1).expand_as(t)
    assert torch.allclose(els.r2(mean, t), torch.zeros(2, dtype=F64), atol=1e-12)


def test_shipped_schedule_is_valid_and_says_how_it_was_made():
    data = json.loads(els.SCHEDULE_FILE.read_text())
    sched = PatchSchedule.load()
    assert [sched(s) for s in data["sigmas"]] == data["sizes"]
    assert data["command"].startswith("python -m samplerlab.lab.els calibrate --network ")
    assert len(data["evaluation"]["median_r2"]) == len(data["sigmas"]) == len(data["calibration"]["median_r2"])


def test_nearest_distance_is_zero_for_a_training_image():
    pool = torch.randn(5, 1, 4, 4, dtype=F64)
    d = els.nearest_distance(torch.stack([pool[2], pool[2] + 0.5]), pool)
    assert torch.allclose(d, torch.tensor([0.0, 0.5], dtype=F64), atol=1e-6)


def test_els_is_a_lab_problem_with_a_reference():
    from samplerlab.lab import problems
    from samplerlab.lab.runner import registry_contenders, run_grid

    problem = problems.make("els")
    assert problem.name == "els" and problem.classes == 10 and problem.breaks == problem.schedule.breaks() != ()
    problem.reference_steps = 8
    (rec,) = run_grid(problem, registry_contenders(["euler"]), ["karras"], [4], range(2), "ve")
    assert rec.problem == "els" and rec.nfe == 4 and 0 < rec.error < 1
