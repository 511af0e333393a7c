"""Shared pytest fixtures: the MNIST directory and one tiny float run plus a pow2 run from it."""

import contextlib
import os
import pathlib
from dataclasses import dataclass

import pytest
import torch

from quant.train import main as train_main

REPO = pathlib.Path(__file__).resolve().parent.parent


def find_mnist_dir():
    """The MNIST IDX directory for tests: ``$MNIST_DIR``, else the team's shared mnist-10k if present."""
    env = os.environ.get("MNIST_DIR")
    if env:
        return pathlib.Path(env)
    shared = REPO.parent / "shared" / "data" / "mnist-10k"
    return shared if shared.is_dir() else None


@pytest.fixture(scope="session")
def mnist_dir():
    path = find_mnist_dir()
    if path is None:
        pytest.skip("no MNIST IDX directory (set MNIST_DIR)")
    return path

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
