"""samplerlab: physics-born samplers for ComfyUI, and a lab that measures them.

Inside ComfyUI, `comfy_entrypoint` returns the pack's nodes and registers its samplers and schedulers
in the KSampler lists (prefixed `sl_`; set SAMPLERLAB_NO_REGISTER=1 to skip that). Imported anywhere
else it registers nothing.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import extension

    return await extension()
