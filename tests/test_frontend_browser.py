"""The front end in a real browser: Debian's chromium driven by Playwright against a real ComfyUI server with this pack
(tests/browser_host.py). Skipped with the reason when COMFYUI_PATH, the playwright package or chromium is missing.

Run: COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/comfy/python python -m pytest tests/test_frontend_browser.py
(the test process needs playwright, the server's Python needs ComfyUI's requirements). Screenshots are compared with a
tolerance against tests/browser_refs/*.png; SAMPLERLAB_UPDATE_REFS=1 rewrites them (after looking at them)."""
import json
import os
import urllib.request
from pathlib import Path

import pytest

import browser_host

pytestmark = pytest.mark.skipif(browser_host.missing() is not None, reason=str(browser_host.missing()))

ROOT = Path(__file__).resolve().parents[1]
REFS = Path(__file__).resolve().parent / "browser_refs"
ALL = sorted((ROOT / "example_workflows").glob("*.json"))
CHECKPOINT = [p for p in ALL if not p.stem.startswith("reference_")]
REFERENCE = [p for p in ALL if p.stem.startswith("reference_")]


@pytest.fixture(scope="module")
def server():
    with browser_host.comfyui_server() as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    with browser_host.browser(server) as page:
        yield page


@pytest.fixture(autouse=True)
def no_pack_errors(page):
    before = len(page.console)
    yield
    errors = [m for m in page.pack_errors() if m in page.console[before:]]
    assert not errors, errors


def matches_reference(image, name, mean_tol=6.0, share_tol=0.02):
    """image (PIL) against tests/browser_refs/<name>.png: same size within 4 px, mean absolute difference at most
    mean_tol (0-255) and at most share_tol of the pixels off by more than 64 in a channel."""
    import numpy as np
    from PIL import Image

    path = REFS / f"{name}.png"
    if os.environ.get("SAMPLERLAB_UPDATE_REFS"):
        REFS.mkdir(exist_ok=True)
        image.save(path)
    assert path.exists(), f"no reference {path.name}: run with SAMPLERLAB_UPDATE_REFS=1 once and look at it"
    ref = Image.open(path).convert("RGB")
    assert abs(ref.width - image.width) <= 4 and abs(ref.height - image.height) <= 4, (ref.size, image.size)
    a = np.asarray(image.resize(ref.size), dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    diff = np.abs(a - b)
    mean, share = diff.mean(), (diff.max(axis=-1) > 64).mean()
    if mean > mean_tol or share > share_tol:
        image.save(REFS / f"{name}.actual.png")
    assert mean <= mean_tol and share <= share_tol, f"{name}: mean difference {mean:.2f}, {100 * share:.2f}% of pixels off"


def new_graph(page):
    page.js("() => window.app.graph.clear()")


def add_node(page, kind, pos=(100, 100)):
    return page.js("""([kind, pos]) => { const n = window.LiteGraph.createNode(kind); n.pos = pos;
        window.app.graph.add(n); return n.id; }""", [kind, list(pos)])


def set_widget(page, node_id, name, value, callback=True):
    """As a person would (the widget's callback runs: it clamps to the widget's range), or as a loaded file does."""
    page.js("""([id, name, value, callback]) => { const n = window.app.graph.getNodeById(id); const w = n.widgets.find(w => w.name === name);
        w.value = value; if (callback) w.callback?.(value); n.setDirtyCanvas(true, true); }""", [node_id, name, value, callback])


def client_point(page, node_id, local):
    """Page coordinates of a point given in a node's own coordinates."""
    return page.js("""([id, [lx, ly]]) => { const c = window.app.canvas, n = window.app.graph.getNodeById(id), s = c.ds.scale;
        const r = c.canvas.getBoundingClientRect();
        return [r.x + (n.pos[0] + lx + c.ds.offset[0]) * s, r.y + (n.pos[1] + ly + c.ds.offset[1]) * s]; }""", [node_id, local])


def widget_geometry(page, node_id):
    return page.js("""(id) => { const n = window.app.graph.getNodeById(id);
        return {size: [...n.size], need: n.computeSize(), widgets: n.widgets.map(w => ({name: w.name, y: w.last_y ?? w.y,
          h: w.computeSize ? w.computeSize(n.size[0])[1] : 20}))}; }""", node_id)


def test_the_pack_loads_without_errors_and_offers_its_templates_with_thumbnails(page, server):
    files = json.loads(urllib.request.urlopen(server + "/extensions").read())
    assert "/extensions/samplerlab/samplerlab.js" in files
    assert page.js("() => window.app.extensions.some(e => e.name === 'samplerlab.plots')")
    templates = json.loads(urllib.request.urlopen(server + "/api/workflow_templates").read())["samplerlab"]
    assert {p.stem for p in ALL} <= set(templates)
    for path in CHECKPOINT:
        r = urllib.request.urlopen(f"{server}/api/workflow_templates/samplerlab/{path.stem}.jpg")
        assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_workflow_loads_with_room_for_every_widget_and_no_overlap(page, path):
    page.load(json.loads(path.read_text()))
    page.page.wait_for_timeout(500)
    nodes = page.js("""() => window.app.graph._nodes.map(n => ({id: n.id, type: n.type, title: n.title, pos: [...n.pos],
        size: [...n.size], need: n.computeSize(), title_w: window.LGraphCanvas._measureText?.(n.title, n.titleFontStyle) ?? null}))""")
    short = [(n["id"], n["type"], n["size"], n["need"]) for n in nodes if n["size"][1] < n["need"][1] - 0.5 or n["size"][0] < n["need"][0] - 0.5]
    assert not short, f"nodes smaller than their content: {short}"
    if path in CHECKPOINT:
        rects = [(n["id"], n["pos"][0], n["pos"][1] - 30, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1]) for n in nodes]
        hits = [(a[0], b[0]) for i, a in enumerate(rects) for b in rects[i + 1:]
                if a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]]
        assert not hits, f"overlapping nodes: {hits}"
        cut = [n["title"] for n in nodes if n["title_w"] is not None and n["title_w"] + 40 > n["size"][0]]
        assert not cut, f"titles wider than their node: {cut}"


