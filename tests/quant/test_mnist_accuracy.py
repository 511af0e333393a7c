"""The foundation's accuracy bar on real MNIST (slow: about a minute on 2 cores)."""

import json

import pytest

from quant import train

pytestmark = [pytest.mark.slow, pytest.mark.mnist]


def test_pow2_w4a4_cnn_reaches_96_5_and_reference_reproduces_it(mnist_dir, tmp_path):
    common = ["--data", "mnist", "--data-dir", str(mnist_dir), "--model", "cnn", "--no-progress"]
    train.main(common + ["--method", "float", "--epochs", "8", "--out", str(tmp_path / "float")])
    train.main(common + ["--method", "pow2", "--wbits", "4", "--abits", "4", "--epochs", "8",
                         "--init-from", str(tmp_path / "float"), "--out", str(tmp_path / "pow2")])
    s = json.loads((tmp_path / "pow2" / "summary.json").read_text())
    assert s["test_images"] == 2000
    assert s["quantized_accuracy"] >= 0.965
    assert s["reference_accuracy"] == s["quantized_accuracy"]
    assert (s["logit_mismatches"], s["prediction_mismatches"]) == (0, 0)
