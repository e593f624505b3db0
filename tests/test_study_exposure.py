"""`python -m samplerlab study exposure --quick`: the mismatch, calibration and paired ratios on the trained
digits network, and the paired-ratio helpers on known answers."""
import json
import math
import sys

import pytest
import torch

from samplerlab.lab import digit_metrics, digits_lab
from samplerlab.lab.metrics import ratio_boot
from samplerlab.lab.studies import exposure


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    pytest.importorskip("torchmetrics", reason="the Frechet distance is torchmetrics' (the lab and test extras)")
    from samplerlab.lab.cli import main

    out = tmp_path_factory.mktemp("exposure")
    argv = sys.argv
    sys.argv = ["samplerlab", "study", "exposure", "--quick", "--out", str(out)]
    try:
        main(sys.argv[1:])
    finally:
        sys.argv = argv
    return out, json.loads((out / "exposure.json").read_text())


def inside(v, ci):
    return math.isfinite(ci[0]) and math.isfinite(ci[1]) and ci[0] <= v <= ci[1]


def test_quick_writes_table_figure_and_record(quick):
    out, rec = quick
    assert rec["command"].endswith("--quick --out " + str(out))
    assert (out / "mismatch_cfg2.png").stat().st_size > 1000 and (out / "mismatch_cfg1.png").stat().st_size > 1000
    md = (out / "exposure.md").read_text()
    assert "| euler | 10 | 2 | stein |" in md and "Made by `python -m samplerlab study exposure --quick" in md


def test_quick_rows_have_intervals_around_their_estimates(quick):
    _, rec = quick
    rows = rec["rows"]
    assert [r["method"].split()[0] for r in rows] == ["off", "stein", "epsilon"]
    for r in rows:
        assert r["samples"] == 40 and r["calls"] == 10
        for key in ("frechet", "accuracy", "frechet_ratio", "accuracy_ratio"):
            assert inside(r[key], r[key + "_ci"]), (r["method"], key)
    cal = rec["calibration"][0]
    assert float(rows[2]["method"].split()[1]) == cal["chosen"] > 1
    assert min(cal["frechet"][str(s)] for s in rec["scales"]) == cal["frechet"][str(cal["chosen"])]


def test_mismatch_is_one_where_the_state_is_the_prior(quick):
    """At sigma_max the sampler's state is sigma_max n, as the forward process's up to the data (|x0| << 80):
    both ratios must be 1 within a few per cent there; every call of the sampler is recorded."""
    _, rec = quick
    euler = [r for r in rec["mismatch"] if not r.get("reference") and r["cfg"] == 2]
    ref = [r for r in rec["mismatch"] if r.get("reference") and r["cfg"] == 1]
    assert len(euler) == 10 and len(ref) == 19
    for rows in (euler, ref):
        assert rows[0]["sigma"] == pytest.approx(80.0)
        assert abs(rows[0]["eps_ratio"] - 1) < 0.03 and abs(rows[0]["stein_ratio"] - 1) < 0.03
        assert all(inside(r["eps_ratio"], r["eps_ratio_ci"]) for r in rows)


def test_forward_stein_estimate_finds_the_level_at_high_noise():
    """On the forward process (the network's training distribution) the Stein estimate is the true level."""
    for s in (20.0, 5.0):
        assert float(exposure.forward(s, 2.0)[1].mean()) == pytest.approx(1.0, abs=0.02)


def test_tracking_off_is_the_plain_sampler_and_epsilon_moves_towards_x():
    labels, seeds = [3, 8], [21, 22]
    plain = digits_lab.sample(labels, seeds, "euler", 4)
    assert torch.equal(digits_lab.sample(labels, seeds, "euler", 4, tracking={"track": "off"}), plain)
    scaled = digits_lab.sample(labels, seeds, "euler", 4, tracking={"track": "epsilon", "eps_scale": 1.05})
    assert not torch.allclose(scaled, plain)
    with pytest.raises(ValueError, match="eps_scale"):
        digits_lab.sample(labels, seeds, "euler", 4, tracking={"track": "epsilon", "eps_scale": 0.9})


def test_frechet_ratio_known_answers():
    pytest.importorskip("torchmetrics", reason="the Frechet distance is torchmetrics' (the lab and test extras)")
    g = torch.Generator().manual_seed(0)
    a, ref = torch.randn(300, 8, generator=g, dtype=torch.float64), torch.randn(200, 8, generator=g, dtype=torch.float64)
    r, ci = digit_metrics.frechet_ratio(a, a.clone(), ref, boot=20)
    assert r == pytest.approx(1.0) and ci == pytest.approx((1.0, 1.0))
    shifted = a + 1.0
    r, ci = digit_metrics.frechet_ratio(shifted, a, ref, boot=50)
    assert r > 2 and inside(r, ci)
    with pytest.raises(ValueError, match="paired"):
        digit_metrics.frechet_ratio(a[:10], a, ref)


def test_ratio_boot_is_paired():
    """b = a + 1 elementwise: a paired resample keeps the ratio's spread small; the estimate is exact."""
    a = torch.arange(1, 101, dtype=torch.float64)
    r, (lo, hi) = ratio_boot(a, a + 1, boot=500)
    assert r == pytest.approx(50.5 / 51.5) and lo <= r <= hi and hi - lo < 0.01
    with pytest.raises(ValueError, match="denominator"):
        ratio_boot(a, torch.zeros(100))
