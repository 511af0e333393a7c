"""``dbs``: differentiable bit-shifting quantisation (Badar, arXiv 2510.16088; code zia-badar/DBSSQ).

The quantiser is blended with the identity, ``f_eps(x) = eps * x + (1 - eps) * Q(x)``, and
the backward pass divides by ``eps``, so the gradient is 1 while the forward moves from the
float network (``eps = 1``) to the hard quantiser (``eps -> 0``).  Weights are scaled per
output channel by ``3 sigma`` and quantised to the source's shift code: ``2**s`` magnitudes
``1, 1/2, ..., 2**-(2**s - 1)``, no zero, rounded up in the log domain.  Activations use the
uniform variant.  Evaluation and export always use the hard quantiser.

On the hardware a ``wbits``-bit weight code has ``2**(wbits-1) - 1`` shifts and a zero, so
``--wbits`` runs the largest source code whose magnitudes fit that window:
``s = floor(log2(2**(wbits-1) - 1))``, i.e. 1, 2, 4, 8 magnitudes at 2, 3, 4, 5 bits (the
zero code is never used).
"""

import math

import torch
from torch import nn

from core import arith

from ..layers import QuantReLU
from ..quantizers import ActQuantFn, WeightCodes, pow2_sum_codes, ste
from .base import Method, channel_view

#: eps per epoch in the source's 15-epoch schedule (ResNet-18 from a pretrained network)
SOURCE_SCHEDULE = (1, 1 / 2, 1 / 2, 1 / 2, 1 / 4, 1 / 4, 1 / 4, 1 / 8, 1 / 8, 1 / 8, 1 / 16, 1 / 16,
                   1 / 32, 1 / 64, 1 / 128)
#: the epochs of the source's schedule: with as many, each entry is one epoch
SOURCE_EPOCHS = len(SOURCE_SCHEDULE)


