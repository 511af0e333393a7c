"""``dbs``: differentiable bit-shifting quantisation (Badar, arXiv 2510.16088).

The quantiser is blended with the identity, ``f_eps(x) = eps * x + (1 - eps) * Q(x)``, and
the backward pass divides by ``eps``, so the gradient is 1 while the forward moves from the
float network (``eps = 1``) to the hard quantiser (``eps -> 0``) over the epochs.  Weights are
standardised per output channel and quantised to signed powers of two; activations use the
uniform variant.  Evaluation and export always use the hard quantiser.
"""

import torch
from torch import nn

from core import arith

from ..layers import QuantReLU
from ..quantizers import ActQuantFn, WeightCodes, pow2_sum_codes, ste
from .base import Method, channel_view

#: eps per epoch in the source's 15-epoch schedule (ResNet-18 from a pretrained network)
SOURCE_SCHEDULE = (1, 1 / 2, 1 / 2, 1 / 2, 1 / 4, 1 / 4, 1 / 4, 1 / 8, 1 / 8, 1 / 8, 1 / 16, 1 / 16,
                   1 / 32, 1 / 64, 1 / 128)


def eps_schedule(epochs):
    """The source schedule resampled to ``epochs`` epochs: epoch ``e`` takes entry ``floor(15 e / epochs)``."""
    n = len(SOURCE_SCHEDULE)
    return [SOURCE_SCHEDULE[(e * n) // epochs] for e in range(epochs)]


class _Blend(torch.autograd.Function):
    """``eps * x + (1 - eps) * q``; backward: the blend's derivative ``eps`` divided by ``eps`` (so 1)."""

    @staticmethod
    def forward(ctx, x, q, eps):
        return torch.lerp(q, x, eps)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def shift_level(x, levels):
    """DBS's shift quantiser in the hardware's code: ``sign(x) * 2**ceil(log2|x|)`` with magnitudes
    ``1, 1/2, ..., 2**-(levels-1)``, clamped at 1; below ``2**-levels`` (where DBS would use its
    next level down, which the code spends on zero) the result is 0.

    Returns the exponent ``j`` (magnitude ``2**-j``) and the zero mask.
    """
    a = x.abs()
    # ceil(log2 a) exactly: frexp gives a = m 2**e, m in [0.5, 1); a power of two has m = 0.5
    m, e = torch.frexp(a)
    ceil_log2 = torch.where(m == 0.5, e - 1, e).to(x.dtype)
    j = (-ceil_log2).clamp(0, levels - 1)
    return j, a <= 2.0**-levels


class DBSWeightQuant(nn.Module):
    """Standardised per-channel power-of-two weights, blended with the identity during training.

    ``w_q = Q_eps((w - mu_c) / (3 sigma_c)) * 2**round(log2(3 sigma_c))``: the source scales by
    ``3 sigma_c``; the shift-only requantiser needs a power of two, so the scale is rounded in
    the log domain (it becomes the channel's unit ``2**e0`` with ``e0 = round(log2 3 sigma_c) - (levels - 1)``).
    """

    def __init__(self, *, wbits, per_channel=True):
        super().__init__()
        arith.check_bits(wbits=wbits)
        self.wbits, self.terms, self.per_channel = wbits, 1, per_channel
        self.register_buffer("eps", torch.zeros(()))

    @property
    def levels(self):
        return arith.shift_levels(self.wbits)

    def _standardised(self, w):
        flat = w.detach().flatten(1) if self.per_channel else w.detach().reshape(1, -1)
        mu = flat.mean(dim=1)
        sigma = flat.std(dim=1, unbiased=False).clamp_min(torch.finfo(w.dtype).tiny)
        if not self.per_channel:
            mu, sigma = mu.expand(w.shape[0]), sigma.expand(w.shape[0])
        top = torch.round(torch.log2(3 * sigma))  # exponent of the magnitude-1 level
        x = (w - channel_view(mu, w)) / channel_view(3 * sigma, w)
        return x, top - (self.levels - 1)

    def codes(self, w):
        x, e0 = self._standardised(w)
        j, zero = shift_level(x.detach(), self.levels)
        units = torch.sign(x.detach()).masked_fill_(zero, 0.0) * torch.exp2(self.levels - 1 - j)
        c = pow2_sum_codes(units, e0, self.levels, 1)
        return WeightCodes(sign=c.sign, shift=c.shift, zero=c.zero, e0=e0.long(), value=c.value)

    def forward(self, w):
        x, e0 = self._standardised(w)
        j, zero = shift_level(x.detach(), self.levels)
        q = torch.sign(x.detach()).masked_fill_(zero, 0.0) * torch.exp2(-j)
        eps = float(self.eps) if self.training else 0.0
        blended = _Blend.apply(x, q, eps) if eps > 0 else ste(x, q)
        return blended * channel_view(torch.exp2(e0 + self.levels - 1), w), e0.long()

    def extra_repr(self):
        return f"wbits={self.wbits}, per_channel={self.per_channel}, eps={float(self.eps):g}"


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
    """Differentiable bit-shifting: eps-annealed power-of-two weights and uniform activations."""

    label = "dbs"
    single_shift = True

    def weight_quant(self):
        return DBSWeightQuant(wbits=self.cfg.wbits, per_channel=self.cfg.per_channel)

    def act_quant(self, bits):
        return DBSActQuant(bits=bits)

    def _set_eps(self, net, eps):
        for m in net.modules():
            if isinstance(m, (DBSWeightQuant, DBSActQuant)):
                m.eps.fill_(eps)

    def epoch_start(self, net, epoch, trainer):
        self._set_eps(net, eps_schedule(self.cfg.epochs)[epoch])

    def finish(self, net):
        self._set_eps(net, 0.0)

