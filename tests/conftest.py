"""Shared pytest fixtures."""

import os
import pathlib

import pytest

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
