"""`study coarse` (lab/studies/coarse.py): the settling rule on known curves and the --quick run."""
import argparse
import json

import torch

from samplerlab.lab.studies import coarse as K


def test_settle_known_answer():
    levels = [10.0, 5.0, 2.0, 1.0, 0.5]
    # band 0 settled from 5 on, band 1 only from 1 on (and outside again at 10: no matter), band 2 never
    rel = torch.tensor([[1.0, 1.5, 0.5], [1.05, 2.0, 0.5], [0.95, 0.8, 0.5], [1.0, 1.02, 0.5], [1.0, 1.0, 1.3]],
                       dtype=torch.float64)[:, None, :]
    assert K.settle(levels, rel).reshape(-1).tolist() == [10.0, 1.0, 0.0]
    rel[0, 0, 0] = 1.2
    assert K.settle(levels, rel)[0, 0] == 5.0


def test_median_ci_contains_median():
    v = torch.arange(20, dtype=torch.float64)
    m, lo, hi = K.median_ci(v, boot=100)
    assert lo <= m <= hi and m == float(v.median())


def test_quick_study(tmp_path):
    K.cmd(argparse.Namespace(quick=True, seed0=10_000, out=str(tmp_path)))
    r = json.loads((tmp_path / "coarse.json").read_text())
    for run in ("unconditional", "conditional"):
        rel = r[run]["relative_energy"]
        assert len(rel) == len(r["levels"]) and len(rel[0]) == K.BANDS
        # at the lowest level the x0 prediction is the final sample: every band within 10%
        assert all(abs(m - 1) < K.TOL for m, _, _ in rel[-1])
        for m, lo, hi in r[run]["settle"]:
            assert lo <= m <= hi and 0 <= m <= r["levels"][0]
    assert (tmp_path / "coarse.png").stat().st_size < 300_000
