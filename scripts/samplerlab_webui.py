"""A1111 / Forge / reForge entry point: the WebUI runs every extension's scripts/*.py at start-up (and again on
"Reload UI"); this one adds samplerlab's samplers and schedules to the WebUI's lists (samplerlab.hosts.webui)
and, in Forge, a "samplerlab guidance pulse" panel (samplerlab.hosts.forge; the UI only, the logic is there).

The extension folder is whatever the WebUI cloned it as (samplerlab, samplerlab-main, ...), so the package
is loaded from this file's parent folder under the name `samplerlab`, unless a samplerlab is already imported.
"""
import importlib.util
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_package(name="samplerlab", root=ROOT):
    """The samplerlab package: the one already imported, else the one in `root` (the extension folder)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, root / "__init__.py", submodule_search_locations=[str(root)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    try:
        spec.loader.exec_module(package)
    except BaseException:
        del sys.modules[name]
        raise
    return package


load_package()
from samplerlab.hosts import webui  # noqa: E402  (importable only once load_package has run)

logging.getLogger("samplerlab").info("samplerlab: %d WebUI entries", len(webui.register()))


def forge_script_class():
    """The Forge pulse panel (a scripts.Script shown in txt2img and img2img), or None outside Forge."""
    if importlib.util.find_spec("backend") is None or importlib.util.find_spec("backend.sampling.sampling_function") is None:
        return None
    import gradio as gr
    from modules import scripts

    from samplerlab.hosts import forge

    class SamplerlabPulse(scripts.Script):
        def title(self):
            return "samplerlab guidance pulse"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):
            with gr.Accordion(open=False, label=self.title()):
                enabled = gr.Checkbox(label="Enabled", value=False)
                shape = gr.Radio(label="Shape", choices=list(forge.SHAPES), value="gaussian")
                center = gr.Slider(label="Centre (fraction of the schedule)", minimum=0.01, maximum=0.99, step=0.01, value=0.5)
                width = gr.Slider(label="Width (nats of sigma)", minimum=0.05, maximum=5.0, step=0.05, value=0.5)
                base = gr.Slider(label="Weight outside the pulse (1 = no negative there)", minimum=0.0, maximum=20.0, step=0.1, value=1.0)
                start = gr.Slider(label="Interval start (fraction)", minimum=0.0, maximum=1.0, step=0.01, value=0.2)
                end = gr.Slider(label="Interval end (fraction)", minimum=0.0, maximum=1.0, step=0.01, value=0.6)
            return [enabled, shape, center, width, base, start, end]

        def process_before_every_sampling(self, p, *args, **kwargs):
            forge.apply(p, *args)

    return SamplerlabPulse


Pulse = forge_script_class()
