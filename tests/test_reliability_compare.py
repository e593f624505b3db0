"""The A/B engine with a contender whose output holds NaN / inf: a flagged column, the others reported,
strict JSON (issue 11, defect 4)."""
import json

import torch

from samplerlab.lab import compare


def entry(label, poison=None, steps=4):
    def run(seed, step):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(2, 3, 8, 8, generator=g)
        if label != "ref":
            x = x + 0.01 * (1 + len(label))
        if poison is not None:
            x[0, 0, 2, 3] = poison
            x[1, 1, 0, 0] = float("inf")
        step(steps - 1)
        return compare.Outcome(x, steps)
    return compare.Entry(label, steps, run)


def no_constant(name):
    raise ValueError(f"bare {name} in the JSON")


def test_nonfinite_contender_is_flagged_and_the_others_reported():
    ref, results = compare.compare([entry("a"), entry("nan", float("nan")), entry("bb")], entry("ref", steps=16), [1, 2])
    assert [r.status for r in results] == ["ok", "non-finite", "ok"]
    report = compare.summary(ref, results, [1, 2], False)
    text = compare.to_json(report, indent=1)
    data = json.loads(text, parse_constant=no_constant)  # strict: no NaN / Infinity tokens
    row = data["contenders"][1]
    assert row["status"] == "non-finite" and row["nonfinite_values"] == 4 and row["values"] == 2 * 2 * 3 * 8 * 8
    assert row["rmse"]["mean"] is None and "contenders[1].rmse.mean" in data["nonfinite"] and "paired_vs" not in row
    ok = data["contenders"][2]
    assert ok["rmse"]["mean"] > 0 and ok["paired_vs"]["baseline"] == "a"
    assert "non-finite output: 4 of 768 values" in compare.markdown(report)
    grid, heat = compare.grid_picture(ref, results), compare.heatmap_picture(ref, results, False)
    assert grid.size[1] == heat.size[1] and heat.size[0] > 0


def test_colorize_flags_nonfinite_pixels():
    v = torch.tensor([[0.0, 0.5], [float("nan"), float("inf")]])
    c = compare.colorize(v, 1.0)
    assert bool(torch.isfinite(c).all()) and c[1, 0].tolist() == [0.0, 1.0, 0.0] and c[1, 1].tolist() == [0.0, 1.0, 0.0]
    torch.testing.assert_close(c[0, 0], compare.COLORMAP[0])


def test_strict_json_nulls_and_flags_every_nonfinite_number():
    text = compare.to_json({"a": [1.0, float("nan")], "b": {"c": float("-inf")}, "d": "nan"})
    assert json.loads(text, parse_constant=no_constant) == {"a": [1.0, None], "b": {"c": None}, "d": "nan",
                                                             "nonfinite": ["a[1]", "b.c"]}
