"""A real ComfyUI server with this pack, and Debian's chromium driven by Playwright, for the browser tests.

Needs COMFYUI_PATH (a ComfyUI checkout), the `playwright` package (`pip install playwright`; its own browser
download is never used) and a chromium binary (`apt-get install chromium`; SAMPLERLAB_CHROMIUM to name another).
The server runs with the Python in COMFYUI_PYTHON (default: this one) on the CPU, in a temporary base directory
whose custom_nodes/samplerlab links to this checkout, so nothing is written into the ComfyUI checkout.

`python tests/browser_host.py thumbnails` rewrites example_workflows/<name>.jpg, the Templates thumbnails, from
screenshots of each workflow as the front end draws it.
"""
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
CHROMIUM = os.environ.get("SAMPLERLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
PACK_URL = "/extensions/samplerlab/"
VIEWPORT = {"width": 1500, "height": 1000}


def missing():
    """Why the browser tests cannot run here, or None."""
    if not COMFYUI_PATH:
        return "set COMFYUI_PATH to a ComfyUI checkout to run the browser tests"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "pip install playwright (the Python package only: chromium comes from the system) to run the browser tests"
    if not CHROMIUM:
        return "apt-get install chromium (or set SAMPLERLAB_CHROMIUM) to run the browser tests"
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def comfyui_server(timeout=240):
    """ComfyUI on the CPU with this pack installed; yields its base URL. The log is in <base>/server.log."""
    base = Path(tempfile.mkdtemp(prefix="samplerlab-browser-"))
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "samplerlab").symlink_to(PACK_DIR)
    port = free_port()
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    log = open(base / "server.log", "w")
    proc = subprocess.Popen([python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
                             "--database-url", "sqlite:///:memory:", "--disable-auto-launch"],
                            cwd=COMFYUI_PATH, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {proc.returncode}: {(base / 'server.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url + "/object_info", timeout=5).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"ComfyUI did not answer in {timeout} s: {(base / 'server.log').read_text()[-3000:]}")
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


class Page:
    """A chromium page on the ComfyUI front end, recording console messages and page errors."""

    def __init__(self, page, url):
        self.page, self.url, self.console = page, url, []
        page.on("console", lambda m: self.console.append((m.type, m.text, (m.location or {}).get("url", ""))))
        page.on("pageerror", lambda e: self.console.append(("pageerror", f"{e}\n{getattr(e, 'stack', '')}", "")))

    def open(self):
        self.page.goto(self.url)
        self.page.wait_for_function("window.app && window.app.graph && window.app.extensionManager && window.app.canvas", timeout=120_000)
        self.page.evaluate("""async () => { const s = window.app.extensionManager.setting;
            await s.set('Comfy.TutorialCompleted', true);
            await s.set('Comfy.Minimap.Visible', false); await s.set('Comfy.Graph.CanvasInfo', false);
            await s.set('Comfy.Graph.CanvasMenu', false); }""")
        with contextlib.suppress(Exception):  # the Templates dialog a new user is greeted with
            self.page.wait_for_selector(".p-dialog-mask", timeout=5000)
        for _ in range(10):
            if not self.page.locator(".p-dialog-mask").count():
                break
            self.page.evaluate("() => [...document.querySelectorAll('.p-dialog-mask button.absolute')].pop()?.click()")
            self.page.wait_for_timeout(300)
        return self

    def pack_errors(self):
        """Console errors and page errors that come from this pack's scripts."""
        return [m for m in self.console if m[0] in ("error", "pageerror") and ("samplerlab" in m[1] or PACK_URL in m[2])]

    def load(self, workflow):
        self.page.evaluate("async (wf) => { await window.app.loadGraphData(wf, true, true, 'samplerlab-test'); }", workflow)
        self.page.wait_for_timeout(300)

    def js(self, script, arg=None):
        return self.page.evaluate(script, arg)

    def wait(self, condition, arg=None, timeout=30_000):
        self.page.wait_for_function(condition, arg=arg, timeout=timeout)

    def show(self, node_ids=None, margin=20):
        """Zoom and pan so the nodes (all when None) fill the canvas; their rectangle in page pixels."""
        rect = self.js("""([ids, margin]) => { const c = window.app.canvas;
            const ns = window.app.graph._nodes.filter(n => ids === null || ids.includes(n.id));
            const x0 = Math.min(...ns.map(n => n.pos[0])) - margin, y0 = Math.min(...ns.map(n => n.pos[1] - 30)) - margin;
            const x1 = Math.max(...ns.map(n => n.pos[0] + n.size[0])) + margin, y1 = Math.max(...ns.map(n => n.pos[1] + n.size[1])) + margin;
            const W = c.canvas.clientWidth, H = c.canvas.clientHeight, s = Math.min(1, W / (x1 - x0), (H - 60) / (y1 - y0));
            c.ds.scale = s; c.ds.offset = [(W / s - (x1 - x0)) / 2 - x0, (H / s - (y1 - y0)) / 2 - y0];
            c.setDirty(true, true); c.draw(true, true);
            const r = c.canvas.getBoundingClientRect();
            return {x: r.x + (x0 + c.ds.offset[0]) * s, y: r.y + (y0 + c.ds.offset[1]) * s, width: (x1 - x0) * s, height: (y1 - y0) * s}; }""",
                       [node_ids, margin])
        self.page.wait_for_timeout(400)
        return rect

    def screenshot(self, node_ids=None, margin=20):
        """A PIL image of the nodes as drawn."""
        from PIL import Image

        rect = self.show(node_ids, margin)
        return Image.open(io.BytesIO(self.page.screenshot(clip=rect))).convert("RGB")


@contextlib.contextmanager
def browser(url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu", "--font-render-hinting=none"])
        try:
            yield Page(b.new_page(viewport=VIEWPORT, device_scale_factor=1), url).open()
        finally:
            b.close()


def thumbnails(names=None, width=720):
    """Write example_workflows/<name>.jpg from screenshots of each workflow (or those in `names`), `width` pixels wide."""
    paths = [p for p in sorted((PACK_DIR / "example_workflows").glob("*.json"))
             if not names or p.stem in names]
    with comfyui_server() as url, browser(url) as page:
        page.js("() => window.app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
        for path in paths:
            page.load(json.loads(path.read_text()))
            page.page.wait_for_timeout(1500)  # the live plots' route answers
            shot = page.screenshot()
            shot = shot.resize((width, round(shot.height * width / shot.width)))
            shot.save(path.with_suffix(".jpg"), quality=82, optimize=True)
            print(path.with_suffix(".jpg").name, shot.size)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "thumbnails":
        why = missing()
        if why:
            sys.exit(why)
        thumbnails(sys.argv[2:] or None)
    else:
        sys.exit(__doc__)
