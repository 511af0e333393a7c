"""Run directories: building a run's network from its config, atomic checkpoints, and the
export of a trained network as the hardware artifact."""

import json
import pathlib

import torch

from core import __version__
from core.artifact import Artifact, save_artifact
from core.errors import UserError
from core.fileio import write_atomic

from .config import TrainConfig
from .layers import QuantNet, quantize_model
from .lower import golden_vectors, lower
from .methods import get_method

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
LOG = "log.jsonl"
SUMMARY = "summary.json"
ARTIFACT = "artifact.npz"


def build_network(cfg, image_shape, num_classes=10, *, float_model=None, method=None):
    """The network ``cfg`` trains: a float ``nn.Sequential`` or a :class:`QuantNet` (quantising
    ``float_model``, a trained float network, when given) with ``method``'s quantisers
    (default: the config's method, :mod:`quant.methods`)."""
    model = float_model if float_model is not None else cfg.build_model(image_shape, num_classes)
    if not cfg.quantized:
        return model
    return quantize_model(model, method=method or get_method(cfg))


def save_checkpoint(path, *, model, optimizer, scheduler, epoch, cfg, image_shape, num_classes=10, extra=None):
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer else None,
        "scheduler": scheduler.state_dict() if scheduler else None,
        "epoch": epoch,  # epochs completed
        "config": cfg.to_dict(),
        "image_shape": list(image_shape),
        "num_classes": num_classes,
        "rng": torch.get_rng_state(),
        "extra": extra or {},
    }
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def checkpoint_path(path):
    """A run directory or a checkpoint file -> the checkpoint file."""
    p = pathlib.Path(path)
    return p / CHECKPOINT if p.is_dir() else p


def load_checkpoint(path):
    """Read a checkpoint (from a run directory or file) with a one-line error if it is unusable."""
    p = checkpoint_path(path)
    if not p.is_file():
        raise UserError(f"no checkpoint at {p}; pass a run directory written by `python -m quant.train --out DIR`")
    try:
        state = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged file
        raise UserError(f"checkpoint {p} is unreadable ({type(exc).__name__}); it is corrupt or not a checkpoint") from None
    if not isinstance(state, dict) or not {"model", "config", "epoch", "image_shape"} <= set(state):
        raise UserError(f"checkpoint {p} lacks model/config/epoch; it was not written by quant.train")
    state["config"] = TrainConfig.from_dict(state["config"], str(p)).validate()
    return state


def load_network(path, *, method=None):
    """Rebuild a run's network from its checkpoint; returns ``(network, state)``."""
    state = load_checkpoint(path)
    net = build_network(state["config"], state["image_shape"], state.get("num_classes", 10), method=method)
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"checkpoint {checkpoint_path(path)} does not fit its config's network: {first}") from None
    return net, state


def is_quant(net):
    return isinstance(net, QuantNet)


def _read_json(path):
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None


def summary(folder):
    """The run's ``summary.json``, or ``None`` when it has none (an unfinished run)."""
    return _read_json(pathlib.Path(folder) / SUMMARY)


def finished(cfg):
    """The summary of the run in ``cfg.out`` if it is a finished run of exactly ``cfg``
    (its ``config.json`` equal to ``cfg.to_dict()``), else ``None``: what a sweep reuses."""
    saved, mine = _read_json(pathlib.Path(cfg.out) / CONFIG), cfg.to_dict()
    if isinstance(saved, dict) and mine["arch"] is None:
        saved = {**saved, "arch": None}  # the run recorded the spec its --model resolved to
    same = saved == mine
    return summary(cfg.out) if same else None


def export_network(qnet, cfg, dataset, path, *, golden, meta=None):
    """Lower ``qnet``, take golden vectors from the first ``golden`` test images, save to ``path``.

    Returns ``(network, taps)`` for further checks.
    """
    if not is_quant(qnet):
        raise UserError(f"method {cfg.method!r} is not quantised; the hardware runs quantised models only "
                        f"(train with --method pow2 --init-from this run)")
    qnet.eval()
    network, taps = lower(qnet, dataset.image_shape, dataset.num_classes)
    n = min(golden, dataset.test_x.shape[0])
    gold = golden_vectors(qnet, taps, network, dataset.test_x[:n], dataset.test_y[:n].numpy())
    info = {"generator": f"shiftnn {__version__}", "config": cfg.to_dict(), "dataset": dataset.describe()}
    info.update(meta or {})
    save_artifact(path, Artifact(network=network, golden=gold, meta=info))
    return network, taps
