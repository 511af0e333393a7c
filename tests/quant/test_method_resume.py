"""An interrupted run of any method, resumed, ends exactly where the uninterrupted run ends:
every schedule (eps, INQ's partition, learning-rate restarts) and random stream is restored."""

import numpy as np
import pytest

from core.artifact import load_artifact
from quant import runs
from quant.methods import METHODS, method_class
from quant.train import main as train_main

from tests.conftest import one_thread

TRAINED = [m for m in METHODS if m != "float" and method_class(m).trains]


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("method", TRAINED)
def test_resume_is_the_uninterrupted_run(method, trained_runs, tmp_path, monkeypatch):
    wbits = (method_class(method).wbits_only or (3,))[0]
    args = ["--data", "digits", "--method", method, "--wbits", str(wbits), "--abits", "4", "--epochs", "3",
            "--init-from", str(trained_runs.float), "--golden", "2", "--no-progress"]
    with one_thread():
        train_main(args + ["--out", str(tmp_path / "straight")])
        save = runs.save_checkpoint

        def save_then_stop(path, **kw):
            save(path, **kw)
            if kw["epoch"] == 2:
                raise Interrupt

        monkeypatch.setattr(runs, "save_checkpoint", save_then_stop)
        with pytest.raises(Interrupt):
            train_main(args + ["--out", str(tmp_path / "resumed")])
        monkeypatch.undo()
        train_main(["--resume", str(tmp_path / "resumed"), "--no-progress"])
    a = load_artifact(tmp_path / "straight" / runs.ARTIFACT).network.layers
    b = load_artifact(tmp_path / "resumed" / runs.ARTIFACT).network.layers
    for la, lb in zip(a, b):
        assert la.arrays.keys() == lb.arrays.keys()
        for k in la.arrays:
            np.testing.assert_array_equal(la.arrays[k], lb.arrays[k], err_msg=f"{method} {la.name} {k}")
