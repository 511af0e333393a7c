"""Weight quantiser factories by method name (kept for callers that build a network by hand).

The methods themselves live in :mod:`quant.methods`.
"""

from .config import TrainConfig
from .methods import METHODS, method_class

__all__ = ["METHODS", "weight_quant_factory"]


def weight_quant_factory(method, *, wbits, terms, per_channel, **options):
    """A zero-argument callable making the weight quantiser of ``method`` (None for ``float``).

    ``options`` are further config keys the method reads (defaults otherwise).
    """
    cfg = TrainConfig(method=method, wbits=wbits, terms=terms, per_channel=per_channel, **options)
    m = method_class(method)(cfg)
    return m.weight_quant if m.quantized else None
