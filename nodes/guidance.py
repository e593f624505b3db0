"""Guidance pulses in ComfyUI: a MODEL patch for the plain KSampler, a GUIDER for SamplerCustomAdvanced, and a
node that measures the critical level sigma_c of a model. The logic is samplers/guidance.py and critical.py.
When an auto centre has been detected, the pulse node's plot on the page is told (SIGMA_C_EVENT, `sigma_c_message`).

Per-run state (the detector, counts) lives in the run's own model_options["transformer_options"] (CFGGuider
clones it for every run), never in the node or a global.
"""
import dataclasses
import logging

import comfy.sample
import comfy.samplers
import torch
from comfy_api.latest import io

from ..samplers.critical import probe_sigma_c, unmeasured_reason
from ..samplers.guidance import SHAPES, GuidedRun, combine, curve, percent_at_sigma, schedule_at_percents
from ..samplers.space import FLOW, resolve
from .host import send_to_page, space_of
from .views import model_view
from .widgets import schema

CATEGORY = "sampling/samplerlab/guidance"
LOG = logging.getLogger("samplerlab")
SIGMA_C_EVENT = "samplerlab.sigma_c"  # web/samplerlab.js listens


def schedule_inputs():
    """The widgets every pulse node shares (the peak is the KSampler's cfg or the guider's own)."""
    return [
        io.Combo.Input("shape", options=list(SHAPES) + ["interval"], default="gaussian",
                       tooltip="gaussian / cosine / box: a pulse around the centre in log sigma; interval: guidance "
                               "only between start_percent and end_percent (the guidance interval)."),
        io.Combo.Input("center", options=["auto", "percent"], default="auto",
                       tooltip="auto: measure the critical level sigma_c of this model and prompt during sampling "
                               "(power iteration on the unconditional prediction; reported in the log and marked on the node's plot); "
                               "percent: centre at center_percent of the schedule."),
        io.Float.Input("center_percent", default=0.5, min=0.0, max=1.0, step=0.01, round=False,
                       tooltip="Pulse centre as a fraction of the model's schedule (0 = start, 1 = end); used when center = percent."),
        io.Float.Input("width", default=0.5, min=0.01, max=10.0, step=0.05, round=False,
                       tooltip="Pulse width in nats of sigma (log sigma; same meaning on every model): gaussian std, "
                               "cosine and box half-width."),
        io.Float.Input("base", default=1.0, min=0.0, max=100.0, step=0.1, round=False,
                       tooltip="Guidance weight outside the pulse; 1 = no guidance there (the negative is then not evaluated)."),
        io.Float.Input("start_percent", default=0.2, min=0.0, max=1.0, step=0.01, round=False,
                       tooltip="interval shape: guidance starts at this fraction of the schedule."),
        io.Float.Input("end_percent", default=0.6, min=0.0, max=1.0, step=0.01, round=False,
                       tooltip="interval shape: guidance ends at this fraction of the schedule."),
        io.Int.Input("probes", default=4, min=1, max=16,
                     tooltip="center = auto: probes per sample after the first (one extra model call each), walking down to where the estimate is self-consistent."),
    ]


def build_schedule(model, peak, shape, center, center_percent, width, base, start_percent, end_percent):
    """A Pulse or Interval in VE levels from model-independent settings, through the model's percent_to_sigma."""
    if shape != "interval" and center not in ("auto", "percent"):
        raise ValueError(f"center must be 'auto' or 'percent', got {center!r}")
    return schedule_at_percents(model.get_model_object("model_sampling").percent_to_sigma, space_of(model), peak, shape,
                                center_percent if center == "percent" else None, width, base, start_percent, end_percent)


def detected(run, model):
    """The run's sigma_c (the batch's median) as (host level, VE level, percent of the model's schedule); None before
    the first probe."""
    if run.sigma_c is None:
        return None
    ms, space = model.get_model_object("model_sampling"), resolve(space_of(model))
    ve = float(torch.as_tensor(run.sigma_c).median())
    host = space.from_ve(ve)
    return host, ve, percent_at_sigma(host, ms.percent_to_sigma)


def describe(run, model) -> str:
    """The run's report plus sigma_c as a host level and as a percent of the model's schedule."""
    line = "samplerlab pulse: " + run.report()
    found = detected(run, model)
    if found is not None:
        line += f"; sigma_c = {found[0]:.4g} as a host level, at {100 * found[2]:.1f}% of the schedule"
    return line


