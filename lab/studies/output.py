"""Where a study's results go: docs/studies/<name>/<name>.md and .json, with the command that made them."""
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "docs" / "studies"


def folder(name, out=None):
    """The study's output folder (created): `out` if given, else docs/studies/<name>."""
    path = Path(out) if out else ROOT / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def command(argv=None):
    """The command line that is running, as `python -m samplerlab ...` (what a reader reruns)."""
    argv = sys.argv[1:] if argv is None else argv
    return "python -m samplerlab " + " ".join(shlex.quote(a) for a in argv)


def write(path, name, record, table, seconds):
    """Write <path>/<name>.json (record + command + seconds) and <path>/<name>.md (table + provenance line)."""
    path = Path(path)
    cmd = command()
    (path / f"{name}.json").write_text(json.dumps({"command": cmd, "seconds": round(seconds, 1), **record},
                                                  indent=1, allow_nan=False) + "\n")
    (path / f"{name}.md").write_text(f"{table.rstrip()}\n\nMade by `{cmd}` in {seconds:.0f} s.\n")
    return path / f"{name}.md"
