"""The pack's one server route, POST /samplerlab/plot: what web/samplerlab.js draws on a node before (and
between) runs, computed by the same Python the nodes run (the scheduler registry, guidance.build_schedule and
pulse_ui), never by a JavaScript copy of the formulas.

A request names what to plot and the model to plot it for:
  {"kind": "schedule", "name": <registry name>, "steps": int, "denoise": float, "params": {...}, "model": view}
  {"kind": "pulse", "fields": {shape, center, center_percent, width, base, start_percent, end_percent},
   "peak": float or null (the KSampler's cfg), "model": view}
A model view is what a node reports after a run (`model_view`): space ('ve' or 'flow'), sigma_min, sigma_max and
the model's percent_to_sigma at 257 equal steps of the schedule; null means ComfyUI's default SD1/SDXL sampling
until a run has reported the real one. Input is checked as the nodes check it (known names, bounded steps,
finite numbers); a bad request gets a 400 whose body says why.
"""

import torch

from ..schedulers import REGISTRY as SCHEDULERS
from .guidance import build_schedule, pulse_ui
from .host import host_schedule
from .views import json_object, number, sampling_of

ROUTE = "/samplerlab/plot"
MAX_STEPS = 10000  # the schedule nodes' own widget maximum
PULSE_FIELDS = ("shape", "center", "center_percent", "width", "base", "start_percent", "end_percent")


class PlotModel:
    """Stands in for a MODEL where the nodes' code asks only for its model_sampling."""

    def __init__(self, model_sampling):
        self.model_sampling = model_sampling

    def get_model_object(self, name):
        if name != "model_sampling":
            raise ValueError(f"a plot has no model {name!r}")
        return self.model_sampling


def plot_schedule(request):
    name = request.get("name")
    if name not in SCHEDULERS:
        raise ValueError(f"name must be one of {sorted(SCHEDULERS)}, got {name!r}")
    steps = number("steps", request.get("steps"), 1, MAX_STEPS, integer=True)
    denoise = number("denoise", request.get("denoise", 1.0), 0.01, 1.0)
    params = json_object("params", request.get("params", {}))
    ms, view = sampling_of(request.get("model"))
    sigmas = host_schedule(SCHEDULERS[name], ms, steps, denoise, **params)
    return {"sigmas": sigmas.tolist(), "model": view}


def plot_pulse(request):
    fields = json_object("fields", request.get("fields"))
    missing = [k for k in PULSE_FIELDS if k not in fields]
    if missing or set(fields) - set(PULSE_FIELDS):
        raise ValueError(f"fields must hold exactly {list(PULSE_FIELDS)}, missing {missing}")
    for k in PULSE_FIELDS:
        if k not in ("shape", "center"):
            number(k, fields[k])
    peak = request.get("peak")
    peak = None if peak is None else number("peak", peak, 0.0, 100.0)
    ms, view = sampling_of(request.get("model"))
    model = PlotModel(ms)
    schedule = build_schedule(model, 1.0 if peak is None else peak, **fields)
    return {**pulse_ui(model, schedule, peak)["sl_pulse"][0], "model": view}


KINDS = {"schedule": plot_schedule, "pulse": plot_pulse}


def plot(request):
    """The route's answer to a decoded JSON body; a ValueError saying why for a bad one."""
    json_object("request", request)
    kind = request.get("kind")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    with torch.no_grad():
        return KINDS[kind](request)


def register(routes):
    """Add POST ROUTE to an aiohttp RouteTableDef (ComfyUI's PromptServer.instance.routes), once."""
    from aiohttp import web

    if any(getattr(r, "path", None) == ROUTE for r in routes):
        return None

    @routes.post(ROUTE)
    async def samplerlab_plot(request):
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body must be JSON"}, status=400)
        try:
            return web.json_response(plot(body))
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)

    return samplerlab_plot