def sigma_c_message(state, model):
    """What the page is told once an auto centre is detected: the node's `sl_pulse` entry as pulse_ui makes it for the
    pulse centred at the detected sigma_c (the batch's median), the node's id, and sigma_c as a host level, a VE level,
    a percent of the schedule and the batch's range of host levels."""
    run, space = state.run, resolve(space_of(model))
    host, ve, percent = detected(run, model)
    lo, hi = torch.as_tensor(run.sigma_c, dtype=torch.float64).reshape(-1).aminmax()
    [shown] = pulse_ui(model, dataclasses.replace(run.schedule, center=ve), state.peak)["sl_pulse"]
    return {**shown, "node": state.node,
            "sigma_c": {"host": host, "ve": ve, "percent": percent, "samples": [space.from_ve(float(lo)), space.from_ve(float(hi))]}}


class PulseState:
    """One run of a pulse patch or guider: the GuidedRun, whether the last query skipped D_u, whether it was logged;
    `node` (the node's unique id, None: no page to tell) and `peak` (None: the KSampler's cfg) for the page."""

    def __init__(self, schedule, space, probes, node=None, peak=None):
        self.run = GuidedRun(schedule, space, probes)
        self.node, self.peak = node, peak
        self.skipped, self.logged = False, False


def run_state(model_options, key, make):
    options = model_options.setdefault("transformer_options", {})
    if key not in options:
        options[key] = make()
    return options[key]


def query(state, calc, x, sigma, cond, uncond, peak=None):
    """D_c and D_u (None where the schedule does not need it) at host level sigma, with the probe call when the
    detector asks for one; calc(conds, x) evaluates a list of conds like comfy.samplers.calc_cond_batch."""
    run, s = state.run, float(sigma.reshape(-1)[0])
    need = uncond is not None and run.needs_uncond(s, x.shape[0], peak)
    d_c, d_u = calc([cond, uncond if need else None], x)[:2]
    d_u = d_u if need else None  # calc_cond_batch gives zeros, not None, for a None cond
    point = run.probe_point(x, s, d_c, d_u) if need else None
    d_probe = None if point is None else calc([uncond], point)[0]
    run.observe(x, s, d_c, d_u, d_probe)
    state.skipped = d_u is None
    return d_c, d_u


def report_once(state, model):
    """Once the auto centre's probes are done: the run's report to the log and its sigma_c to the node's plot."""
    if not state.logged and state.run.probe is not None and state.run.probe.finished:
        state.logged = True
        LOG.info(describe(state.run, model))
        if state.node is not None:
            send_to_page(SIGMA_C_EVENT, sigma_c_message(state, model))


def pulse_patch(model, schedule, probes, node=None):
    """model.clone() whose CFG weight follows `schedule` with peak = the sampler's cfg, chaining the calc-batch
    and cfg functions already installed; the cfg = 1 shortcut is turned off so the pulse can switch the
    negative on and off itself. `node`: the unique id of the node whose plot is told the detected sigma_c."""
    m = model.clone()
    prev_calc = m.model_options.get("sampler_calc_cond_batch_function")
    prev_cfg = m.model_options.get("sampler_cfg_function")
    key, space = f"samplerlab_pulse_{id(m)}", space_of(model)

    def calc_batch(args):
        mo, timestep = args["model_options"], args["sigma"]
        state = run_state(mo, key, lambda: PulseState(schedule, space, probes, node))

        def calc(conds, x):
            if prev_calc is not None:
                return prev_calc({**args, "conds": conds, "input": x})
            return comfy.samplers.calc_cond_batch(args["model"], conds, x, timestep, mo)

        cond, uncond = args["conds"][0], args["conds"][1]
        d_c, d_u = query(state, calc, args["input"], timestep, cond, uncond)
        report_once(state, model)
        return [d_c, d_c if d_u is None else d_u]

    def cfg(args):
        x, mo = args["input"], args["model_options"]
        state = run_state(mo, key, lambda: PulseState(schedule, space, probes, node))
        d_c, d_u = args["cond_denoised"], args["uncond_denoised"]
        if state.skipped:
            return x - d_c
        w = state.run.weights(float(args["sigma"].reshape(-1)[0]), x.shape[0], args["cond_scale"])
        if prev_cfg is None:
            return x - combine(d_c, d_u, w)
        scale = float(w[0]) if bool((w == w[0]).all()) else w.to(x).reshape(-1, *[1] * (x.ndim - 1))
        return prev_cfg({**args, "cond_scale": scale})

    m.set_model_sampler_calc_cond_batch_function(calc_batch)
    m.set_model_sampler_cfg_function(cfg, disable_cfg1_optimization=True)
    return m


