"""``bench/methods.py --quick``: the comparison table's whole code path on a tiny budget."""

import os
import subprocess
import sys

from tests.conftest import REPO

from quant.methods import METHODS


def test_quick_comparison_runs_every_method(tmp_path):
    doc = tmp_path / "results.md"
    cmd = [sys.executable, str(REPO / "bench" / "methods.py"), "--quick", "--out", str(tmp_path / "runs"),
           "--doc", str(doc)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = doc.read_text()
    for method in METHODS:
        if method != "float":
            assert f"| digits | `{method}` | 2 | 4 |" in text, method
    assert "logits or predictions differing between PyTorch and the integer model: 0." in text
    # one table per hardware cost (terms per weight); TTQ marked ternary; the terms column in every run
    assert "A4, 1 term per weight:" in text and "| `ttq` (ternary) |" in text
    assert "| data | method | W | A | terms | seed | epochs |" in text
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second invocation reuses every run
    again = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert again.returncode == 0 and "0 to train" in again.stderr
