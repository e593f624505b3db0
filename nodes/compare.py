"""A/B testing nodes: Contender, Compare, Convergence sweep, Trajectory inspector.

The measuring lives in lab/compare.py and lab/metrics.py (shared with `python -m samplerlab compare`);
this module only turns ComfyUI objects into `Entry` runs. A run is SamplerCustomAdvanced's: the
contender's GUIDER (or a CFGGuider of the node's model, conditioning and cfg), its SAMPLER and SIGMAS,
the NOISE with seed + k for seed k. Model calls are counted, not assumed: a PREDICT_NOISE wrapper counts
the denoiser evaluations the sampler asks for, an APPLY_MODEL wrapper counts network forward passes
(both on a copy of the guider's model_options, so the MODEL is left untouched). The VAE is optional:
without it SSIM is not measured and pictures are latent previews (first three channels).
"""
import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import numpy as np
import torch
from comfy_api.latest import io, ui
from PIL import Image, ImageDraw

from ..lab import compare
from .host import space_of
from .widgets import schema

CATEGORY = "sampling/samplerlab/compare"
COUNT_KEY = "samplerlab_count"
MAX_CONTENDERS = 6
RESAMPLE = "contender sigmas (resampled)"
Contender = io.Custom("SAMPLERLAB_CONTENDER")


@dataclass
class ContenderSpec:
    """What the Contender node outputs."""

    sampler: object
    sigmas: torch.Tensor
    guider: Optional[object]
    label: str

    @property
    def steps(self):
        return int(self.sigmas.shape[-1]) - 1


def sampler_name(sampler):
    fn = getattr(sampler, "sampler_function", None)
    name = getattr(fn, "__name__", type(sampler).__name__)
    return name[len("sample_"):] if name.startswith("sample_") else name


class Counter:
    """Wrapper functions (ComfyUI's WrapperExecutor protocol) that count what passes through them."""

    def __init__(self):
        self.calls = self.passes = 0

    def predict(self, executor, *args, **kwargs):
        self.calls += 1
        return executor(*args, **kwargs)

    def apply(self, executor, *args, **kwargs):
        self.passes += 1
        return executor(*args, **kwargs)


def counted(guider, counter):
    """A shallow copy of the guider whose model_options (a copy) carry the counting wrappers."""
    g = copy.copy(guider)
    g.model_options = comfy.model_patcher.create_model_options_clone(guider.model_options)
    for kind, fn in ((comfy.patcher_extension.WrappersMP.PREDICT_NOISE, counter.predict),
                     (comfy.patcher_extension.WrappersMP.APPLY_MODEL, counter.apply)):
        comfy.patcher_extension.add_wrapper_with_key(kind, COUNT_KEY, fn, g.model_options, is_model_options=True)
    return g


class Host:
    """The shared inputs of the comparison nodes, turning contenders into compare.Entry runs."""

    def __init__(self, model, positive, negative, cfg, latent, noise):
        self.model, self.positive, self.negative, self.cfg, self.latent, self.noise = model, positive, negative, cfg, latent, noise

    def seeds(self, n):
        if n > 1 and not hasattr(self.noise, "seed"):
            raise ValueError(f"noise: {type(self.noise).__name__} has no seed, so it cannot give {n} seeds; use seeds = 1")
        base = int(getattr(self.noise, "seed", 0))
        return [base + k for k in range(n)]

    def guider(self, c):
        if c.guider is not None:
            return c.guider
        g = comfy.samplers.CFGGuider(self.model)
        g.set_conds(self.positive, self.negative)
        g.set_cfg(self.cfg)
        return g

    def entry(self, c, label=None, sigmas=None, record=None):
        """An Entry running contender c (on `sigmas` if given); record(i, x0) sees each step's x0 prediction."""
        sigmas = c.sigmas if sigmas is None else sigmas
        meta = {"sampler": sampler_name(c.sampler), "guider": type(c.guider).__name__ if c.guider is not None else "CFGGuider (node inputs)",
                "sigma_start": float(sigmas[0]), "contender": c.label}

        def run(seed, step):
            counter = Counter()
            guider = counted(self.guider(c), counter)
            noise = copy.copy(self.noise)
            if hasattr(noise, "seed"):
                noise.seed = seed
            latent = dict(self.latent)
            latent["samples"] = comfy.sample.fix_empty_latent_channels(guider.model_patcher, latent["samples"])

            def callback(i, x0, x, total):
                step(i)
                if record is not None:
                    record(i, x0.detach().to("cpu", torch.float32))

            out = guider.sample(noise.generate_noise(latent), latent["samples"], c.sampler, sigmas, denoise_mask=latent.get("noise_mask"),
                                callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=getattr(noise, "seed", None))
            return compare.Outcome(out.to("cpu", torch.float32), counter.calls, counter.passes)

        return compare.Entry(label or c.label, len(sigmas) - 1, run, meta)