class PulseGuider(comfy.samplers.CFGGuider):
    """CFGGuider whose weight follows a schedule with peak = its cfg; `last_run` holds the last run's GuidedRun;
    `node`: the unique id of the node whose plot is told the detected sigma_c."""

    def __init__(self, model_patcher, schedule, probes, node=None):
        super().__init__(model_patcher)
        self.schedule, self.probes, self.node, self.last_run = schedule, probes, node, None
        self.key = f"samplerlab_guider_{id(self)}"

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        state = run_state(model_options, self.key, lambda: PulseState(self.schedule, space_of(self.model_patcher), self.probes,
                                                                       self.node, self.cfg))
        self.last_run = state.run
        positive, negative = self.conds.get("positive"), self.conds.get("negative")

        def calc(conds, xx):
            return comfy.samplers.calc_cond_batch(self.inner_model, conds, xx, timestep, model_options)

        d_c, d_u = query(state, calc, x, timestep, positive, negative, self.cfg)
        report_once(state, self.model_patcher)
        if d_u is None:
            return d_c
        w = state.run.weights(float(timestep.reshape(-1)[0]), x.shape[0], self.cfg).to(x).reshape(-1, *[1] * (x.ndim - 1))
        return comfy.samplers.cfg_function(self.inner_model, d_c, d_u, w, x, timestep, model_options=model_options,
                                           cond=positive, uncond=negative)

    def inner_sample(self, *args, **kwargs):
        out = super().inner_sample(*args, **kwargs)
        if self.last_run is not None:
            LOG.info(describe(self.last_run, self.model_patcher))
        return out


def pulse_ui(model, schedule, peak=None):
    """The node's `ui` for web/samplerlab.js: the weight over the model's schedule (percent 0 -> 1), or only a
    caption when the centre is detected during sampling. peak None (the KSampler's cfg): drawn as base + 1."""
    ms = model.get_model_object("model_sampling")
    shown = curve(schedule, ms.percent_to_sigma, space_of(model), schedule.base + 1 if peak is None else peak)
    top = "cfg" if peak is None else f"{peak:g}"
    view = model_view(ms)
    if shown is None:
        return {"sl_pulse": [{"caption": f"centre auto: sigma_c is measured during sampling (peak {top})", "model": view}]}
    return {"sl_pulse": [{"percent": shown[0], "weight": shown[1], "model": view,
                          "caption": f"guidance {schedule.base:g} .. {top} over the schedule"}]}


def node_id(cls):
    """The running node's unique id (the page's node id; None when execute is called outside a prompt)."""
    return getattr(cls.hidden, "unique_id", None)


def _schedule_fields(kw):
    return {k: kw[k] for k in ("shape", "center", "center_percent", "width", "base", "start_percent", "end_percent")}


class GuidancePulse(io.ComfyNode):
    """MODEL patch: the KSampler's cfg becomes the peak of a pulse (or interval) over the noise level."""

    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SamplerLabGuidancePulse",
            display_name="Guidance pulse",
            category=CATEGORY,
            description="Classifier-free guidance only around the critical noise level, where large-scale structure "
                        "is decided. The KSampler's cfg is the peak weight; outside the pulse the weight is `base` "
                        "(1 = off, and the negative is not evaluated there). center = auto measures sigma_c of the "
                        "model at hand during sampling, logs it and marks it on the plot. Works with any sampler and on flow models.",
            search_aliases=["guidance interval", "cfg schedule", "critical time", "pulse"],
            inputs=[io.Model.Input("model", tooltip="The model to patch; use the patched one in any KSampler.")] + schedule_inputs(),
            outputs=[io.Model.Output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, probes=4, **kw) -> io.NodeOutput:
        schedule = build_schedule(model, 1.0, **_schedule_fields(kw))
        return io.NodeOutput(pulse_patch(model, schedule, probes, node_id(cls)), ui=pulse_ui(model, schedule))


