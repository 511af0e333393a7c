"""Fixtures shared by the artifact and command-line tests: one tiny float run and a pow2 run from it."""

import contextlib
import pathlib
from dataclasses import dataclass

import pytest
import torch

from quant.train import main as train_main

FLOAT_EPOCHS = 3
POW2_EPOCHS = 2
GOLDEN = 8


@contextlib.contextmanager
def one_thread():
    """Train on one intra-op thread: on a shared 2-core machine torch's thread pool can be
    ~100x slower for these tiny batches while another process is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class TrainedRuns:
    float: pathlib.Path  # --method float, FLOAT_EPOCHS epochs
    pow2: pathlib.Path  # --method pow2 --init-from float, POW2_EPOCHS epochs, --golden GOLDEN

    @property
    def artifact(self):
        return self.pow2 / "artifact.npz"


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory):
    """Train once per session (digits, a few epochs); tests must not modify these directories."""
    base = tmp_path_factory.mktemp("trained")
    runs = TrainedRuns(float=base / "float", pow2=base / "pow2")
    with one_thread():
        train_main(["--data", "digits", "--model", "cnn", "--method", "float", "--epochs", str(FLOAT_EPOCHS),
                    "--seed", "0", "--out", str(runs.float), "--no-progress"])
        train_main(["--data", "digits", "--method", "pow2", "--wbits", "4", "--abits", "4",
                    "--epochs", str(POW2_EPOCHS), "--init-from", str(runs.float), "--golden", str(GOLDEN),
                    "--out", str(runs.pow2), "--no-progress"])
    return runs
