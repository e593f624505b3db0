"""The A/B engine and its metrics (pure core): SSIM, PSNR, t-intervals, band energies, x0 speed,
schedule resampling, paired runs, failures, and the compare CLI."""
import json
import math

import pytest
import torch

from samplerlab.lab import cli, compare, metrics
from samplerlab.schedulers import REGISTRY as SCHEDULERS


def test_shapes_must_match():
    with pytest.raises(ValueError, match=r"latent: shape \(2, 4\) differs from the reference's \(2, 5\)"):
        metrics.same_shape(torch.zeros(2, 4), torch.zeros(2, 5), "latent")
    with pytest.raises(ValueError, match="shape"):
        metrics.psnr(torch.zeros(1, 3), torch.zeros(1, 4))


def test_psnr_of_known_error_and_cap():
    ref = torch.tensor([[0.0, 2.0, 1.0, 1.0]], dtype=torch.float64)
    x = ref + torch.tensor([[0.1, -0.1, 0.1, -0.1]], dtype=torch.float64)
    assert float(metrics.psnr(x, ref)) == pytest.approx(20 * math.log10(2 / 0.1))
    assert float(metrics.psnr(ref, ref)) == metrics.PSNR_CAP_DB


def test_ssim_identity_constant_shift_and_one_window():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 16, 16, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(metrics.ssim(a, a), torch.ones(2, dtype=torch.float64))
    b = (a + 0.1 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    assert torch.allclose(metrics.ssim(a, b), metrics.ssim(b, a))
    # constant images: only the luminance term is left, (2 mu nu + C1) / (mu^2 + nu^2 + C1)
    c1 = 0.01 ** 2
    s = metrics.ssim(torch.full((1, 11, 11, 1), 0.3), torch.full((1, 11, 11, 1), 0.5))
    assert float(s) == pytest.approx((2 * 0.3 * 0.5 + c1) / (0.3 ** 2 + 0.5 ** 2 + c1), rel=1e-6)
    # an 11x11 image has exactly one window: the weighted statistics written out directly
    x, y = a[:1, :11, :11, :1], b[:1, :11, :11, :1]
    w = metrics._gauss_window()[:, :, None]
    mx, my = (w * x[0]).sum(), (w * y[0]).sum()
    vx, vy, cxy = (w * (x[0] - mx) ** 2).sum(), (w * (y[0] - my) ** 2).sum(), (w * (x[0] - mx) * (y[0] - my)).sum()
    want = (2 * mx * my + c1) * (2 * cxy + 0.03 ** 2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + 0.03 ** 2))
    assert float(metrics.ssim(x, y)) == pytest.approx(float(want), rel=1e-9)
    with pytest.raises(ValueError, match="11x11"):
        metrics.ssim(torch.zeros(1, 8, 8, 3), torch.zeros(1, 8, 8, 3))


@pytest.mark.parametrize("df,q", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (7, 2.3646), (30, 2.0423)])
def test_t_quantiles_match_tables(df, q):
    assert metrics.t_quantile(0.975, df) == pytest.approx(q, abs=2e-4)


