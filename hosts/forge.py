"""Guidance pulses in Forge, through its UNet patcher's patchable CFG function (model_options
"sampler_cfg_function", set by `set_model_sampler_cfg_function`) and a "sampler_pre_cfg_function" that drops
the negative prompt where the weight is 1. The logic is samplers/guidance.py: w(sigma) = base + (peak - base)
p(sigma) with peak = the UI's CFG scale, D = D_u + w (D_c - D_u); the pulse applies to every sampler.

Only fixed schedules: a pulse centred at a percent of the model's schedule (the host's own percent_to_sigma),
or the guidance interval between two percents. The "auto" centre of the ComfyUI nodes (JVP probes of the
unconditional denoiser at extra points) needs an extra unconditional call at a point of its own choosing,
which Forge's CFG hooks do not offer. A1111 has no patchable CFG function (its CFG denoiser combines the
predictions itself), so the pulse UI is shown in Forge only.
"""
from ..samplers.guidance import combine, schedule_at_percents, weight
from ..samplers.space import resolve
from .webui import space_of

SHAPES = ("gaussian", "cosine", "box", "interval")


def pulse_schedule(unet, shape, center_percent, width, base, start_percent, end_percent):
    """A Pulse (peak from the CFG scale at run time) or an Interval in VE levels, from percents of the schedule
    of Forge's UNet patcher `unet` (its predictor's percent_to_sigma)."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {list(SHAPES)}, got {shape!r}")
    return schedule_at_percents(unet.model.predictor.percent_to_sigma, space_of(unet.model), 1.0, shape,
                                center_percent, width, base, start_percent, end_percent)


def pulse_patch(unet, schedule):
    """unet.clone() whose CFG weight follows `schedule` (its peak replaced by the CFG scale of the run), chaining
    the CFG function already installed; the cfg = 1 shortcut is off so the pulse decides where D_u is needed."""
    patched = unet.clone()
    previous = patched.model_options.get("sampler_cfg_function")
    space = resolve(space_of(patched.model))

    def level(sigma):
        return space.to_ve(float(sigma.reshape(-1)[0]))

    def unguided(sigma):
        """w = 1 whatever the CFG scale: base 1 and the profile 0 here (D_u is then not evaluated)."""
        return schedule.base == 1 and not bool((schedule.profile(level(sigma), None) > 0).any())

    def pre_cfg(model, cond, uncond, x, timestep, model_options):
        return model, cond, None if unguided(timestep) else uncond, x, timestep, model_options

    def cfg(args):
        x, sigma = args["input"], args["sigma"]
        if unguided(sigma):
            return args["cond"]
        w = weight(schedule, level(sigma), peak=args["cond_scale"]).reshape(-1)[:1]
        if previous is not None:
            return previous({**args, "cond_scale": float(w)})
        return x - combine(args["cond_denoised"], args["uncond_denoised"], w.expand(x.shape[0]))

    patched.set_model_sampler_cfg_function(cfg, disable_cfg1_optimization=True)
    patched.model_options["sampler_pre_cfg_function"] = list(patched.model_options.get("sampler_pre_cfg_function", [])) + [pre_cfg]
    return patched


def apply(p, enabled, shape, center_percent, width, base, start_percent, end_percent):
    """The Forge script hook (process_before_every_sampling): patch p.sd_model's UNet and note it in the infotext."""
    if not enabled:
        return None
    forge = p.sd_model.forge_objects
    schedule = pulse_schedule(forge.unet, shape, center_percent, width, base, start_percent, end_percent)
    forge.unet = pulse_patch(forge.unet, schedule)
    p.extra_generation_params["samplerlab pulse"] = (
        f"{shape} {start_percent:g}-{end_percent:g}, base {base:g}" if shape == "interval"
        else f"{shape} at {center_percent:g}, width {width:g}, base {base:g}")
    return schedule