def decoder(vae):
    """vae.decode as [B, H, W, C] in [0, 1]; video frames [B, T, H, W, C] are stacked vertically."""
    if vae is None:
        return None

    def decode(x):
        img = vae.decode(x).to("cpu", torch.float32)
        return img.reshape(img.shape[0], -1, *img.shape[-2:]) if img.ndim == 5 else img

    return decode


def progress_bar():
    bar = comfy.utils.ProgressBar(1)

    def progress(done, total):
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, total)

    return progress


FATAL = (comfy.model_management.InterruptProcessingException,)


def to_image(pil):
    """A PIL image as a ComfyUI IMAGE [1, H, W, 3] in [0, 1]."""
    return torch.from_numpy(np.asarray(pil.convert("RGB"), dtype=np.float32) / 255.0)[None]


def blank(text):
    im = Image.new("RGB", (256, 64), "white")
    ImageDraw.Draw(im).text((6, 24), text, fill="black")
    return im


def write_json(kind, data):
    """Write to <output>/samplerlab/<kind>_<n>.json (next free n); returns the path."""
    folder = Path(folder_paths.get_output_directory()) / "samplerlab"
    folder.mkdir(parents=True, exist_ok=True)
    n = 1 + max([int(p.stem.rsplit("_", 1)[1]) for p in folder.glob(f"{kind}_*.json") if p.stem.rsplit("_", 1)[1].isdigit()] or [0])
    path = folder / f"{kind}_{n:05d}.json"
    path.write_text(compare.to_json({**data, "path": str(path)}, indent=1))
    return path


def host_inputs():
    return [io.Model.Input("model", tooltip="The model every contender without a GUIDER runs on."),
            io.Conditioning.Input("positive", tooltip="Prompt conditioning for contenders without a GUIDER."),
            io.Conditioning.Input("negative", tooltip="Negative conditioning for contenders without a GUIDER."),
            io.Float.Input("cfg", default=7.0, min=0.0, max=100.0, step=0.1, round=0.01,
                           tooltip="Used by contenders without a GUIDER (a plain CFGGuider of this model and conditioning)."),
            io.Latent.Input("latent_image", tooltip="The latent every run starts from (its size and batch)."),
            io.Noise.Input("noise", tooltip="Seed k of the comparison uses this noise with seed + k, for every contender alike (paired)."),
            Contender.Input("reference", tooltip="The finest solve (e.g. heun on 100+ steps): errors are measured against it, per seed.")]


def contender_inputs():
    return [Contender.Input(f"contender_{k}", optional=True, tooltip=f"Contender {k} (optional; paired differences are against contender 1).")
            for k in range(1, MAX_CONTENDERS + 1)]


def gather(kwargs):
    """The connected contender_k inputs in order, with unique labels."""
    cs = [kwargs[f"contender_{k}"] for k in range(1, MAX_CONTENDERS + 1) if kwargs.get(f"contender_{k}") is not None]
    return [(c, label) for c, label in zip(cs, compare.unique_labels([c.label for c in cs]))]


class SamplerLabContender(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SamplerLabContender", display_name="Contender", category=CATEGORY,
            description="One entry of an A/B comparison: any SAMPLER and SIGMAS (built-in, samplerlab or another pack's), optionally a GUIDER.",
            search_aliases=["ab test", "contender", "xy plot"],
            inputs=[io.Sampler.Input("sampler", tooltip="Any SAMPLER: KSamplerSelect, a samplerlab sampler or another pack's."),
                    io.Sigmas.Input("sigmas", tooltip="The levels this contender steps through (their count is its step count)."),
                    io.String.Input("label", default="", tooltip="Shown in the grid and the report; empty: '<sampler> <steps>'."),
                    io.Guider.Input("guider", optional=True, tooltip="Replaces the compare node's model, conditioning and cfg for this contender.")],
            outputs=[Contender.Output(display_name="contender")],
        )

    @classmethod
    def execute(cls, sampler, sigmas, label="", guider=None) -> io.NodeOutput:
        if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1 or len(sigmas) < 2:
            raise ValueError(f"sigmas: need a 1-D tensor of at least two levels, got {getattr(sigmas, 'shape', sigmas)}")
        label = label.strip() or f"{sampler_name(sampler)} {len(sigmas) - 1}"
        return io.NodeOutput(ContenderSpec(sampler, sigmas.detach().cpu(), guider, label))


