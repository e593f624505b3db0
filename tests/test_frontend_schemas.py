"""Titles, descriptions and tooltips of every node, walked from the registry-generated schemas: every input has a
tooltip, no title repeats the pack's name (the front end shows it as a badge) or is wider than a node shows,
descriptions end where a sentence ends and do not say a thing twice."""
import re

import pytest

from comfy_host import comfy, needs_comfyui
from samplerlab.samplers import REGISTRY as SAMPLERS
from samplerlab.schedulers import REGISTRY as SCHEDULERS

# A title is drawn in 14 px sans (about 7.5 px a character) on a node about 300 px wide, beside the pack badge
# (about 80 px) and the collapse dot: 26 characters fit.
TITLE_CHARS = 26


def test_every_registry_parameter_has_a_tooltip():
    for owner, spec in [*SAMPLERS.items(), *SCHEDULERS.items()]:
        for name, p in spec.params.items():
            assert len(p.tooltip.strip()) > 10, f"{owner}.{name}"


@pytest.fixture(scope="module")
def schemas():
    nodes, pack = comfy()
    import sys

    modules = sys.modules[pack.__name__ + ".nodes"].NODE_MODULES
    return [cls.define_schema() for m in modules for cls in m.NODES]


@needs_comfyui
def test_every_input_of_every_node_has_a_tooltip(schemas):
    missing = [f"{s.node_id}.{i.id}" for s in schemas for i in s.inputs if not (getattr(i, "tooltip", None) or "").strip()]
    assert not missing


@needs_comfyui
def test_titles_are_short_and_do_not_repeat_the_pack(schemas):
    for s in schemas:
        assert "samplerlab" not in s.display_name.lower(), s.node_id
        assert len(s.display_name) <= TITLE_CHARS, s.display_name


@needs_comfyui
def test_descriptions_are_whole_sentences_said_once(schemas):
    for s in schemas:
        d = s.description.strip()
        assert d[-1] in ".)", f"{s.node_id}: description ends with {d[-20:]!r}"
        for n in range(1, 6):
            assert len(re.findall(rf"\border {n}\b", d, re.I)) <= 1, f"{s.node_id} says 'order {n}' twice"


@needs_comfyui
def test_an_unbounded_widget_says_what_its_maximum_stands_for(schemas):
    for s in schemas:
        for i in s.inputs:
            if getattr(i, "max", None) == 1e12 and "inf" in (i.tooltip or ""):
                assert "1e+12" in i.tooltip, f"{s.node_id}.{i.id}: {i.tooltip}"
