"""The ComfyUI adapter layer: the only code in the pack that imports comfy.

Each module listed in NODE_MODULES exposes `NODES`, a list of V3 node classes.
"""
from comfy_api.latest import ComfyExtension

from . import calibrated, compare, generated, guidance, poisson, reference, schedules
from .registration import register_lists

NODE_MODULES = (generated, compare, guidance, poisson, schedules, calibrated, reference)


class SamplerlabExtension(ComfyExtension):
    async def get_node_list(self):
        return [node for module in NODE_MODULES for node in module.NODES]


async def extension():
    register_lists()
    return SamplerlabExtension()
