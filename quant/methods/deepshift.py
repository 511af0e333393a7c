"""``deepshift``: DeepShift's PS variant (Elhoushi, Chen, Shafiq, Tian, Li, arXiv 1905.13298).

Each weight is ``W = S * 2**round(P)`` with a learned shift ``P`` and a learned sign ``S``
rounded to ``{-1, 0, +1}``; the gradients pass straight through the roundings:
``dL/dP = dL/dW * W * ln 2`` and ``dL/dS = dL/dW * 2**round(P)``.  There is no float weight
behind them: ``P`` and ``S`` are the parameters.

For the hardware the shifts of an output channel lie in ``[e0, e0 + levels - 1]``, ``e0`` fixed
per channel from the starting weights (the nearest power of two to the channel's largest
weight is the top of the window); ``P`` is kept inside that window.
"""

import math

import torch
from torch import nn

from core import arith

from ..quantizers import pow2_sum_codes, pow2_window
from .base import FoldedMethod, channel_view


class ShiftSignFn(torch.autograd.Function):
    """``S_r * 2**P_r`` with ``P_r = round(P)`` clamped to ``[e0, e0 + levels - 1]`` and
    ``S_r = round(S)`` in ``{-1, 0, 1}``; returns the integer value in units of ``2**e0`` and
    the weight.  Backward (DeepShift's): ``dP = g * W * ln 2``, ``dS = g * 2**P_r``."""

    @staticmethod
    def forward(ctx, shift, sign, e0, levels):
        e0 = channel_view(e0.to(shift.dtype), shift)
        k = (torch.round(shift) - e0).clamp_(0, levels - 1)
        value = torch.round(sign).clamp_(-1, 1) * torch.exp2(k)  # exact integers
        w = value * torch.exp2(e0)
        ctx.save_for_backward(w, torch.exp2(k + e0))
        ctx.mark_non_differentiable(value)
        return value, w

    @staticmethod
    def backward(ctx, _g_value, g):
        w, magnitude = ctx.saved_tensors
        return g * w * math.log(2.0), g * magnitude, None, None


class DeepShiftWeightQuant(nn.Module):
    """Weights as learned shifts and signs in the channel's shift window (DeepShift-PS).

    ``shift`` (``P``) and ``sign`` (``S``) are parameters shaped like the weight, ``e0`` a
    buffer per output channel; :meth:`allocate` sizes them and :meth:`init_from` sets them
    from float weights.  The layer's own ``weight`` is not used.
    """

    def __init__(self, *, wbits, per_channel=True):
        super().__init__()
        arith.check_bits(wbits=wbits)
        self.wbits, self.terms, self.per_channel = wbits, 1, per_channel
        self.levels = arith.shift_levels(wbits)
        self.shift = nn.Parameter(torch.zeros(0))
        self.sign = nn.Parameter(torch.zeros(0))
        self.register_buffer("e0", torch.zeros(0, dtype=torch.long))

    def allocate(self, weight):
        """Size the state for ``weight`` (called by ``Method.build``, before any state is loaded)."""
        self.shift = nn.Parameter(torch.zeros(weight.shape))
        self.sign = nn.Parameter(torch.zeros(weight.shape))
        self.e0 = torch.zeros(weight.shape[0], dtype=torch.long)

    @torch.no_grad()
    def init_from(self, w):
        """``e0`` from the largest magnitude per channel (per layer); ``P = log2|w|`` in the window;
        ``S = w / 2**e0`` clipped to [-1, 1], so weights below half a unit start at zero."""
        self.e0.copy_(pow2_window(w, self.wbits, self.per_channel).long())
        unit = channel_view(torch.exp2(self.e0.to(w.dtype)), w)
        self.shift.copy_(torch.log2(w.abs().clamp_min(2.0**-126)))
        self.sign.copy_((w / unit).clamp(-1, 1))
        self.project()

    @torch.no_grad()
    def project(self):
        """Keep ``P`` in the shift window and ``S`` in [-1, 1] (outside them the rounding saturates
        and a parameter would drift with nothing to show for it)."""
        e0 = channel_view(self.e0.to(self.shift.dtype), self.shift)
        self.shift.copy_(torch.clamp(self.shift, e0, e0 + self.levels - 1))
        self.sign.clamp_(-1, 1)

    def codes(self, w):
        with torch.no_grad():
            value, _ = ShiftSignFn.apply(self.shift, self.sign, self.e0, self.levels)
        return pow2_sum_codes(value, self.e0, self.levels, 1)

    def forward(self, w):
        _, weight = ShiftSignFn.apply(self.shift, self.sign, self.e0, self.levels)
        return weight, self.e0

    def extra_repr(self):
        return f"wbits={self.wbits}, per_channel={self.per_channel}"


class DeepShift(FoldedMethod):
    """DeepShift-PS: learned shifts and signs per weight, BatchNorm folded for good."""

    label = "deepshift"

    single_shift = True

    def weight_quant(self):
        return DeepShiftWeightQuant(wbits=self.cfg.wbits, per_channel=self.cfg.per_channel)

    def build(self, net):
        super().build(net)
        for m in net.weighted_layers():
            m.weight.requires_grad_(False)  # P and S are the weights now

    def init_layer(self, layer):
        layer.weight_quant.init_from(layer.weight)

    def after_step(self, net):
        for m in net.weighted_layers():
            m.weight_quant.project()

    @torch.no_grad()
    def finish(self, net):
        # the layer's weight becomes the deployed one, for anything that reads it (--init-from)
        for m in net.weighted_layers():
            m.weight.copy_(m.weight_quant(m.weight)[0])
