"""`study coarse` (lab/studies/coarse.py): the settling rule on known curves and the --quick run."""
import argparse
import json

import pytest
import torch

from samplerlab.lab.studies import coarse as K


def test_settle_known_answer():
    levels = [10.0, 5.0, 2.0, 1.0, 0.5]
    # band 0 within 10% all along; band 1 from 1 on (|rel - 1| = 0.2 at 2, 0.02 at 1: it falls to 0.1 at
    # 2^(1 - 0.1/0.18) in log sigma); band 2 never
    rel = torch.tensor([[1.0, 1.5, 0.5], [1.05, 2.0, 0.5], [0.95, 0.8, 0.5], [1.0, 1.02, 0.5], [1.0, 1.0, 1.3]],
                       dtype=torch.float64)[:, None, :]
    got = K.settle(levels, rel).reshape(-1).tolist()
    assert got[0] == pytest.approx(10.0) and got[1] == pytest.approx(2 ** (1 - 0.1 / 0.18)) and got[2] == 0.0
    rel[0, 0, 0] = 1.2  # 0.2 at 10, 0.05 at 5
    assert float(K.settle(levels, rel)[0, 0]) == pytest.approx(10 * 0.5 ** (0.1 / 0.15))


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