def test_schedule_plot_is_drawn_before_a_run_and_follows_its_widgets(page):
    new_graph(page)
    nid = add_node(page, "SamplerLabScheduleKarras", (200, 150))
    page.wait("(id) => window.app.graph.getNodeById(id).slPlot?.sigmas?.length === 21", nid)
    sigmas = page.js("(id) => window.app.graph.getNodeById(id).slPlot.sigmas", nid)
    assert abs(sigmas[0] - 14.6146) < 1e-3 and abs(sigmas[-2] - 0.0292) < 1e-3 and sigmas[-1] == 0  # SD1/SDXL range before a run
    g = widget_geometry(page, nid)
    plot = next(w for w in g["widgets"] if w["name"] == "sl_plot")
    assert plot["h"] >= 150 and plot["y"] + plot["h"] <= g["size"][1] and all(w["y"] + w["h"] <= plot["y"] for w in g["widgets"] if w is not plot)
    set_widget(page, nid, "steps", 6)
    page.wait("(id) => window.app.graph.getNodeById(id).slPlot.sigmas.length === 7", nid)
    matches_reference(page.screenshot([nid]), "schedule_karras_6_steps")
    set_widget(page, nid, "rho", 99.0)
    page.wait("(id) => window.app.graph.getNodeById(id).slPlot.key.includes('\"rho\":20')", nid)  # the widget clamps
    set_widget(page, nid, "rho", 99.0, callback=False)  # a value from a workflow file past the registry's bound:
    page.show([nid])  # the route says why and the node shows it
    page.wait("(id) => window.app.graph.getNodeById(id).slPlot.chart.error === true", nid)
    message = page.js("(id) => window.app.graph.getNodeById(id).slPlot.chart.message", nid)
    assert "rho must be in [0.5, 20.0]" in message