def test_mean_ci_t_and_paired():
    mean, ci = metrics.mean_ci_t([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and ci == pytest.approx(3.1824 * math.sqrt(5 / 3) / 2, rel=1e-4)
    assert metrics.mean_ci_t([5.0]) == (5.0, 0.0)
    p = metrics.paired([1.0, 2.0, 3.0], [2.0, 2.5, 3.5])
    assert p["mean_diff"] == pytest.approx(-2 / 3) and p["lower"] == 3 and p["n"] == 3 and p["ci"] > 0
    with pytest.raises(ValueError, match="at least one"):
        metrics.mean_ci_t([])


def test_band_energies_parseval_and_placement():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 32, 32, generator=g, dtype=torch.float64)
    e, edges = metrics.band_energies(x, 5)
    assert len(e) == 5 and edges[-1] == pytest.approx(math.sqrt(0.5))
    assert float(e.sum()) == pytest.approx(float(x.pow(2).sum() / 6), rel=1e-10)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    wave = torch.cos(2 * math.pi * 8 / 32 * xx)[None]  # |f| = 0.25: the band (0.177, 0.354]
    e, _ = metrics.band_energies(wave, 5)
    assert int(e.argmax()) == 3 and float(e[3] / e.sum()) == pytest.approx(1.0)
    assert float(metrics.band_energies(torch.ones(1, 8, 8))[0][0]) == pytest.approx(64.0)


def test_x0_speed():
    levels = [math.exp(-k * 0.5) for k in range(4)]  # VE: lambda = 0, 0.5, 1.0, 1.5
    d = [torch.full((2, 2), 0.3 * k) for k in range(4)]
    assert metrics.x0_speed(d, levels, "ve") == pytest.approx([0.6, 0.6, 0.6])
    assert metrics.x0_speed(d[:2], [1.0, 0.5], "flow")[0] is None  # lambda(1) = -inf for a flow model


def test_resample_sigmas():
    exp = lambda n: SCHEDULERS["exponential"].fn(n, 0.03, 14.6).double()
    torch.testing.assert_close(compare.resample_sigmas(exp(40), 7), exp(7))
    karras = SCHEDULERS["karras"].fn(100, 0.03, 14.6).double()
    r = compare.resample_sigmas(karras, 10)
    assert len(r) == 11 and r[-1] == 0 and float(r[0]) == pytest.approx(14.6) and float(r[-2]) == pytest.approx(0.03)
    torch.testing.assert_close(r, SCHEDULERS["karras"].fn(10, 0.03, 14.6).double(), rtol=2e-3, atol=0)
    split = torch.tensor([10.0, 5.0, 2.0])
    assert len(compare.resample_sigmas(split, 4)) == 5
    with pytest.raises(ValueError, match="steps"):
        compare.resample_sigmas(karras, 0)


def entry(label, steps, fn, calls=None):
    return compare.Entry(label, steps, lambda seed, step: compare.Outcome(fn(seed), steps if calls is None else calls))


def start(seed):
    return torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(seed))


def test_engine_pairs_counts_and_reports_failures():
    ref = entry("ref", 50, start)
    good = entry("good", 8, lambda s: start(s) + 0.01)
    twin = entry("good", 8, lambda s: start(s) + 0.01)
    bad = entry("bad", 8, lambda s: start(s) + 0.1)

    def boom(seed):
        raise RuntimeError("boom")

    ticks = []
    r, results = compare.compare([good, entry("broken", 4, boom), twin, bad,
                                  entry("narrow", 4, lambda s: start(s)[:, :2])], ref, [3, 4, 5],
                                 decode=lambda x: (x[:, :3].movedim(1, -1) * 0.2 + 0.5).clamp(0, 1),
                                 progress=lambda done, total: ticks.append((done, total)))
    report = compare.summary(r, results, [3, 4, 5], True)
    json.dumps(report, allow_nan=False)
    rows = {row["label"]: row for row in report["contenders"]}
    assert list(rows) == ["good", "broken", "good #2", "bad", "narrow"]
    assert rows["broken"]["status"] == "failed" and rows["broken"]["error"] == "RuntimeError: boom"
    assert "ValueError: latent: shape (2, 2, 12, 12)" in rows["narrow"]["error"]
    assert rows["good"]["rmse"]["mean"] == pytest.approx(0.01, rel=1e-5) and rows["good"]["rmse"]["n"] == 6
    assert rows["bad"]["paired_vs"]["rmse"]["mean_diff"] == pytest.approx(0.09, rel=1e-4)
    assert rows["good #2"]["paired_vs"]["rmse"] == {"mean_diff": 0.0, "ci": 0.0, "lower": 0, "n": 6}
    assert rows["good"]["model_calls"]["per_seed"] == [8, 8, 8] and rows["bad"]["ssim"]["mean"] < rows["good"]["ssim"]["mean"]
    assert ticks[-1] == (3 * (50 + 8 + 4 + 8 + 8 + 4), 3 * (50 + 8 + 4 + 8 + 8 + 4))
    assert [t[0] for t in ticks] == sorted(t[0] for t in ticks)
    grid = compare.grid_picture(r, results)
    heat = compare.heatmap_picture(r, results, True)
    assert grid.height == heat.height and grid.width > heat.width > 0
    assert "failed: RuntimeError: boom" in compare.markdown(report)