class SamplerLabCompare(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SamplerLabCompare", display_name="Compare samplers", category=CATEGORY,
            description="Paired A/B test of 2-6 contenders against a reference solve on the same model, conditioning, latent and seeds: "
                        "counted model calls, wall time, RMSE / PSNR (latent) and SSIM (pixels, with a VAE), mean and 95% t-interval over seeds, "
                        "paired differences against contender_1. Writes a JSON report to output/samplerlab/.",
            search_aliases=["ab test", "xy plot", "sampler comparison"], is_output_node=True,
            inputs=host_inputs() + [
                io.Int.Input("seeds", default=4, min=1, max=64, tooltip="Runs per contender (noise seed, seed + 1, ...)."),
                io.Vae.Input("vae", optional=True, tooltip="Decodes for SSIM and the picture grid; without it: latent previews, no SSIM."),
            ] + contender_inputs(),
            outputs=[io.Image.Output("grid", display_name="grid"), io.Image.Output("heatmap", display_name="difference heat-map"),
                     io.String.Output("report", display_name="report (JSON)")],
        )

    @classmethod
    def execute(cls, model, positive, negative, cfg, latent_image, noise, reference, seeds, vae=None, **kwargs) -> io.NodeOutput:
        host = Host(model, positive, negative, cfg, latent_image, noise)
        entries = [host.entry(c, label) for c, label in gather(kwargs)]
        seed_list = host.seeds(seeds)
        decode = decoder(vae)
        ref, results = compare.compare(entries, host.entry(reference, f"reference: {reference.label}"), seed_list, decode,
                                       progress_bar(), FATAL)
        report = compare.summary(ref, results, seed_list, decode is not None)
        report["table"] = compare.markdown(report)
        report["path"] = str(write_json("compare", report))
        grid = compare.grid_picture(ref, results)
        heat = compare.heatmap_picture(ref, results, decode is not None) or blank("no contender ran")
        grid_t = to_image(grid)
        return io.NodeOutput(grid_t, to_image(heat), compare.to_json(report, indent=1), ui=comparer_ui(cls, ref, results, report))


def finite(v):
    """v, or None where it is not a finite number (the front end's JSON has no NaN)."""
    return float(v) if v is not None and math.isfinite(v) else None


def comparer_ui(cls, ref, results, report):
    """The Compare node's view for web/samplerlab.js: the first kept picture of the reference and of each contender
    (temporary previews, one batch), with each one's counted calls, seconds and RMSE, or its error."""
    rows = [report["reference"]] + report["contenders"]
    runs = [ref] + list(results)
    shown = [k for k, r in enumerate(runs) if r.ok and r.pictures]
    pictures = torch.stack([runs[k].pictures[0][..., :3].float().cpu() for k in shown]) if shown else None
    saved = ui.PreviewImage(pictures, cls=cls).as_dict()["images"] if pictures is not None else []
    image = dict(zip(shown, [dict(v) for v in saved]))
    entries = []
    for k, row in enumerate(rows):
        stat = lambda key: finite(row[key]["mean"]) if isinstance(row.get(key), dict) else None
        entries.append({"label": row["label"], "steps": row.get("steps"),
                        "calls": stat("model_calls"), "seconds": stat("seconds"), "rmse": stat("rmse"),
                        "error": row.get("error"), "image": image.get(k)})
    return {"sl_compare": [{"entries": entries}]}


def parse_steps(text):
    """'4, 8, 16' -> [4, 8, 16]; a ValueError naming the parameter otherwise."""
    try:
        steps = sorted({int(t) for t in text.replace(",", " ").split()})
    except ValueError:
        raise ValueError(f"steps: expected whole numbers separated by commas, got {text!r}") from None
    if not steps or steps[0] < 1:
        raise ValueError(f"steps: need at least one count, all >= 1, got {text!r}")
    return steps