def test_pulse_plots_sit_below_the_widgets_and_show_the_weight(page):
    page.load(json.loads((ROOT / "example_workflows" / "guidance_pulse_ksampler.json").read_text()))
    pulse = page.js("() => window.app.graph._nodes.find(n => n.type === 'SamplerLabGuidancePulse').id")
    set_widget(page, pulse, "center", "percent")
    set_widget(page, pulse, "center_percent", 0.3)
    page.wait("(id) => window.app.graph.getNodeById(id).slPlot.chart.series.length === 1", pulse)
    g = widget_geometry(page, pulse)
    plot = next(w for w in g["widgets"] if w["name"] == "sl_plot")
    assert all(w["y"] + w["h"] <= plot["y"] for w in g["widgets"] if w is not plot) and plot["y"] + plot["h"] <= g["size"][1]
    matches_reference(page.screenshot([pulse]), "guidance_pulse_centre_30")
    guider = add_node(page, "SamplerLabPulseGuider", (1200, 700))
    set_widget(page, guider, "center", "percent")
    page.wait("(id) => window.app.graph.getNodeById(id).slPlot.chart.series?.[0]?.ys?.length > 10", guider)
    top = page.js("(id) => Math.max(...window.app.graph.getNodeById(id).slPlot.chart.series[0].ys)", guider)
    assert abs(top - 7.0) < 0.05  # the guider's own cfg is the peak


def run_from_page(page):
    """Queue the page's graph as the Run button does; wait for the server's end of it, which must be no error."""
    page.js("""() => { window.__sl = {done: false, errors: []}; const api = window.comfyAPI.api.api;
        api.addEventListener('execution_error', (e) => { window.__sl.errors.push(e.detail); window.__sl.done = true; });
        api.addEventListener('execution_success', () => { window.__sl.done = true; }); }""")
    page.js("() => window.app.queuePrompt(0, 1)")
    page.wait("() => window.__sl.done", timeout=240_000)
    assert page.js("() => window.__sl.errors") == []


def connect(page, links):
    """links: [source id, its output slot, target id, its input slot] each, as a person drags them."""
    page.js("""(links) => { const g = window.app.graph;
        for (const [a, i, b, j] of links) g.getNodeById(a).connect(i, g.getNodeById(b), j); }""", links)


