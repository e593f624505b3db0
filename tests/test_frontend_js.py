"""The front end's pure drawing and maths (web/lib/) under node's own test runner (web/tests/*.test.mjs)."""
import shutil
import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[1] / "web"


@pytest.mark.skipif(shutil.which("node") is None, reason="node (>= 18) is not installed: the JavaScript unit tests need it")
def test_javascript_units_pass_under_node_test():
    files = sorted(str(p) for p in (WEB / "tests").glob("*.test.mjs"))
    assert files
    run = subprocess.run(["node", "--test", *files], capture_output=True, text=True, timeout=120, cwd=WEB)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout
