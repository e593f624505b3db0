"""One SAMPLER node per registered sampler and one SIGMAS node per registered scheduler, generated.

Node ids (`SamplerLab<Name>`, `SamplerLabSchedule<Name>`) are a compatibility promise: saved workflows
name them.
"""
import comfy.samplers
from comfy_api.latest import io

from ..samplers import REGISTRY as SAMPLERS
from ..schedulers import REGISTRY as SCHEDULERS
from .host import host_sampler, host_schedule
from .views import schedule_ui
from .widgets import first_paragraph, param_input, schema

CATEGORY = "sampling/samplerlab"


def camel(name):
    return "".join(part.capitalize() for part in name.split("_"))


def sampler_node(spec):
    """A V3 node with the sampler's parameters as widgets, returning a KSAMPLER."""

    class Node(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            text = first_paragraph(spec.fn.__doc__) or spec.summary
            calls = "adaptive steps" if spec.nfe_per_step is None else \
                f"{spec.nfe_per_step} model call{'s' if spec.nfe_per_step > 1 else ''} per step"
            facts = [f for f, said in ((f"order {spec.order}", f"order {spec.order}"), (calls, "per step"))
                     if said not in text.lower()] + [f"also in KSampler as sl_{spec.name}"]
            note = ", ".join(facts)
            return schema(
                node_id=f"SamplerLab{camel(spec.name)}",
                display_name=f"Sampler {spec.name}",
                category=f"{CATEGORY}/samplers",
                description=f"{text}\n\n{note[0].upper()}{note[1:]}.",
                search_aliases=[spec.name, f"sl_{spec.name}"],
                inputs=[param_input(k, p) for k, p in spec.params.items()],
                outputs=[io.Sampler.Output()],
            )

        @classmethod
        def execute(cls, **options) -> io.NodeOutput:
            return io.NodeOutput(comfy.samplers.KSAMPLER(host_sampler(spec, **options)))

    Node.__name__ = Node.__qualname__ = f"SamplerLab{camel(spec.name)}"
    return Node


def scheduler_node(spec):
    """A V3 node like BasicScheduler for one schedule: the model's own sigma range, steps, denoise."""

    class Node(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return schema(
                node_id=f"SamplerLabSchedule{camel(spec.name)}",
                display_name=f"Schedule {spec.name}",
                category=f"{CATEGORY}/schedulers",
                description=f"{first_paragraph(spec.fn.__doc__) or spec.summary}\n\nAlso in KSampler as sl_{spec.name}.",
                search_aliases=[spec.name, f"sl_{spec.name}"],
                inputs=[io.Model.Input("model", tooltip="The sigma range is read from this model (flow models: t in [0, 1])."),
                        io.Int.Input("steps", default=20, min=1, max=10000,
                                     tooltip="Sampling steps: the schedule has steps + 1 levels, the last one 0."),
                        io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01,
                                       tooltip="Below 1: the tail of a longer schedule, as BasicScheduler.")]
                + [param_input(k, p) for k, p in spec.params.items()],
                outputs=[io.Sigmas.Output()],
            )

        @classmethod
        def execute(cls, model, steps, denoise, **options) -> io.NodeOutput:
            ms = model.get_model_object("model_sampling")
            sigmas = host_schedule(spec, ms, steps, denoise, **options)
            return io.NodeOutput(sigmas, ui=schedule_ui(sigmas, ms))

    Node.__name__ = Node.__qualname__ = f"SamplerLabSchedule{camel(spec.name)}"
    return Node


NODES = [sampler_node(s) for _, s in sorted(SAMPLERS.items())] + [scheduler_node(s) for _, s in sorted(SCHEDULERS.items())]
