"""Named quantisation recipes: which weight quantiser each ``--method`` builds.

A recipe maps the typed training config to a factory of weight quantisers; the
activation quantiser is the same unsigned power-of-two one for every recipe here.
"""

import functools

from .errors import UserError
from .quantizers import Pow2WeightQuant, UniformWeightQuant

#: ``float`` trains the network unquantised (a starting point for ``--init-from``).
METHODS = ("float", "pow2", "uniform")


def weight_quant_factory(method, *, wbits, terms, per_channel):
    """A zero-argument callable making the weight quantiser of ``method`` (None for ``float``)."""
    if method == "float":
        return None
    if method == "pow2":
        return functools.partial(Pow2WeightQuant, wbits=wbits, terms=terms, per_channel=per_channel)
    if method == "uniform":
        return functools.partial(UniformWeightQuant, wbits=wbits, per_channel=per_channel)
    raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