def test_calibrated_sampler_plots_karras_before_a_run_and_its_own_levels_after(page, server):
    """No example workflow holds a Calibrated sampler: one built on the page on the Reference model, plotted as
    Calibrated schedule is (Karras at its steps for SD1/SDXL before a run), then run from the page."""
    new_graph(page)
    model, cond, latent = (add_node(page, f"SamplerLabReference{k}", (40, 60 + 200 * i)) for i, k in enumerate(["Model", "Condition", "Latent"]))
    node = add_node(page, "SamplerLabCalibratedSampler", (420, 60))
    plot, preview = add_node(page, "SamplerLabPlotSigmas", (900, 60)), add_node(page, "PreviewImage", (1300, 60))
    connect(page, [[model, 0, cond, 0], [model, 0, latent, 0], [model, 0, node, 0], [cond, 0, node, 1], [cond, 1, node, 2],
                   [latent, 0, node, 3], [node, 1, plot, 0], [plot, 0, preview, 0]])
    page.wait("(id) => window.app.graph.getNodeById(id).slPlot?.sigmas?.length === 9", node)
    before = page.js("(id) => ({sigmas: window.app.graph.getNodeById(id).slPlot.sigmas, caption: window.app.graph.getNodeById(id).slPlot.chart.caption})", node)
    assert abs(before["sigmas"][0] - 14.6146) < 1e-3 and before["caption"].startswith("before a run: Karras 8 steps")
    set_widget(page, node, "steps", 5)
    set_widget(page, node, "seeds", 1)
    page.wait("(id) => window.app.graph.getNodeById(id).slPlot.sigmas.length === 6", node)
    run_from_page(page)
    after = page.js("""(id) => { const s = window.app.graph.getNodeById(id).slPlot;
        return {sigmas: s.sigmas, model: s.model, caption: s.chart.caption, marks: s.chart.marks.map(m => m.label)}; }""", node)
    m, levels = after["model"], after["sigmas"]
    assert m and not m.get("default") and m["space"] == "ve", "no model range reported after the run"
    assert len(levels) == 6 and levels[-1] == 0 and m["sigma_min"] <= levels[-2] < levels[0] <= m["sigma_max"] * (1 + 1e-6)
    assert levels != before["sigmas"] and not after["caption"].startswith("before a run")
    assert [k.split()[0] for k in after["marks"]] == ["σmax", "σmin"]
    assert page.js("(id) => window.app.graph.getNodeById(id).slPlot.sigmas", plot) == levels  # what reached Plot sigmas
    assert after["caption"].startswith("last run: 5 steps") and " → 0 ·" in after["caption"] and "0.00 " not in after["caption"]
    matches_reference(page.screenshot([node]), "calibrated_sampler_after_run")
    caption = "(id) => window.app.graph.getNodeById(id).slPlot.chart.caption"
    sigmas = "(id) => window.app.graph.getNodeById(id).slPlot.sigmas"
    set_widget(page, node, "mode", "recalibrate")  # not in the calibration key: the run's levels stay
    page.js("() => new Promise((done) => setTimeout(done, 400))")  # longer than a route request takes to be asked
    assert page.js(caption, node) == after["caption"] and page.js(sigmas, node) == levels
    set_widget(page, node, "seed", 4)  # keyed (nodes/calibrated.py): back to the candidate
    page.wait(f"(id) => ({caption})(id).startsWith('before a run: Karras 5 steps')", node)
    assert page.js(sigmas, node) != levels
    set_widget(page, node, "seed", 0)  # the run's seed again: its levels again
    page.wait(f"(id) => ({caption})(id) === {json.dumps(after['caption'])}", node)
    assert page.js(sigmas, node) == levels


