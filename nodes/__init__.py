"""The ComfyUI adapter layer: the only code in the pack that imports comfy.

Each module listed in NODE_MODULES exposes `NODES`, a list of V3 node classes.
"""
from comfy_api.latest import ComfyExtension

from . import calibrated, compare, generated, guidance, poisson, reference, schedules
from .host import prompt_server
from .registration import register_lists

NODE_MODULES = (generated, compare, guidance, poisson, schedules, calibrated, reference)


class SamplerlabExtension(ComfyExtension):
    async def get_node_list(self):
        return [node for module in NODE_MODULES for node in module.NODES]


def register_routes():
    """The pack's plot route on ComfyUI's running server; nothing where there is none (tests, scripts)."""
    instance = prompt_server()
    if instance is None:
        return None
    from . import routes

    return routes.register(instance.routes)


async def extension():
    register_lists()
    register_routes()
    return SamplerlabExtension()
