"""The creativity study (lab/studies/creativity.py): its --quick form end to end, and known answers."""
import json

import torch

from samplerlab.lab import els
from samplerlab.lab.cli import main
from samplerlab.lab.studies import creativity

F64 = torch.float64


def test_quick_study_writes_its_results_and_the_empirical_denoiser_memorises(tmp_path):
    main(["study", "creativity", "--quick", "--out", str(tmp_path)])
    r = json.loads((tmp_path / "creativity.json").read_text())
    assert {p.name for p in tmp_path.iterdir()} == {"creativity.json", "creativity.md", "samples.png", "r2.png"}
    n, steps = creativity.QUICK["seeds"], creativity.QUICK["steps"]
    assert r["train_images"] == 10 * creativity.QUICK["per_class"] and len(r["seeds"]) == n
    empirical = r["novelty"]["empirical"]["pixel_rms"]
    assert max(empirical["values"]) < 1e-3  # the optimal denoiser of a finite set returns a training image
    assert min(r["novelty"]["els"]["pixel_rms"]["values"]) > 0.05  # ELS makes new images (patch mosaics)
    for name in ("empirical", "els", "network", "network_guided", "heldout"):
        for kind in ("pixel_rms", "feature"):
            s = r["novelty"][name][kind]
            assert s["ci"][0] <= s["median"] <= s["ci"][1]
    same = r["same_class_els_network"]
    assert same["n"] == n and same["ci"][0] <= same["fraction"] <= same["ci"][1]
    curve = r["r2"]["els_vs_network_at_network_states"]
    assert len(r["r2"]["sigmas"]) == len(curve["median"]) == steps
    assert all(lo <= m <= hi <= 1 for m, lo, hi in zip(curve["median"], curve["lo"], curve["hi"]))
    gap = r["r2"]["gap_network_states_minus_own_trajectories"]["median"]
    assert gap[0] == 0  # both trajectories start at the same state
    assert "Made by `python -m samplerlab" in (tmp_path / "creativity.md").read_text()


def test_els_with_whole_image_patches_is_the_empirical_denoiser_so_r2_is_one():
    g = torch.Generator().manual_seed(0)
    ys = torch.randn(6, 1, 8, 8, generator=g, dtype=F64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    cls = torch.tensor([0, 1, 1])
    whole = els.ELS(ys, labels, 2, schedule=[(1.0, 15)])  # zero padding: a 15x15 patch sees the whole 8x8 image
    models = {"els": whole.model("ve", cls), "network": els.Empirical(ys, labels, 2).model("ve", cls)}
    sigmas = torch.tensor([5.0, 1.0, 0.3, 0.05, 0.0], dtype=F64)
    x_T = 5.0 * torch.randn(3, 1, 8, 8, generator=g, dtype=F64)
    samples, local, along = creativity.run(models, x_T, sigmas)
    assert local.shape == along.shape == (4, 3)
    assert torch.allclose(local, torch.ones_like(local)) and torch.allclose(along, torch.ones_like(along))
    assert torch.allclose(samples["els"], samples["network"])
    assert torch.allclose(els.nearest_distance(samples["network"], ys), torch.zeros(3, dtype=F64), atol=1e-6)


def test_bootstrap_interval_holds_the_estimate_and_is_a_point_for_constant_data():
    v = torch.arange(20, dtype=F64).reshape(10, 2)
    est, lo, hi = creativity.bootstrap(v, creativity.median, boot=300)
    assert est.shape == lo.shape == hi.shape == (2,)
    assert bool((lo <= est).all() and (est <= hi).all() and (lo < hi).all())
    est, lo, hi = creativity.bootstrap(torch.full((7,), 3.0), creativity.median, boot=50)
    assert float(lo) == float(est) == float(hi) == 3.0


def test_half_rise_is_where_the_gap_reaches_half_its_last_value():
    levels = torch.tensor([10.0, 1.0, 0.1], dtype=F64)
    gap = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.25, 0.0], [1.0, 1.0, -0.2]], dtype=F64)
    half = creativity.half_rise(gap, levels)
    assert torch.allclose(half, torch.tensor([1.0, 0.1 ** (1 / 3), 10.0], dtype=F64))