def upload(server, name, color):
    """A small PNG of one colour uploaded as a temporary image; its /view reference."""
    import io
    import uuid

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buf, format="PNG")
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\ntemp\r\n--{boundary}\r\n"
            f"Content-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n").encode() \
        + buf.getvalue() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(server + "/upload/image", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    answer = json.loads(urllib.request.urlopen(req).read())
    return {"filename": answer["name"], "subfolder": answer.get("subfolder", ""), "type": answer.get("type", "temp")}


COMPARE_MESSAGE = lambda images: {"sl_compare": [{"entries": [
    {"label": "reference: heun 60", "steps": 60, "calls": 119, "seconds": 1.9, "rmse": None, "error": None, "image": images[0]},
    {"label": "euler 20", "steps": 20, "calls": 20, "seconds": 0.31, "rmse": 0.0213, "error": None, "image": images[1]},
    {"label": "sl dpmpp_2m 20", "steps": 20, "calls": 20, "seconds": 0.33, "rmse": 0.0042, "error": None, "image": images[2]},
    {"label": "broken", "steps": 20, "calls": None, "seconds": None, "rmse": None, "error": "ValueError: sigmas", "image": None}]}]}


def test_comparer_slides_flips_and_keeps_its_view_through_save_and_reload(page, server):
    """The node's run output (what nodes/compare.py sends) is handed to onExecuted here; a real run of the
    reference workflow is test_reference_workflow_runs_from_the_page."""
    page.load(json.loads((ROOT / "example_workflows" / "samplerlab_compare.json").read_text()))
    cid = page.js("() => window.app.graph._nodes.find(n => n.type === 'SamplerLabCompare').id")
    images = [upload(server, f"sl_test_{c}.png", c) for c in ("#204080", "#c04020", "#30a050")]
    page.js("([id, m]) => window.app.graph.getNodeById(id).onExecuted(m)", [cid, COMPARE_MESSAGE(images)])
    page.wait("(id) => window.app.graph.getNodeById(id).slCompare.images.every(i => !i || i.complete && i.naturalWidth > 0)", cid)
    page.show([cid])
    view = lambda: page.js("(id) => window.app.graph.getNodeById(id).widgets.find(w => w.name === 'sl_view').value", cid)
    layout = lambda: page.js("(id) => window.app.graph.getNodeById(id).widgets.find(w => w.name === 'sl_view').slLayout", cid)
    assert view() == {"a": 1, "b": 0, "mode": "slide", "split": 0.5}
    L = layout()
    button = {b["id"]: b for b in L["buttons"]}
    x, y = client_point(page, cid, [button["a+"]["x"] + 5, button["a+"]["y"] + 5])
    page.page.mouse.click(x, y)
    assert view()["a"] == 2
    r = L["images"][0]
    x0, y0 = client_point(page, cid, [r["x"] + r["w"] * 0.5, r["y"] + r["h"] / 2])
    x1, _ = client_point(page, cid, [r["x"] + r["w"] * 0.25, r["y"] + r["h"] / 2])
    page.page.mouse.move(x0, y0)
    page.page.mouse.down()
    page.page.mouse.move(x1, y0, steps=4)
    page.page.mouse.up()
    assert abs(view()["split"] - 0.25) < 0.03
    matches_reference(page.screenshot([cid]), "comparer_slide")
    x, y = client_point(page, cid, [button["mode"]["x"] + 5, button["mode"]["y"] + 5])
    page.page.mouse.click(x, y)
    assert view()["mode"] == "side"
    matches_reference(page.screenshot([cid]), "comparer_side_by_side")
    saved = page.js("() => window.app.graph.serialize()")
    node = next(n for n in saved["nodes"] if n["id"] == cid)
    state = node["widgets_values"][-1]
    assert state["a"] == 2 and state["mode"] == "side" and abs(state["split"] - 0.25) < 0.03
    prompt = page.js("async () => (await window.app.graphToPrompt()).output")
    assert "sl_view" not in prompt[str(cid)]["inputs"]  # the view is the workflow's, never the server's
    page.load(json.loads((ROOT / "example_workflows" / "guidance_pulse_ksampler.json").read_text()))
    page.load(saved)
    assert view() == state


SWEEP_MESSAGE = {"sl_sweep": [{"reference": "reference: heun 64", "failed": {}, "points": [
    {"contender": c, "steps": n, "calls": n * k, "error": e0 / n ** p, "ci95": 0.0, "seconds": 0.01 * n}
    for c, k, p, e0 in (("euler", 1, 1, 0.5), ("dpmpp_2m", 1, 2, 0.8), ("sl heun", 2, 2, 0.3)) for n in (4, 8, 16, 32)]}]}


def test_sweep_plot_answers_hover_and_keeps_hidden_lines_through_save_and_reload(page):
    page.load(json.loads((ROOT / "example_workflows" / "samplerlab_convergence_sweep.json").read_text()))
    sid = page.js("() => window.app.graph._nodes.find(n => n.type === 'SamplerLabConvergenceSweep').id")
    page.js("([id, m]) => window.app.graph.getNodeById(id).onExecuted(m)", [sid, SWEEP_MESSAGE])
    page.show([sid])
    matches_reference(page.screenshot([sid]), "sweep_plot")
    widget = "(id) => window.app.graph.getNodeById(id).widgets.find(w => w.name === 'sl_view')"
    L = page.js(f"(id) => ({widget})(id).slLayout", sid)
    point = page.js(f"(id) => {{ const w = ({widget})(id); return [w.slLayout.sx(8), w.slLayout.sy(0.5 / 8)]; }}", sid)
    page.page.mouse.move(*client_point(page, sid, point))
    page.wait("(id) => window.app.graph.getNodeById(id).slSweep.hover?.x === 8", sid)
    inner = L["inner"]
    legend_row = [inner["x"] + inner["w"] - 100, inner["y"] + 4 + 12 * 1 + 6]  # the second contender's row
    page.page.mouse.click(*client_point(page, sid, legend_row))
    assert page.js(f"(id) => ({widget})(id).value", sid) == {"hidden": ["dpmpp_2m"]}
    saved = page.js("() => window.app.graph.serialize()")
    page.load(saved)
    assert page.js(f"(id) => ({widget})(id).value", sid) == {"hidden": ["dpmpp_2m"]}


@pytest.mark.skipif(not REFERENCE, reason="no reference_*.json workflows (the reference-model nodes) in example_workflows")
@pytest.mark.parametrize("path", REFERENCE, ids=lambda p: p.stem)
def test_reference_workflow_runs_from_the_page(page, server, path):
    req = urllib.request.Request(server + "/api/free", data=b'{"free_memory": true}', headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()  # empty the server's cache: every node runs and reports to the page
    page.load(json.loads(path.read_text()))
    run_from_page(page)
    ran = page.js("""() => window.app.graph._nodes.map(n => ({type: n.type, model: n.slPlot?.model ?? null,
        compare: n.slCompare?.entries?.length ?? null, sweep: n.slSweep?.data?.points?.length ?? null}))""")
    for n in ran:
        if n["type"].startswith("SamplerLabSchedule") or n["type"] in ("SamplerLabGuidancePulse", "SamplerLabPulseGuider", "SamplerLabCalibratedSchedule"):
            assert n["model"] and not n["model"].get("default"), f"{n['type']}: no model range reported after the run"
        if n["type"] == "SamplerLabCompare":
            assert n["compare"] and n["compare"] >= 3
        if n["type"] == "SamplerLabConvergenceSweep":
            assert n["sweep"] and n["sweep"] >= 4
    if path.stem == "reference_guidance_pulse_ksampler":
        pulse_shows_the_detected_sigma_c(page)


def pulse_shows_the_detected_sigma_c(page):
    """After the run, the centre-auto pulse's plot holds the sigma_c the server told it (samplerlab.sigma_c), inside
    the model's range, drawn as the pulse centred there with sigma_c marked."""
    pulse = page.js("() => window.app.graph._nodes.find(n => n.type === 'SamplerLabGuidancePulse').id")
    shown = page.js("""(id) => { const s = window.app.graph.getNodeById(id).slPlot;
        return {detected: s.detected, marks: s.chart.marks ?? [], points: s.chart.series?.[0]?.xs?.length ?? 0}; }""", pulse)
    assert shown["detected"], "no sigma_c reached the pulse node after an auto run"
    found, model = shown["detected"]["sigma_c"], shown["detected"]["model"]
    assert str(shown["detected"]["node"]) == str(pulse)
    assert model["sigma_min"] < found["host"] < model["sigma_max"] and 0 < found["percent"] < 1
    [mark] = [m for m in shown["marks"] if m["label"].startswith("σc")]
    assert abs(mark["x"] - 100 * found["percent"]) < 1e-9 and shown["points"] == 65
    matches_reference(page.screenshot([pulse]), "guidance_pulse_sigma_c")
    # a wider pulse after the run: the route draws it at the detected sigma_c, which stays marked
    inside = "(id) => window.app.graph.getNodeById(id).slPlot.chart.series[0].ys.filter(w => w > 1.5).length"
    before = page.js(inside, pulse)
    set_widget(page, pulse, "width", 1.0)
    page.wait(f"(id) => ({inside})(id) > {before}", pulse)
    chart = page.js("(id) => window.app.graph.getNodeById(id).slPlot.chart", pulse)
    assert [m["x"] for m in chart["marks"] if m["label"].startswith("σc")] == [mark["x"]]
    ys = chart["series"][0]["ys"]
    assert abs(chart["series"][0]["xs"][ys.index(max(ys))] - mark["x"]) <= 100 / 65
