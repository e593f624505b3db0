"""The digits data module: shapes, range, the fixed split, lazy import."""
import subprocess
import sys

import pytest
import torch

from samplerlab.lab import digits


def test_shapes_range_and_split():
    x, y = digits.load("train")
    xh, yh = digits.load("heldout")
    assert x.shape == (1797 - digits.HELD_OUT, 1, 16, 16) and x.dtype == torch.float32
    assert xh.shape == (digits.HELD_OUT, 1, 16, 16) and yh.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1 and x.min() == -1
    assert set(y.tolist()) == set(range(10)) == set(yh.tolist())
    tr, ho = set(digits.indices("train").tolist()), set(digits.indices("heldout").tolist())
    assert not tr & ho and len(tr | ho) == 1797
    assert torch.equal(digits.load("heldout")[0], xh)


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        digits.load("test")


def test_import_is_lazy():
    code = "import sys, samplerlab.lab.digits; assert 'sklearn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_shipped_data_is_sklearns_and_loads_without_it():
    sklearn = pytest.importorskip("sklearn")
    images, labels = digits.raw_from_sklearn()
    state, manifest = digits.shipped.load(digits.DATA)
    assert torch.equal(state["images"], images) and torch.equal(state["labels"], labels)
    assert manifest["scikit_learn"] and sklearn.__version__
    code = ("import sys; sys.modules['sklearn'] = None; from samplerlab.lab import digits; x, y = digits.load('all'); "
            "assert x.shape == (1797, 1, 16, 16) and int(y.max()) == 9")
    subprocess.run([sys.executable, "-c", code], check=True)