def test_engine_checks_and_fatal():
    ref = entry("ref", 10, start)
    with pytest.raises(ValueError, match="contenders: need at least 2, got 1"):
        compare.compare([entry("a", 4, start)], ref, [0])
    with pytest.raises(ValueError, match="reference: 10 steps is fewer than contender 'b' \\(12 steps\\)"):
        compare.compare([entry("a", 4, start), entry("b", 12, start)], ref, [0])
    with pytest.raises(ValueError, match="seeds"):
        compare.compare([entry("a", 4, start), entry("b", 4, start)], ref, [])

    class Cancelled(Exception):
        pass

    def cancel(seed):
        raise Cancelled()

    with pytest.raises(Cancelled):
        compare.compare([entry("a", 4, start), entry("b", 4, cancel)], ref, [0], fatal=(Cancelled,))


def test_sweep_records_table_and_trajectory():
    ref = entry("ref", 64, start)
    entries = []
    for name, order in (("first", 1), ("second", 2)):
        for n in (4, 8, 16):
            e = entry(f"{name} {n}", n, lambda s, n=n, order=order: start(s) + n ** -order, calls=n * order)
            e.meta["contender"] = name
            entries.append(e)
    r, results = compare.run_paired(entries, ref, [0, 1], keep=0)
    records = compare.sweep_records(r, results)
    slopes = {name: float(line.split("|")[-2]) for name in ("first", "second") for line in compare.sweep_table(records).splitlines()
              if line.startswith(f"| {name} ")}
    assert slopes == {"first": pytest.approx(-1.0, abs=1e-6), "second": pytest.approx(-2.0, abs=1e-6)}
    assert compare.sweep_chart(records).size == (640, 420)

    x0s = [start(0)[:1] * min(1.0, k * k / 16) for k in range(8)]
    t = compare.trajectory(x0s, [float(math.exp(-k)) for k in range(8)], "ve", 4)
    assert t["fraction_of_final"][-1] == [1.0] * 4 and t["peak_speed_step"] == 4 and t["half_energy_step"] == [4, 4, 4, 4]
    json.dumps(t, allow_nan=False)
    assert compare.trajectory_chart(t).width == 2 * 640 + 6


def test_cli_compare(tmp_path):
    out = tmp_path / "ab"
    cli.main(["compare", "--problem", "gaussian", "--contender", "euler:karras:4", "--contender", "heun:karras:4",
              "--reference", "dpmpp_2m:karras:48", "--seeds", "3", "--sweep", "2", "4", "8", "--trajectory", "--out", str(out), "--quiet"])
    report = json.loads((out / "compare.json").read_text())
    rows = {r["label"]: r for r in report["contenders"]}
    assert rows["euler/karras/4"]["model_calls"]["per_seed"] == [4, 4, 4] and rows["heun/karras/4"]["model_calls"]["mean"] == 7
    assert rows["heun/karras/4"]["paired_vs"]["rmse"]["n"] == 3 and report["pixel_space"] is False
    for name in ("compare.md", "grid.png", "heatmap.png", "sweep.md", "sweep.png", "trajectory.png", "trajectory.json"):
        assert (out / name).is_file(), name
    with pytest.raises(ValueError, match="sampler:schedule:steps"):
        cli.main(["compare", "--contender", "euler", "--contender", "heun:4", "--out", str(out)])
    with pytest.raises(ValueError, match="reference: 8 steps is fewer"):
        cli.main(["compare", "--problem", "gaussian", "--contender", "euler:16", "--contender", "heun:4",
                  "--reference", "heun:karras:8", "--out", str(out), "--quiet"])
