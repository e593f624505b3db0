"""What the front end is told about a model, and a model_sampling rebuilt from that: `model_view` (space, range,
percent_to_sigma at TABLE_POINTS equal steps of the schedule), which nodes send after a run and the plot route
takes back (web/samplerlab.js; nodes/routes.py); `schedule_ui`, a node's levels with that view."""
import math

import comfy.model_sampling

from .host import sigma_range, space_of

TABLE_POINTS = 257


def model_view(model_sampling):
    """A JSON-able picture of a model's sampling: its space, range and percent_to_sigma at i/256."""
    table = [float(model_sampling.percent_to_sigma(i / (TABLE_POINTS - 1))) for i in range(TABLE_POINTS)]
    lo, hi = sigma_range(model_sampling)
    return {"space": space_of(model_sampling), "sigma_min": lo, "sigma_max": hi, "percent_sigma": table}


def schedule_ui(sigmas, model_sampling, key=None):
    """The `ui` of a node that outputs SIGMAS (the schedule nodes, Calibrated schedule, Calibrated sampler): its
    levels and the model's view, which the page draws after a run (web/samplerlab.js, showRun); for a calibrated
    node also the scalar entries of its cache key, so that the page keeps these levels while the widgets they name
    (steps, cfg, seeds, ...) keep their values (web/lib/graph.js, calibrationStands)."""
    ui = {"sl_sigmas": sigmas.tolist(), "sl_model": [model_view(model_sampling)]}
    if key is not None:
        ui["sl_key"] = [{k: v for k, v in key.items() if isinstance(v, (bool, int, float, str))}]
    return ui


DEFAULT_VIEW = None


def default_view():
    """ComfyUI's ModelSamplingDiscrete without a config (the SD1/SDXL beta schedule), as a view."""
    global DEFAULT_VIEW
    if DEFAULT_VIEW is None:
        ms = type("DefaultSampling", (comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS), {})()
        DEFAULT_VIEW = {**model_view(ms), "default": True}
    return DEFAULT_VIEW


def number(name, value, lo=-math.inf, hi=math.inf, integer=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if integer and value != int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value!r}")
    return int(value) if integer else float(value)


def json_object(name, value):
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


class ViewSampling:
    """A model_sampling read from a view: sigma_min / sigma_max, and percent_to_sigma interpolated in log sigma
    between the view's table points (exact at i/256; the ends p <= 0 and p >= 1 as the table gives them)."""

    def __init__(self, view):
        self.sigma_min, self.sigma_max = view["sigma_min"], view["sigma_max"]
        self.table = view["percent_sigma"]

    def percent_to_sigma(self, percent):
        n = len(self.table) - 1
        if percent <= 0:
            return self.table[0]
        if percent >= 1:
            return self.table[-1]
        k = min(max(int(percent * n), 1), n - 2)  # interior segment: both ends > 0
        a, b = self.table[k], self.table[k + 1]
        w = min(max(percent * n - k, 0.0), 1.0)
        return math.exp(math.log(a) + w * (math.log(b) - math.log(a)))


SPACES = {"ve": comfy.model_sampling.EPS, "flow": comfy.model_sampling.CONST}


def sampling_of(view):
    """A ViewSampling that space_of() recognises (EPS or CONST), from a checked view (None: the default)."""
    view = default_view() if view is None else check_view(view)
    return type("ViewSampling", (ViewSampling, SPACES[view["space"]]), {})(view), view


def check_view(view):
    json_object("model", view)
    space = view.get("space")
    if space not in SPACES:
        raise ValueError(f"model.space must be one of {sorted(SPACES)}, got {space!r}")
    top = 1.0 if space == "flow" else math.inf
    lo = number("model.sigma_min", view.get("sigma_min"), 0.0, top)
    hi = number("model.sigma_max", view.get("sigma_max"), 0.0, top)
    if not 0 < lo < hi:
        raise ValueError(f"model: need 0 < sigma_min < sigma_max, got {lo} and {hi}")
    table = view.get("percent_sigma")
    if not isinstance(table, list) or len(table) != TABLE_POINTS:
        raise ValueError(f"model.percent_sigma must be a list of {TABLE_POINTS} levels")
    table = [number(f"model.percent_sigma[{i}]", v, 0.0, 1e10) for i, v in enumerate(table)]
    if any(b > a for a, b in zip(table, table[1:])) or not all(v > 0 for v in table[1:-1]):
        raise ValueError("model.percent_sigma must be non-increasing and > 0 inside the schedule")
    return {"space": space, "sigma_min": lo, "sigma_max": hi, "percent_sigma": table}


