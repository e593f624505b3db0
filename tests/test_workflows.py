"""example_workflows/*.json: well-formed UI workflows naming only core node ids listed here or this
pack's; with COMFYUI_PATH, converted to the API format and passed through ComfyUI's own
execution.validate_prompt (node types, widget values, link types), the checkpoint name allowed."""
import asyncio
import json
import re
from pathlib import Path

import pytest

from comfy_host import COMFYUI_PATH, comfy, needs_comfyui
from samplerlab.samplers import REGISTRY as SAMPLERS
from samplerlab.schedulers import REGISTRY as SCHEDULERS

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))
CORE = {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "RandomNoise", "KSamplerSelect", "BasicScheduler",
        "CFGGuider", "PreviewImage", "PreviewAny", "SaveImage", "VAEDecode", "SamplerCustomAdvanced", "KSampler"}
VIRTUAL = {"Note", "MarkdownNote"}  # front-end-only nodes: never in a prompt


def camel(name):
    return "".join(part.capitalize() for part in name.split("_"))


def pack_ids():
    """Node ids of this pack without importing comfy: the generated ones from the registries, and
    every literal node_id= in nodes/."""
    ids = {f"SamplerLab{camel(n)}" for n in SAMPLERS} | {f"SamplerLabSchedule{camel(n)}" for n in SCHEDULERS}
    for path in (ROOT / "nodes").glob("*.py"):
        ids |= set(re.findall(r'node_id="(\w+)"', path.read_text()))
    return ids


def test_there_are_workflows_for_the_compare_nodes():
    used = {n["type"] for wf in WORKFLOWS for n in json.loads(wf.read_text())["nodes"]}
    assert {"SamplerLabCompare", "SamplerLabConvergenceSweep", "SamplerLabTrajectory", "SamplerLabContender"} <= used


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_is_well_formed_and_known(path):
    wf = json.loads(path.read_text())
    known = CORE | VIRTUAL | pack_ids()
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert not [n["type"] for n in nodes.values() if n["type"] not in known]
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        assert nodes[src]["outputs"][src_slot]["type"] == kind and link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id and nodes[dst]["inputs"][dst_slot]["type"] in (kind, "*")


def to_api(wf, mappings):
    """UI workflow -> API prompt: links by input name, widget values in INPUT_TYPES order (skipping the
    control_after_generate entry that follows a seed)."""
    links = {lid: (str(src), slot) for lid, src, slot, _, _, _ in wf["links"]}
    prompt = {}
    for n in wf["nodes"]:
        if n["type"] in VIRTUAL:
            continue
        types = mappings[n["type"]].INPUT_TYPES()
        specs = {**types.get("required", {}), **types.get("optional", {})}
        inputs = {i["name"]: list(links[i["link"]]) for i in n["inputs"] if i["link"] is not None}
        values = iter(n["widgets_values"])
        for name, spec in specs.items():
            if name in inputs or (not isinstance(spec[0], list) and spec[0] not in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")):
                continue
            inputs[name] = next(values)
            if len(spec) > 1 and spec[1].get("control_after_generate"):
                next(values)
        assert next(values, None) is None, f"{n['type']}: more widget values than widgets"
        prompt[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
    return prompt


@needs_comfyui
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_validates_in_comfyui(path, monkeypatch):
    nodes, _ = comfy()
    if "RandomNoise" not in nodes.NODE_CLASS_MAPPINGS:
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    import execution
    import folder_paths

    wf = json.loads(path.read_text())
    missing = {n["type"] for n in wf["nodes"]} - set(nodes.NODE_CLASS_MAPPINGS) - VIRTUAL
    assert not missing, f"unknown to ComfyUI at {COMFYUI_PATH}: {missing}"
    prompt = to_api(wf, nodes.NODE_CLASS_MAPPINGS)
    ckpts = [v["inputs"]["ckpt_name"] for v in prompt.values() if v["class_type"] == "CheckpointLoaderSimple"]
    listing = folder_paths.get_filename_list
    monkeypatch.setattr(folder_paths, "get_filename_list", lambda kind: ckpts if kind == "checkpoints" else listing(kind))
    ok, error, outputs, node_errors = asyncio.run(execution.validate_prompt("samplerlab-test", prompt, None))
    assert ok, (error, node_errors)
    assert outputs
