"""The plot route (nodes/routes.py) inside a real ComfyUI: it answers with exactly what the nodes compute, checks its
input as the nodes do and says why in a 400, and is registered only on a running server (COMFYUI_PATH only)."""
import asyncio
import importlib
import json
import math
import sys

import pytest

from comfy_host import analytic_model, comfy, needs_comfyui

pytestmark = needs_comfyui

PULSE = dict(shape="gaussian", center="percent", center_percent=0.4, width=0.6, base=1.0, start_percent=0.2, end_percent=0.6)


@pytest.fixture(scope="module")
def host():
    nodes, pack = comfy()
    return nodes, importlib.import_module(pack.__name__ + ".nodes.routes"), sys.modules[pack.__name__ + ".nodes"]


def example_params(spec):
    return {k: p.default for k, p in spec.params.items()}


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_route_schedules_are_the_nodes_schedules(host, flow):
    nodes, routes, _ = host
    mp = analytic_model(flow)
    for name, spec in routes.SCHEDULERS.items():
        node_id = "SamplerLabSchedule" + "".join(p.capitalize() for p in name.split("_"))
        out = nodes.NODE_CLASS_MAPPINGS[node_id].execute(model=mp, steps=9, denoise=0.8, **example_params(spec))
        view = out.ui["sl_model"][0]
        assert view["space"] == ("flow" if flow else "ve")
        got = routes.plot({"kind": "schedule", "name": name, "steps": 9, "denoise": 0.8, "params": example_params(spec), "model": view})
        assert got["sigmas"] == out.ui["sl_sigmas"], name
        assert json.loads(json.dumps(got, allow_nan=False)) == got  # plain JSON for the browser


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
@pytest.mark.parametrize("shape", ["gaussian", "box", "interval"])
def test_route_pulse_is_the_nodes_curve(host, flow, shape):
    nodes, routes, _ = host
    mp = analytic_model(flow)
    fields = {**PULSE, "shape": shape}
    out = nodes.NODE_CLASS_MAPPINGS["SamplerLabGuidancePulse"].execute(model=mp, probes=4, **fields)
    shown = out.ui["sl_pulse"][0]
    got = routes.plot({"kind": "pulse", "fields": fields, "peak": None, "model": shown["model"]})
    assert got["percent"] == shown["percent"] and got["caption"] == shown["caption"]
    # the route reads the model's percent_to_sigma from the view's table (exact at i/256, log-linear between)
    assert max(abs(a - b) for a, b in zip(got["weight"], shown["weight"])) < 0.02
    peak = routes.plot({"kind": "pulse", "fields": fields, "peak": 6.0, "model": shown["model"]})
    assert max(peak["weight"]) > 5.0


def test_without_a_model_the_route_draws_for_comfyuis_default_sampling(host):
    _, routes, _ = host
    import comfy.model_sampling

    got = routes.plot({"kind": "schedule", "name": "karras", "steps": 4})
    ms = comfy.model_sampling.ModelSamplingDiscrete()
    assert got["model"]["default"] and got["model"]["space"] == "ve"
    assert math.isclose(got["sigmas"][0], float(ms.sigma_max), rel_tol=1e-6) and got["sigmas"][-1] == 0
    auto = routes.plot({"kind": "pulse", "fields": {**PULSE, "center": "auto"}, "peak": 5.0})
    assert "percent" not in auto and "measured during sampling" in auto["caption"]


BAD = [
    ({"kind": "bogus"}, "kind must be one of"),
    ({"kind": "schedule", "name": "nope", "steps": 4}, "name must be one of"),
    ({"kind": "schedule", "name": "karras", "steps": 0}, "steps must be in [1, 10000]"),
    ({"kind": "schedule", "name": "karras", "steps": 10001}, "steps must be in [1, 10000]"),
    ({"kind": "schedule", "name": "karras", "steps": 2.5}, "steps must be a whole number"),
    ({"kind": "schedule", "name": "karras", "steps": 4, "denoise": 0}, "denoise must be in"),
    ({"kind": "schedule", "name": "karras", "steps": 4, "params": {"rho": 99}}, "rho must be in [0.5, 20.0]"),
    ({"kind": "schedule", "name": "karras", "steps": 4, "params": {"gamma": 1}}, "has no parameter"),
    ({"kind": "schedule", "name": "karras", "steps": 4, "model": {"space": "ve", "sigma_min": 1, "sigma_max": 0.5}}, "sigma_min < sigma_max"),
    ({"kind": "schedule", "name": "karras", "steps": 4, "model": {"space": "flow", "sigma_min": 0.1, "sigma_max": 3}}, "model.sigma_max must be in"),
    ({"kind": "pulse", "fields": {**PULSE, "width": "wide"}}, "width must be a finite number"),
    ({"kind": "pulse", "fields": {**PULSE, "shape": "spike"}}, "shape must be one of"),
    ({"kind": "pulse", "fields": {**PULSE, "center_percent": 1.0}}, "center_percent must be in (0, 1)"),
    ({"kind": "pulse", "fields": {"shape": "box"}}, "fields must hold exactly"),
    ([1, 2], "request must be a JSON object"),
]


def serve(routes, requests):
    """POST each body to the route on an aiohttp test server; [(status, decoded answer)]."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    async def go():
        table = web.RouteTableDef()
        routes.register(table)
        app = web.Application()
        app.add_routes(table)
        async with TestClient(TestServer(app)) as client:
            out = []
            for body in requests:
                r = await client.post(routes.ROUTE, data=body if isinstance(body, str) else json.dumps(body))
                out.append((r.status, await r.json()))
            return out

    return asyncio.run(go())


def test_route_answers_a_bad_request_with_a_400_that_says_why(host):
    _, routes, _ = host
    answers = serve(routes, [b for b, _ in BAD] + ["not json", '{"kind": "schedule", "name": "karras", "steps": NaN}',
                                                    {"kind": "schedule", "name": "critical_window", "steps": 12}])
    for (status, body), (request, why) in zip(answers, BAD):
        assert status == 400 and why in body["error"], (request, body)
    assert answers[-3] == (400, {"error": "the body must be JSON"})
    assert answers[-2][0] == 400 and "finite" in answers[-2][1]["error"]
    assert answers[-1][0] == 200 and len(answers[-1][1]["sigmas"]) == 13


def test_route_is_registered_once_and_only_on_a_running_server(host, monkeypatch):
    from aiohttp import web

    _, routes, pack_nodes = host

    class Server:
        instance = None

    monkeypatch.setitem(sys.modules, "server", type(sys)("server"))
    sys.modules["server"].PromptServer = Server
    assert pack_nodes.register_routes() is None  # a server module, but no running server
    Server.instance = type("Running", (), {"routes": web.RouteTableDef()})()
    assert pack_nodes.register_routes() is not None
    assert pack_nodes.register_routes() is None  # idempotent
    assert [r.path for r in Server.instance.routes] == [routes.ROUTE]
