"""The pulse study (lab/studies/pulse.py): its guided denoiser against ScheduledCFG, matched guided calls, the
sigma_c crossing and matched-accuracy interpolation on known answers, and the --quick command end to end."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from samplerlab.lab import trained
from samplerlab.lab.studies import pulse
from samplerlab.samplers.guidance import Interval, Pulse, ScheduledCFG

ROOT = Path(__file__).resolve().parents[1]


def test_per_sample_cfg_is_scheduled_cfg_for_a_fixed_centre():
    labels = torch.tensor([3, 7, 1])
    cond, uncond = pulse.denoisers(labels)
    schedule = Pulse("gaussian", 4.0, 1.0, pulse.pulse_width(), 2.0)
    x = torch.randn(3, *trained.SHAPE, generator=torch.Generator().manual_seed(0)) * 2.0
    for s in (8.0, 2.0, 0.3):
        sigma = torch.full([3], s)
        ours = pulse.PerSampleCFG(cond, uncond, schedule)(x, sigma)
        theirs = ScheduledCFG(cond, uncond, schedule)(x, sigma)
        same_centres = pulse.PerSampleCFG(cond, uncond, schedule, torch.full([3], 2.0, dtype=torch.float64))(x, sigma)
        assert torch.allclose(ours, theirs, atol=1e-6) and torch.allclose(ours, same_centres, atol=1e-6)
    d_c, d_u = cond(x, sigma), uncond(x, sigma)
    expect = d_u + trained.DEFAULT_CFG * (d_c - d_u)
    assert torch.allclose(pulse.PerSampleCFG(cond, uncond, Interval(2.0, 2.0))(x, sigma), expect, atol=1e-5)


def test_pulses_and_interval_guide_the_same_number_of_levels_wherever_centred():
    seeds = list(range(40))
    labels = torch.arange(40) % 10
    width = pulse.pulse_width()
    for schedule, centres in ((Pulse("gaussian", 3.0, 1.0, width, 2.2), None),
                              (Pulse("gaussian", 3.0, 1.0, width, 2.2 * math.exp(pulse.OFFSET)), None),
                              (Pulse("gaussian", 3.0, 1.0, width, 2.2 * math.exp(-pulse.OFFSET)), None),
                              (Pulse("gaussian", 3.0, 1.0, width, None), pulse.random_centres(seeds, width)),
                              (Interval(3.0, 1.0, *pulse.paper_interval()), None)):
        model = pulse.PerSampleCFG(*pulse.denoisers(labels), schedule, centres)
        for s in pulse.sigmas()[:-1]:
            model(torch.zeros(40, *trained.SHAPE), s.reshape(1))
        assert model.calls.tolist() == [pulse.STEPS + pulse.GUIDED_LEVELS] * 40
    centres = pulse.random_centres(seeds, width)
    assert centres.unique().numel() == 40
    assert torch.equal(pulse.random_centres(seeds[5:9], width), centres[5:9])  # per-seed, not per-batch


def test_crossing_and_matched_accuracy_known_answers():
    levels = [0.1, 1.0, 10.0]
    assert pulse.crossing(levels, [1.0, 0.6, 0.2], 0.4) == pytest.approx(math.sqrt(10.0))
    assert math.isnan(pulse.crossing(levels, [1.0, 0.9, 0.8], 0.5))
    assert pulse.at_accuracy([0.9, 0.95, 1.0], [1.0, 0.8, 0.5], 0.975) == pytest.approx(0.65)
    assert math.isnan(pulse.at_accuracy([0.9, 0.92], [1.0, 0.8], 0.99))
    lo, hi = pulse.shifted_interval([1.0, 2.0, 3.0, float("nan")], 2.0)
    assert lo <= 2.0 <= hi


def test_quick_study(tmp_path):
    pytest.importorskip("torchmetrics", reason="the Frechet distance is torchmetrics' (the lab and test extras)")
    out = subprocess.run([sys.executable, "-m", "samplerlab", "study", "pulse", "--quick", "--out", str(tmp_path)],
                         cwd=ROOT.parent, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads((tmp_path / "pulse.json").read_text())
    assert r["command"].endswith("study pulse --quick --out " + str(tmp_path))
    c = r["critical"]
    assert c["p_keep"][0] > c["p_keep"][-1] and 0 < c["chance"] < 1
    assert c["levels"][0] < c["sigma_c"] < c["levels"][-1]
    families = {s["family"] for s in r["settings"]}
    assert families == {"constant"} | {f for g in pulse.groups() for f in g["families"]}
    for s in r["settings"]:
        assert s["accuracy_ci"][0] <= s["accuracy"] <= s["accuracy_ci"][1]
        assert s["variance_ratio_ci"][0] <= s["variance_ratio"] <= s["variance_ratio_ci"][1]
        assert s["variance_ratio"] > 0 and math.isfinite(s["frechet"])
        want = (pulse.STEPS if s["setting"] in ("constant 0", "constant 1") else 2 * pulse.STEPS if s["family"] == "constant"
                else pulse.STEPS + pulse.GUIDED_LEVELS)
        assert s["calls"] == want, s["setting"]
    accuracy = {s["setting"]: s["accuracy"] for s in r["settings"]}
    assert accuracy["constant 0"] < accuracy["constant 1"]  # the unconditional model ignores the class
    references = {g["reference"] for g in pulse.groups()}
    pulse_rows = [m for m in r["matched"] if m["family"] in references]
    assert len(pulse_rows) == 2 and all(m["variance_ratio_minus_pulse"] == 0 for m in pulse_rows)
    assert (tmp_path / "pulse_frontier.png").stat().st_size > 1000
    assert "Made by `python -m samplerlab study pulse --quick" in (tmp_path / "pulse.md").read_text()
