"""V3 inputs for registry parameters, and the text of generated descriptions."""
import math
import re

from comfy_api.latest import io

UNBOUNDED = 1e12


def param_input(name, p):
    """The V3 widget for a `Param`: Combo for choices, Boolean, Int or Float with its range and tooltip."""
    if p.choices is not None:
        return io.Combo.Input(name, options=list(p.choices), default=p.default, tooltip=p.tooltip)
    if isinstance(p.default, bool):
        return io.Boolean.Input(name, default=p.default, tooltip=p.tooltip)
    if not math.isfinite(p.default):
        raise ValueError(f"parameter {name}: a widget default must be finite, got {p.default}")
    bounds = {k: v for k, v in (("min", p.min), ("max", p.max)) if v is not None and math.isfinite(v)}
    tooltip = p.tooltip
    if "max" not in bounds:  # the front end caps a widget without max at 2048
        bounds["max"] = UNBOUNDED
        if re.search(r"\binf\b", tooltip):
            tooltip += f" (the widget's largest value, {UNBOUNDED:g}, stands for inf)"
    if isinstance(p.default, int):
        return io.Int.Input(name, default=p.default, step=int(p.step or 1), tooltip=tooltip, **bounds)
    return io.Float.Input(name, default=p.default, step=p.step or 0.01, round=False, tooltip=tooltip, **bounds)


def first_paragraph(doc):
    """A docstring's first paragraph on one line (a description that does not stop mid-sentence)."""
    head = (doc or "").strip().split("\n\n")[0]
    return " ".join(line.strip() for line in head.splitlines())


def schema(**fields):
    """io.Schema(**fields), leaving out fields this ComfyUI's Schema does not have yet (search_aliases
    arrived after 0.8.0), so one pack serves old and new hosts."""
    known = getattr(io.Schema, "__dataclass_fields__", fields)
    return io.Schema(**{k: v for k, v in fields.items() if k in known})