class GuidancePulseGuider(io.ComfyNode):
    """GUIDER for SamplerCustomAdvanced with a pulse (or interval) of peak cfg."""

    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SamplerLabPulseGuider",
            display_name="Pulse guider",
            category=CATEGORY,
            description="A CFG guider whose weight is `cfg` inside a pulse around the critical noise level and "
                        "`base` outside (see Guidance pulse). For SamplerCustomAdvanced.",
            search_aliases=["guidance interval", "cfg schedule", "critical time"],
            inputs=[io.Model.Input("model", tooltip="The model the guider runs."),
                    io.Conditioning.Input("positive", tooltip="Prompt conditioning."),
                    io.Conditioning.Input("negative", tooltip="Negative (or empty) conditioning: the unconditional side of CFG."),
                    io.Float.Input("cfg", default=7.0, min=0.0, max=100.0, step=0.1, round=0.01,
                                   tooltip="Peak guidance weight inside the pulse.")] + schedule_inputs(),
            outputs=[io.Guider.Output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, positive, negative, cfg, probes=4, **kw) -> io.NodeOutput:
        schedule = build_schedule(model, cfg, **_schedule_fields(kw))
        guider = PulseGuider(model, schedule, probes, node_id(cls))
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        return io.NodeOutput(guider, ui=pulse_ui(model, schedule, cfg))


class CriticalLevel(io.ComfyNode):
    """Measures sigma_c of a model and conditioning before sampling; its percent output can centre a pulse."""

    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SamplerLabCriticalLevel",
            display_name="Critical level σc",
            category=CATEGORY,
            description="Measures the critical noise level sigma_c (top eigenvalue of the denoiser's Jacobian by "
                        "power iteration, 2 model calls per probe) from noise of this latent's shape and seed, over "
                        "the top of the model's schedule. Outputs sigma_c as a host level and as a percent of the "
                        "schedule (wire it into a pulse's center_percent), and as normalised time t_c = sigma/(1+sigma) "
                        "of the VE level (wire it into the critical_window schedule's t_c).",
            search_aliases=["critical time", "speciation", "sigma_c"],
            inputs=[io.Model.Input("model", tooltip="The model whose critical level is measured."),
                    io.Conditioning.Input("conditioning", tooltip="Usually the negative / empty prompt (the unconditional model)."),
                    io.Latent.Input("latent_image", tooltip="Its shape sets the probe noise (use the latent you will sample)."),
                    io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                                 tooltip="Seed of the probe noise (use the sampler's seed to measure that very run)."),
                    io.Int.Input("steps", default=20, min=2, max=1000, tooltip="Schedule whose first levels are probed."),
                    io.Int.Input("probes", default=4, min=1, max=16,
                                 tooltip="Probes per sample after the first (2 model calls each), walking down to where the estimate is self-consistent; the median is reported.")],
            outputs=[io.Float.Output("sigma_c"), io.Float.Output("percent"), io.Float.Output("t_c"), io.String.Output("report")],
        )

    @classmethod
    def execute(cls, model, conditioning, latent_image, seed, steps=20, probes=4) -> io.NodeOutput:
        ms, space = model.get_model_object("model_sampling"), space_of(model)
        sigmas = comfy.samplers.calculate_sigmas(ms, "karras", steps).cpu()
        found = {}

        def pilot(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
            found["probe"] = probe_sigma_c(model_k, x, sigmas, space, probes, extra_args=extra_args)
            return x

        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(conditioning, conditioning)
        guider.set_cfg(1.0)
        guider.sample(comfy.sample.prepare_noise(latent, seed), latent, comfy.samplers.KSAMPLER(pilot), sigmas,
                      disable_pbar=True, seed=seed)
        probe = found["probe"]
        reason = unmeasured_reason(probe)
        if reason is not None:
            raise ValueError(f"steps: with steps = {steps} {reason}; more steps put more levels above sigma_c")
        ve = probe.sigma_c[probe.measured]  # samples whose probes only bound sigma_c are left out (and counted)
        bounded = int((~probe.measured).sum())
        t_c = FLOW.from_ve(float(ve.median()))
        host = resolve(space).from_ve(float(ve.median()))
        percent = percent_at_sigma(host, ms.percent_to_sigma)
        report = (f"sigma_c = {host:.4g} (host level; VE {float(ve.median()):.4g}, samples {float(ve.min()):.4g}.."
                  f"{float(ve.max()):.4g}) at {100 * percent:.1f}% of the schedule, from {probes} probes"
                  + (f"; {bounded} of {len(probe.measured)} samples left out (their probes only bound sigma_c)" if bounded else ""))
        LOG.info("samplerlab critical level: %s", report)
        return io.NodeOutput(host, percent, t_c, report, ui={"text": (report,)})


NODES = [GuidancePulse, GuidancePulseGuider, CriticalLevel]
