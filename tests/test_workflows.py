"""example_workflows/*.json: well-formed UI workflows naming only core node ids listed here or this
pack's; with COMFYUI_PATH, converted to the API format and passed through ComfyUI's own
execution.validate_prompt (node types, widget values, link types), the checkpoint name allowed; and every
reference_*.json (the checkpoint workflow of the same name on a Reference model) executed end to end by
ComfyUI's own PromptExecutor on the CPU, its images written and its reports present."""
import asyncio
import json
import re
import time
from pathlib import Path

import pytest

from comfy_host import COMFYUI_PATH, comfy, needs_comfyui
from samplerlab.samplers import REGISTRY as SAMPLERS
from samplerlab.schedulers import REGISTRY as SCHEDULERS

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))
REFERENCE = [p for p in WORKFLOWS if p.stem.startswith("reference_")]
CHECKPOINT = [p for p in WORKFLOWS if p not in REFERENCE]
LOADERS = {"CheckpointLoaderSimple", "CLIPTextEncode", "VAEDecode", "EmptyLatentImage"}
REFERENCE_NODES = {"SamplerLabReferenceModel", "SamplerLabReferenceCondition", "SamplerLabReferenceLatent", "SamplerLabReferenceDecode"}
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


def types(path):
    return [n["type"] for n in json.loads(path.read_text())["nodes"] if n["type"] not in VIRTUAL]


@pytest.mark.parametrize("path", CHECKPOINT, ids=lambda p: p.stem)
def test_each_checkpoint_workflow_has_a_reference_version(path):
    ref = path.with_name(f"reference_{path.name}")
    assert ref.exists(), f"{ref.name} missing"
    assert sorted(t for t in types(path) if t not in LOADERS) == sorted(t for t in types(ref) if t not in REFERENCE_NODES)
    assert not LOADERS & set(types(ref)) and {"SamplerLabReferenceModel", "SamplerLabReferenceCondition"} <= set(types(ref))


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


class _Server:
    """What PromptExecutor needs of the server: no client, messages dropped."""

    client_id = None
    last_node_id = None

    def send_sync(self, event, data, sid=None):
        pass


def run_workflow(path, out_dir, server=None):
    """Validate and execute a workflow with ComfyUI's PromptExecutor, queued by `server`'s client_id and its
    messages sent there (default: no client, messages dropped); (prompt, ui outputs, seconds)."""
    nodes, _ = comfy()
    if "RandomNoise" not in nodes.NODE_CLASS_MAPPINGS:
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    import execution
    import folder_paths

    folder_paths.set_output_directory(str(out_dir / "output"))
    folder_paths.set_temp_directory(str(out_dir / "temp"))
    prompt = to_api(json.loads(path.read_text()), nodes.NODE_CLASS_MAPPINGS)
    ok, error, outputs, node_errors = asyncio.run(execution.validate_prompt("samplerlab-run", prompt, None))
    assert ok, (error, node_errors)
    import torch

    executor = execution.PromptExecutor(server or _Server(), cache_type=execution.CacheType.NONE, cache_args={"lru": 0, "ram": 0})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core of two: the timing holds on a shared CI runner too
    try:
        start = time.perf_counter()
        executor.execute(prompt, "samplerlab-run", {} if server is None else {"client_id": server.client_id}, outputs)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    errors = [data for event, data in executor.status_messages if event == "execution_error"]
    assert executor.success and not errors, errors
    return prompt, executor.history_result["outputs"], seconds


@needs_comfyui
@pytest.mark.parametrize("path", REFERENCE, ids=lambda p: p.stem)
def test_reference_workflow_runs_in_comfyui(path, tmp_path):
    prompt, ui, seconds = run_workflow(path, tmp_path)
    kinds = {nid: v["class_type"] for nid, v in prompt.items()}
    for nid, kind in kinds.items():
        if kind in ("SaveImage", "PreviewImage"):
            images = ui[nid]["images"]
            folder = tmp_path / ("output" if kind == "SaveImage" else "temp")
            assert images and all((folder / im["subfolder"] / im["filename"]).stat().st_size > 0 for im in images)
        if kind == "PreviewAny":
            text = ui[nid]["text"][0]
            assert text.strip()
            if any(k in kinds.values() for k in ("SamplerLabCompare", "SamplerLabTrajectory")):
                assert isinstance(json.loads(text), (dict, list))
    print(f"{path.stem}: {seconds:.1f} s")
    assert seconds < 30, f"{path.stem} took {seconds:.0f} s on one thread (target: under 30 s)"
