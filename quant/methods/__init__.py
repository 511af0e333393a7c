"""Quantisation methods: one :class:`quant.methods.base.Method` per ``--method``.

A method says which weight and activation quantisers the network gets, how it is set up
from its starting point, and how the training loop treats it (loss, schedule, what happens
around each optimiser step).  Every method ends in the same integer arithmetic
(:mod:`core.arith`), so the export and the integer reference are shared by all of them.

The registry maps each name to ``module:Class``; modules import lazily, so the config can
list the names without importing PyTorch layers.
"""

import importlib

from core.errors import UserError

#: name -> "module:Class" (modules under quant.methods)
REGISTRY = {
    "float": "base:Float",
    "pow2": "base:Pow2",
    "uniform": "base:Uniform",
    "dbs": "dbs:DBS",
    "direct": "direct:Direct",
    "inq": "inq:INQ",
    "ttq": "ttq:TTQ",
    "stochastic": "stochastic:Stochastic",
    "distill": "distill:Distill",
    "ptq": "ptq:PTQ",
    "lsq": "lsq:LSQ",
    "apot": "apot:APoT",
    "deepshift": "deepshift:DeepShift",
}

METHODS = tuple(REGISTRY)


def method_class(name):
    """The :class:`~quant.methods.base.Method` subclass called ``name``."""
    if name not in REGISTRY:
        raise UserError(f"unknown method {name!r}; choose --method from {', '.join(METHODS)}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def get_method(cfg):
    """The method object for a :class:`quant.config.TrainConfig`."""
    return method_class(cfg.method)(cfg)
