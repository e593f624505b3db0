"""The calibrated schedule: every allowed step count works or is refused before any model call; the cache
never loses a finished calibration and rejects wrong types (issue 11, defects 2, 5 and 12)."""
import json
import logging

import pytest

from samplerlab.lab import problems
from samplerlab.lab.runner import CountingModel, schedule_range
from samplerlab.schedulers import calibrate as cal


@pytest.fixture(scope="module")
def gaussian():
    p = problems.Gaussian(shape=(4,))
    lo, hi = schedule_range(p, "ve")
    return p, lo, hi, p.draw(range(2), "ve", hi)[0]


def test_more_steps_than_the_search_grid(gaussian):
    """33 steps used to raise KeyError after the reference run (the search kept 32 grid levels)."""
    p, lo, hi, x = gaussian
    c = cal.calibrate(p.model("ve"), x, lo, hi, "euler", 33, "ve", reference_calls=70)
    assert len(c.sigmas) == 34 and c.sigmas[-1] == 0 and all(a > b for a, b in zip(c.sigmas, c.sigmas[1:]))


@pytest.mark.parametrize("bad,match", [(dict(steps=5, reference_calls=10), r"^steps.*\[1, 4\].*reference_calls = 10"),
                                       (dict(steps=61, reference_calls=120), r"^steps.*\[1, 59\]"),
                                       (dict(reference_calls="200"), "^reference_calls"),
                                       (dict(reference_calls=2.5), "^reference_calls"),
                                       (dict(solver="nope"), "^solver")])
def test_refused_before_any_model_call(gaussian, bad, match):
    p, lo, hi, x = gaussian
    counted = CountingModel(p.model("ve"))
    with pytest.raises(ValueError, match=match):
        cal.calibrate(counted, x, lo, hi, **{**dict(solver="euler", steps=3, reference_calls=10), **bad})
    assert counted.calls == 0


def test_largest_allowed_step_count_works(gaussian):
    p, lo, hi, x = gaussian
    assert cal.max_steps(10) == 4 and cal.max_steps(200) == 99
    c = cal.calibrate(p.model("ve"), x, lo, hi, "euler", 4, "ve", reference_calls=10)
    assert len(c.sigmas) == 5


KEY = {"model": {"class": "X", "weights": "abc"}, "solver": "euler", "steps": 3}
GOOD = cal.Calibration([5.0, 1.0, 0.1, 0.0], "euler", 3, 210, 1.5, 0.01)


@pytest.mark.parametrize("change", [dict(sigmas=[True, False, True, False]), dict(sigmas=[5.0, 1.0, 1.0, 0.0]),
                                    dict(sigmas=["5", 1.0, 0.1, 0.0]), dict(model_calls="lots"), dict(steps=True),
                                    dict(seconds=-1.0), dict(solver=3)])
def test_cache_rejects_wrong_types(tmp_path, caplog, change):
    path = cal.save_cached(tmp_path, KEY, GOOD)
    assert cal.load_cached(tmp_path, KEY) == GOOD
    data = json.loads(path.read_text())
    data["calibration"].update(change)
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        assert cal.load_cached(tmp_path, KEY) is None
    assert "unusable" in caplog.text


def test_cache_rejects_levels_outside_the_model_range(tmp_path, caplog):
    path = cal.save_cached(tmp_path, KEY, GOOD)
    assert cal.load_cached(tmp_path, KEY, (0.1, 5.0)) == GOOD
    data = json.loads(path.read_text())
    data["calibration"]["sigmas"] = [1e30, 1.0, 0.1, 0.0]
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        assert cal.load_cached(tmp_path, KEY, (0.1, 5.0)) is None
    assert "unusable" in caplog.text


def test_cache_survives_nesting_and_a_directory_in_its_place(tmp_path, caplog):
    path = cal.cache_path(tmp_path, KEY)
    path.write_text("[" * 100000 + "]" * 100000)
    assert cal.load_cached(tmp_path, KEY) is None
    path.unlink()
    path.mkdir()
    assert cal.load_cached(tmp_path, KEY) is None and "unusable" in caplog.text
    with pytest.raises(ValueError, match="^cache_dir"):
        cal.save_cached(tmp_path, KEY, GOOD)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


@pytest.mark.parametrize("where", ["file", "under_file", "proc"])
def test_unusable_cache_dir_named_before_calibrating(tmp_path, where):
    (tmp_path / "f").write_text("x")
    folder = {"file": tmp_path / "f", "under_file": tmp_path / "f" / "sub", "proc": "/proc/samplerlab/schedules"}[where]
    with pytest.raises(ValueError, match="^cache_dir"):
        cal.check_cache_dir(folder)
    with pytest.raises(ValueError, match="^cache_dir"):
        cal.save_cached(folder, KEY, GOOD)
    assert cal.check_cache_dir(tmp_path / "new" / "dir").is_dir()