class SamplerLabConvergenceSweep(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SamplerLabConvergenceSweep", display_name="Convergence sweep", category=CATEGORY,
            description="Every contender at every step count against one reference: a log-log plot of RMSE (latent) against counted model "
                        "calls, and a table with the fitted slope. Writes output/samplerlab/sweep_<n>.json.",
            search_aliases=["convergence", "error vs steps", "order"], is_output_node=True,
            inputs=host_inputs() + [
                io.Int.Input("seeds", default=2, min=1, max=64, tooltip="Runs per contender and step count (noise seed, seed + 1, ...)."),
                io.String.Input("steps", default="4, 8, 16, 32", tooltip="Step counts; the reference needs at least the largest."),
                io.Combo.Input("schedule", options=[RESAMPLE] + list(comfy.samplers.SCHEDULER_NAMES), default=RESAMPLE,
                               tooltip="Levels at each count: the contender's SIGMAS interpolated in log sigma, or a scheduler by name."),
            ] + contender_inputs(),
            outputs=[io.Image.Output("plot", display_name="plot"), io.String.Output("table", display_name="table (Markdown)")],
        )

    @classmethod
    def execute(cls, model, positive, negative, cfg, latent_image, noise, reference, seeds, steps, schedule=RESAMPLE, **kwargs) -> io.NodeOutput:
        host = Host(model, positive, negative, cfg, latent_image, noise)
        counts = parse_steps(steps)
        ms = model.get_model_object("model_sampling")
        levels = (lambda c, n: compare.resample_sigmas(c.sigmas, n)) if schedule == RESAMPLE else \
            (lambda c, n: comfy.samplers.calculate_sigmas(ms, schedule, n).cpu().float())
        entries = []
        for c, label in gather(kwargs):
            for n in counts:
                e = host.entry(c, f"{label} {n}", levels(c, n))
                e.meta.update(contender=label, schedule=schedule)
                entries.append(e)
        reference_entry = host.entry(reference, f"reference: {reference.label}")
        seed_list = host.seeds(seeds)
        compare.check_entries(entries, reference_entry, seed_list, minimum=1)
        ref, results = compare.run_paired(entries, reference_entry, seed_list, None, progress_bar(), FATAL, keep=0)
        records = compare.sweep_records(ref, results, "comfyui", space_of(model))
        table = compare.sweep_table(records, [(r.label, r.problem) for r in results if r.problem])
        write_json("sweep", {"kind": "samplerlab.sweep", "reference": ref.label, "seeds": seed_list, "schedule": schedule,
                             "records": [r.__dict__ for r in records], "failed": {r.label: r.problem for r in results if r.problem},
                             "table": table})
        plot = to_image(compare.sweep_chart(records))
        points = [{"contender": r.sampler, "steps": r.steps, "calls": r.nfe, "error": finite(r.error),
                   "ci95": finite(r.error_ci), "seconds": finite(r.seconds)} for r in records]
        return io.NodeOutput(plot, table, ui={"sl_sweep": [{"points": points, "reference": ref.label,
                                                              "failed": {r.label: r.error for r in results if not r.ok}}]})


class SamplerLabTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SamplerLabTrajectory", display_name="Trajectory inspector", category=CATEGORY,
            description="Records every step's x0 prediction of one run: energy per radial frequency band as a fraction of the final step's "
                        "(coarse bands settle first) and the speed of the x0 prediction, whose peak marks commitment (critical-time proxy).",
            search_aliases=["trajectory", "critical time", "spectrum"],
            inputs=[i for i in host_inputs() if i.id != "reference"] + [
                Contender.Input("contender", tooltip="The run to inspect (its SAMPLER, SIGMAS and optional GUIDER)."),
                io.Int.Input("bands", default=5, min=2, max=8, tooltip="DC plus octave bands up to the corner frequency."),
            ],
            outputs=[io.Image.Output("plot", display_name="plot"), io.String.Output("report", display_name="report (JSON)")],
        )

    @classmethod
    def execute(cls, model, positive, negative, cfg, latent_image, noise, contender, bands) -> io.NodeOutput:
        host = Host(model, positive, negative, cfg, latent_image, noise)
        x0s = {}
        entry = host.entry(contender, record=lambda i, x0: x0s.__setitem__(i, x0))
        progress = progress_bar()
        entry.run(host.seeds(1)[0], lambda i: progress(int(i) + 1, entry.steps))
        space = space_of(host.guider(contender).model_patcher)
        t = compare.trajectory([x0s[i] for i in sorted(x0s)], contender.sigmas.tolist(), space, bands)
        t["label"] = contender.label
        plot = to_image(compare.trajectory_chart(t, contender.label))
        return io.NodeOutput(plot, compare.to_json(t), ui=ui.PreviewImage(plot, cls=cls))


NODES = [SamplerLabContender, SamplerLabCompare, SamplerLabConvergenceSweep, SamplerLabTrajectory]
