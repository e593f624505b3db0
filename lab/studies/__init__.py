"""The lab's studies: clients of the engine (problems, runner, bench) that answer one question each.

`python -m samplerlab study <name>`: every module here that defines `add_study(subparsers)` adds one
<name> (found by listing this package, so a new study is one new module). A study writes its figures,
a markdown table and a JSON record (`output.write`) under docs/studies/<name>/ by default, and takes
`--quick` for the small form the tests run.
"""
import importlib
import pkgutil


def modules():
    """The study modules, by module name (imported on first listing)."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "add_study"):
            found[info.name] = module
    return found


def add_parser(sub):
    study = sub.add_parser("study", help="one claim of the pack tested: `study <name> [--quick]`; `study -h` lists them")
    names = study.add_subparsers(dest="study", required=True, metavar="<name>")
    for module in modules().values():
        module.add_study(names)
