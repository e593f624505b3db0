"""No matplotlib on ComfyUI's run-time path (issue 11, defect 14): ComfyUI does not ship it, so no module the
nodes import, at any depth and inside any function, may import it; PlotSigmas draws with PIL."""
import ast
import sys
from pathlib import Path

import numpy as np

PACK = Path(__file__).resolve().parents[1]


def imports(path):
    """(absolute module names, package modules) imported anywhere in the file, functions included."""
    here = path.relative_to(PACK).with_suffix("").parts
    package = here[:-1] if here[-1] != "__init__" else here[:-1]
    outside, inside = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            outside |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                outside.add(node.module)
                continue
            base = package[:len(package) - node.level + 1]
            target = (*base, *(node.module.split(".") if node.module else ()))
            inside.add(target)
            inside |= {(*target, a.name) for a in node.names}
    return outside, inside


def file_of(parts):
    for candidate in (PACK.joinpath(*parts).with_suffix(".py"), PACK.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def run_time_closure():
    """Every pack file reachable from the entry point and nodes/ through imports, with what it imports from outside the pack."""
    todo, seen = [PACK / "__init__.py", file_of(("nodes",))], {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen[path], inside = imports(path)
        todo += [f for f in map(file_of, inside) if f is not None]
        for parts in inside:  # a package's __init__ runs before its modules
            for k in range(1, len(parts)):
                init = PACK.joinpath(*parts[:k], "__init__.py")
                if init.is_file():
                    todo.append(init)
    return seen


def test_no_matplotlib_anywhere_on_the_nodes_import_path():
    closure = run_time_closure()
    assert PACK / "nodes" / "schedules.py" in closure and PACK / "lab" / "compare.py" in closure
    bad = sorted(str(p.relative_to(PACK)) for p, mods in closure.items() if any(m.split(".")[0] == "matplotlib" for m in mods))
    assert bad == []


def test_sigma_chart_draws_without_matplotlib(monkeypatch):
    """The chart PlotSigmas draws (lab.charts, PIL), matplotlib made unimportable; readable at the smallest size."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from samplerlab.lab import charts
    from samplerlab.schedulers import REGISTRY

    pos = REGISTRY["karras"].fn(20, 0.0292, 14.6)[:-1].tolist()
    for size in ((128, 96), (512, 320)):
        img = charts.line_chart([("sigma", list(range(20)), pos)], "20 steps", "step", "sigma", ylog=True, size=size,
                                legend=False, integer_x=True)
        px = np.asarray(img, dtype=np.float64)
        assert img.size == size and bool((px.sum(-1) < 600).any())  # something coloured is drawn
    assert charts._ticks(-0.5, 19.5, False, integer=True) == [0, 5, 10, 15]
    assert all(float(t).is_integer() for t in charts._ticks(-0.1, 2.1, False, integer=True))