def eps_at(step, total):
    """eps at optimiser step ``step`` of ``total``: the source's 15 entries, each for an equal share
    of the run (one epoch each in a 15-epoch run), so every run passes through all of them."""
    return SOURCE_SCHEDULE[min(SOURCE_EPOCHS - 1, (step * SOURCE_EPOCHS) // max(1, total))]


def source_magnitudes(wbits):
    """How many magnitudes of the source's shift code fit a ``wbits``-bit hardware code:
    ``2**s`` with ``2**s <= 2**(wbits-1) - 1`` (one code is zero, which DBS does not use)."""
    return 2 ** int(math.log2(arith.shift_levels(wbits)))


class _Blend(torch.autograd.Function):
    """``eps * x + (1 - eps) * q``; backward: the blend's derivative ``eps`` divided by ``eps`` (so 1)."""

    @staticmethod
    def forward(ctx, x, q, eps):
        return torch.lerp(q, x, eps)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def blend(x, q, eps):
    """``f_eps``: the blend with the unit gradient (``q`` itself, straight-through, at ``eps = 0``)."""
    return _Blend.apply(x, q, eps) if eps > 0 else ste(x, q)


def shift_level(x, magnitudes):
    """The source's shift quantiser: ``|x|`` rounded up to a power of two in the log domain,
    clamped to ``1 ... 2**-(magnitudes-1)``; no zero (``x <= 0`` is negative, as in the source).

    Returns the exponent ``j`` (magnitude ``2**-j``) and the sign (+1 or -1).
    """
    a = x.abs()
    # ceil(log2 a) exactly: frexp gives a = m 2**e, m in [0.5, 1); a power of two has m = 0.5
    m, e = torch.frexp(a)
    ceil_log2 = torch.where(m == 0.5, e - 1, e).to(x.dtype)
    j = torch.where(a > 0, -ceil_log2, float(magnitudes - 1)).clamp(0, magnitudes - 1)  # 0: the smallest
    sign = torch.where(x > 0, 1.0, -1.0).to(x.dtype)
    return j, sign


class DBSWeightQuant(nn.Module):
    """Per-channel ``3 sigma``-scaled shift-code weights, blended with the identity during training.

    ``w_q = Q_eps(w / (3 sigma_c)) * 2**round(log2(3 sigma_c))``: the source scales by
    ``3 sigma_c``; the shift-only requantiser needs a power of two, so the scale is rounded in
    the log domain and becomes the top magnitude of the channel's window.  The channel mean is
    not removed (see docs/methods.md: BatchNorm is folded into the weight before it is
    quantised, so no trainable BatchNorm after the layer could absorb it).
    """

    def __init__(self, *, wbits, per_channel=True):
        super().__init__()
        arith.check_bits(wbits=wbits)
        self.wbits, self.terms, self.per_channel = wbits, 1, per_channel
        self.register_buffer("eps", torch.zeros(()))
        # the schedule's position (kept here so that a checkpoint holds it): optimiser steps done
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps_per_epoch", torch.zeros((), dtype=torch.long))

    @property
    def magnitudes(self):
        return source_magnitudes(self.wbits)

    def _scaled(self, w):
        flat = w.detach().flatten(1) if self.per_channel else w.detach().reshape(1, -1)
        sigma = flat.std(dim=1).clamp_min(torch.finfo(w.dtype).tiny)  # the source's torch.std (unbiased)
        if not self.per_channel:
            sigma = sigma.expand(w.shape[0])
        top = torch.round(torch.log2(3 * sigma))  # exponent of the magnitude-1 level
        return w / channel_view(3 * sigma, w), top

    def codes(self, w):
        x, top = self._scaled(w)
        n = self.magnitudes
        j, sign = shift_level(x.detach(), n)
        units = sign * torch.exp2(n - 1 - j)  # in units of 2**e0, e0 = top - (n - 1)
        e0 = top - (n - 1)
        c = pow2_sum_codes(units, e0, arith.shift_levels(self.wbits), 1)
        return WeightCodes(sign=c.sign, shift=c.shift, zero=c.zero, e0=e0.long(), value=c.value)

    def forward(self, w):
        x, top = self._scaled(w)
        n = self.magnitudes
        j, sign = shift_level(x.detach(), n)
        q = sign * torch.exp2(-j)
        eps = float(self.eps) if self.training else 0.0
        return blend(x, q, eps) * channel_view(torch.exp2(top), w), (top - (n - 1)).long()

    def extra_repr(self):
        return f"wbits={self.wbits}, magnitudes={self.magnitudes}, per_channel={self.per_channel}, " \
               f"eps={float(self.eps):g}"


class DBSActQuant(QuantReLU):
    """The uniform activation quantiser blended with ReLU's output: ``eps * relu(x) + (1 - eps) * Q(x)``.

    The backward pass is the blend's divided by ``eps``: 1 where ``x > 0``.  The exponent is
    calibrated as for every method (:class:`quant.quantizers.ActQuant`); eval is the hard quantiser.
    """

    def __init__(self, *, bits):
        super().__init__(bits=bits)
        self.register_buffer("eps", torch.zeros(()))

    def forward(self, x):
        eps = float(self.eps)
        if not self.training or eps == 0:
            return super().forward(x)
        self.train_step(x)
        q = ActQuantFn.apply(x, 2.0 ** int(self.exp), self.qmax).to(torch.float32)
        return _Blend.apply(torch.relu(x).to(torch.float32), q.detach(), eps)


class DBS(Method):
    """Differentiable bit-shifting: eps-annealed shift-code weights and uniform activations.

    eps follows the source's 15 entries over the run's optimiser steps (:func:`eps_at`); the
    step count and the steps per epoch are buffers of the weight quantisers, so a resumed run
    continues the schedule.
    """

    label = "dbs"
    single_shift = True

    def weight_quant(self):
        return DBSWeightQuant(wbits=self.cfg.wbits, per_channel=self.cfg.per_channel)

    def act_quant(self, bits):
        return DBSActQuant(bits=bits)

    def setup(self, net, dataset, source):
        spe = -(-dataset.train_x.shape[0] // self.cfg.batch_size)
        for m in net.weighted_layers():
            m.weight_quant.step.zero_()
            m.weight_quant.steps_per_epoch.fill_(spe)
        super().setup(net, dataset, source)

    def _state(self, net):
        return net.weighted_layers()[0].weight_quant

    def _set_eps(self, net, eps):
        for m in net.modules():
            if isinstance(m, (DBSWeightQuant, DBSActQuant)):
                m.eps.fill_(eps)

    def _schedule(self, net):
        state = self._state(net)
        self._set_eps(net, eps_at(int(state.step), self.cfg.epochs * int(state.steps_per_epoch)))

    def epoch_start(self, net, epoch, trainer):
        self._schedule(net)

    @torch.no_grad()
    def after_step(self, net):
        for m in net.weighted_layers():
            m.weight_quant.step += 1
        self._schedule(net)

    def finish(self, net):
        self._set_eps(net, 0.0)

    def describe(self):
        c = self.cfg
        return f"{self.label} W{c.wbits}/A{c.abits} ({source_magnitudes(c.wbits)} shift magnitudes, no zero)"
