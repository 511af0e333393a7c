"""Every ``--method`` trains from the same float run, exports, and its artifact computes exactly
what its PyTorch model computes (the integer contract, checked three ways by quant.verify)."""

import json

import numpy as np
import pytest

from core import arith
from core.artifact import load_artifact
from core.reference import run as reference_run
from quant import runs
from quant.methods import METHODS, method_class
from quant.train import main as train_main

from tests.conftest import REPO, one_thread

QUANT_METHODS = [m for m in METHODS if m != "float"]


def wbits_for(method):
    only = method_class(method).wbits_only
    return only[0] if only else 3


@pytest.mark.parametrize("method", QUANT_METHODS)
def test_method_exports_bit_exact(method, trained_runs, tmp_path):
    out = tmp_path / method
    wbits = wbits_for(method)
    with one_thread():
        train_main(["--data", "digits", "--method", method, "--wbits", str(wbits), "--abits", "4",
                    "--epochs", "2", "--init-from", str(trained_runs.float), "--golden", "4",
                    "--out", str(out), "--no-progress"])
    s = json.loads((out / runs.SUMMARY).read_text())
    assert s["method"] == method
    assert s["logit_mismatches"] == 0 and s["prediction_mismatches"] == 0
    # the number that counts: the integer model's accuracy is the PyTorch quantised accuracy
    assert s["reference_accuracy"] == s["quantized_accuracy"]
    assert s["reference_accuracy"] > 0.5  # it learned digits (chance is 0.1)
    art = load_artifact(out / runs.ARTIFACT)
    for layer in art.network.layers:
        if not layer.weighted:
            continue
        levels = arith.shift_levels(layer.wbits)
        a = layer.arrays
        assert a["weight_shift"].min() >= 0 and a["weight_shift"].max() < levels
        assert set(np.unique(a["weight_sign"])) <= {0, 1}
    # the golden vectors are the integer reference's outputs, layer by layer
    outs = reference_run(art.network, art.golden.inputs)
    for got, want in zip(outs, art.golden.outputs):
        np.testing.assert_array_equal(got, want)


def test_every_method_is_documented():
    doc = (REPO / "docs" / "methods.md").read_text()
    for method in METHODS:
        assert f"`{method}`" in doc, f"docs/methods.md does not describe --method {method}"
