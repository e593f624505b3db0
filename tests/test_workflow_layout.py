"""Geometry of example_workflows/*.json as ComfyUI's front end (1.35) lays nodes out: no two nodes overlap (title
bars included), every node is at least as tall as its slots and widgets need (the pack's plot widgets at the
heights web/samplerlab.js gives them), every workflow has a Note saying what it shows and a Templates thumbnail.

The front end's LGraphNode.computeSize: height = max(link inputs, outputs, 1) * 20 + sum(widget height + 4) + 14,
a widget 20 px (a multiline text box 50), the title bar 30 px above `pos`."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))
TITLE, SLOT, WIDGET, MULTILINE, GAP, PAD = 30, 20, 20, 50, 4, 14
MULTILINE_WIDGETS = {"CLIPTextEncode": {0}, "Note": {0}, "MarkdownNote": {0}}
# nodes whose widgets the workflow file does not list, or that need room for what they show
AT_LEAST = {"PreviewAny": 112, "PreviewImage": 240, "SaveImage": 260}
NOTES = {"Note", "MarkdownNote"}


def js_heights():
    """The pack's canvas widget heights, read from web/samplerlab.js (one source of truth)."""
    text = (ROOT / "web" / "samplerlab.js").read_text()
    get = lambda name: int(re.search(rf"const {name} = (\d+);", text).group(1))
    plot = get("PLOT_HEIGHT")
    heights = {"SamplerLabCalibratedSchedule": plot, "SamplerLabPlotSigmas": plot, "SamplerLabGuidancePulse": plot,
               "SamplerLabPulseGuider": plot, "SamplerLabCompare": get("COMPARER_HEIGHT"),
               "SamplerLabConvergenceSweep": get("SWEEP_HEIGHT")}
    return lambda kind: heights.get(kind, plot if kind.startswith("SamplerLabSchedule") else None)


CANVAS = js_heights()


def needed_height(node):
    """The least height (below the title) the front end gives the node."""
    links = [i for i in node.get("inputs", []) if "widget" not in i]
    values = [v for v in node.get("widgets_values") or [] if not isinstance(v, dict)]  # a dict: the pack's saved view
    multiline = MULTILINE_WIDGETS.get(node["type"], set())
    h = max(len(links), len(node.get("outputs", [])), 1) * SLOT
    h += sum((MULTILINE if k in multiline else WIDGET) + GAP for k in range(len(values)))
    if CANVAS(node["type"]):
        h += CANVAS(node["type"]) + GAP
    h += PAD if values or CANVAS(node["type"]) else 6
    return max(h, AT_LEAST.get(node["type"], 0))


def box(node):
    (x, y), (w, h) = node["pos"], node["size"]
    return x, y - TITLE, x + w, y + h


def overlaps(a, b, margin=0):
    return a[0] < b[2] + margin and b[0] < a[2] + margin and a[1] < b[3] + margin and b[1] < a[3] + margin


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_nodes_are_tall_enough_for_their_widgets(path):
    short = [(n["id"], n["type"], n["size"][1], needed_height(n)) for n in json.loads(path.read_text())["nodes"]
             if n["size"][1] < needed_height(n)]
    assert not short, f"(id, type, height, needed): {short}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_no_two_nodes_overlap(path):
    nodes = json.loads(path.read_text())["nodes"]
    hits = [(a["id"], b["id"]) for i, a in enumerate(nodes) for b in nodes[i + 1:] if overlaps(box(a), box(b), margin=10)]
    assert not hits, f"overlapping node ids (10 px apart at least): {hits}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_each_workflow_explains_itself_in_a_note(path):
    notes = [n for n in json.loads(path.read_text())["nodes"] if n["type"] in NOTES]
    assert len(notes) == 1 and len(notes[0]["widgets_values"][0]) > 120
    assert "change" in notes[0]["widgets_values"][0].lower()


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_each_workflow_has_a_templates_thumbnail(path):
    """The front end asks for example_workflows/<name>.jpg (mediaSubtype 'jpg' for a custom node's template)."""
    thumb = path.with_suffix(".jpg")
    assert thumb.is_file() and thumb.read_bytes()[:3] == b"\xff\xd8\xff", thumb.name
    assert 20_000 < thumb.stat().st_size < 400_000
