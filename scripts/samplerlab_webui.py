"""A1111 / Forge / reForge entry point: the WebUI runs every extension's scripts/*.py at start-up (and again on
"Reload UI"); this one adds samplerlab's samplers and schedules to the WebUI's lists (samplerlab.hosts.webui).

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
