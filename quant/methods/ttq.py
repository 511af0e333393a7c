"""``ttq``: Trained Ternary Quantization (Zhu, Han, Mao, Dally, ICLR 2017, arXiv 1612.01064).

Each weight is ternary, ``+Wp`` above the threshold ``delta = t * max|w|``, ``-Wn`` below
``-delta``, zero between, with ``Wp`` and ``Wn`` learned.  The paper's gradients: each scale
gets the sum of the upstream gradients over its set, and the latent weight gets the upstream
gradient times ``Wp``, 1 or ``Wn`` by zone.

On the hardware a channel's two scales share its unit ``2**e0``: inside the forward pass they
are mapped to sums of ``terms`` powers of two within the ``wbits`` shift window (the larger
scale sets the window), with a straight-through gradient to the learned scales.  More weight
bits give the ratio ``Wp / Wn`` more room; at 2 bits the window is one shift and ``Wp = Wn``.
"""

import torch
from torch import nn

from core import arith
from core.errors import UserError

from ..quantizers import WeightCodes, channel_absmax, pow2_sum_codes, pow2_top_exponent, ste
from .base import FoldedMethod, channel_view


class TernaryFn(torch.autograd.Function):
    """TTQ's ternary weight with the paper's gradients.

    Forward: ``wp`` where ``w > delta``, ``-wn`` where ``w < -delta``, else 0 (``wp``, ``wn``,
    ``delta`` per output channel).  Backward: ``dL/dwp = sum of g over w > delta``,
    ``dL/dwn = -sum of g over w < -delta`` (the chain rule through ``-wn``), and the latent
    weight gets ``g * zone_scale`` with ``zone_scale`` = ``grad_scale_p``, 1 or ``grad_scale_n``.
    """

    @staticmethod
    def forward(ctx, w, wp, wn, delta, grad_scale_p, grad_scale_n):
        pos = w > channel_view(delta, w)
        neg = w < -channel_view(delta, w)
        ctx.save_for_backward(pos, neg, grad_scale_p, grad_scale_n)
        zero = torch.zeros((), dtype=w.dtype)
        return torch.where(pos, channel_view(wp, w), torch.where(neg, -channel_view(wn, w), zero))

    @staticmethod
    def backward(ctx, g):
        pos, neg, sp, sn = ctx.saved_tensors
        one = torch.ones((), dtype=g.dtype)
        g_w = g * torch.where(pos, channel_view(sp, g), torch.where(neg, channel_view(sn, g), one))
        g_wp = (g * pos).flatten(1).sum(dim=1)
        g_wn = -(g * neg).flatten(1).sum(dim=1)
        return g_w, g_wp, g_wn, None, None, None


def scale_codes(scale, e0, levels, terms):
    """A positive scale per channel as a sum of ``terms`` powers of two in units of ``2**e0``.

    A ternary scale of zero would silence its whole sign, so the scale is at least one unit.
    """
    units = (scale.detach() * torch.exp2(-e0.to(scale.dtype))).clamp_min(1.0)
    return pow2_sum_codes(units, e0, levels, terms)


def _ternary_codes(pos, neg, p, n):
    """Per-weight code stacks: ``p``'s codes where ``pos``, ``n``'s negated where ``neg``, else zero."""
    def pick(a, b, fill):
        a, b = a[(...,) + (None,) * (pos.dim() - 1)], b[(...,) + (None,) * (pos.dim() - 1)]
        return torch.where(pos, a, torch.where(neg, b, fill))

    sign = pick(p.sign, 1 - n.sign, torch.zeros((), dtype=torch.long))
    shift = pick(p.shift, n.shift, torch.zeros((), dtype=torch.long))
    zero = pick(p.zero, n.zero, torch.ones((), dtype=torch.bool))
    sign = sign.masked_fill(zero, 0)
    value = torch.where(pos, channel_view(p.value, pos), torch.where(neg, -channel_view(n.value, neg), 0.0))
    return sign, shift, zero, value


class TTQWeightQuant(nn.Module):
    """Ternary weights ``{-Wn, 0, +Wp}`` with learned scales mapped to the channel's shift window.

    ``wp`` and ``wn`` (parameters, per output channel or one per layer) are sized by
    :meth:`allocate` and initialised by :meth:`init_scales`.
    """

    def __init__(self, *, wbits, terms=1, per_channel=True, threshold=0.05):
        super().__init__()
        arith.check_bits(wbits=wbits, terms=terms)
        self.wbits, self.terms, self.per_channel, self.threshold = wbits, terms, per_channel, threshold
        self.wp = nn.Parameter(torch.ones(0))
        self.wn = nn.Parameter(torch.ones(0))

    def allocate(self, weight):
        """Size the scales for ``weight`` (called by ``Method.build``, before any state is loaded)."""
        n = weight.shape[0] if self.per_channel else 1
        self.wp = nn.Parameter(torch.ones(n))
        self.wn = nn.Parameter(torch.ones(n))

    def delta(self, w):
        """The threshold ``t * max|w|`` per output channel (per layer with ``per_channel`` false)."""
        return self.threshold * channel_absmax(w, self.per_channel)

    @torch.no_grad()
    def init_scales(self, w):
        """``Wp``, ``Wn``: the mean magnitude of the weights in each set (the least-squares scale
        for that ternary assignment); the mean of all magnitudes where a set is empty."""
        d = channel_view(self.delta(w), w)
        groups = w.shape[0] if self.per_channel else 1
        a, pos, neg = (t.reshape(groups, -1) for t in (w.abs(), w > d, w < -d))
        fallback = a.mean(dim=1)
        for param, zone in ((self.wp, pos), (self.wn, neg)):
            count = zone.sum(dim=1)
            mean = (a * zone).sum(dim=1) / count.clamp_min(1)
            param.copy_(torch.where(count > 0, mean, fallback))

    def unit_exponent(self, c):
        """Per channel ``e0``: the larger scale is the top of the shift window."""
        top = torch.maximum(self.wp, self.wn).detach().clamp_min(2.0**-126).expand(c)
        return pow2_top_exponent(top) - (arith.shift_levels(self.wbits) - 1)

    def hardware_scales(self, c):
        """``(Wp, Wn, e0)`` as the hardware holds them, straight-through to the learned scales."""
        e0 = self.unit_exponent(c)
        levels = arith.shift_levels(self.wbits)
        unit = torch.exp2(e0)
        wp, wn = self.wp.expand(c), self.wn.expand(c)
        p = scale_codes(wp, e0, levels, self.terms).value * unit
        n = scale_codes(wn, e0, levels, self.terms).value * unit
        return ste(wp, p), ste(wn, n), e0

    def codes(self, w):
        c = w.shape[0]
        e0 = self.unit_exponent(c)
        levels = arith.shift_levels(self.wbits)
        d = channel_view(self.delta(w), w)
        p = scale_codes(self.wp.expand(c), e0, levels, self.terms)
        n = scale_codes(self.wn.expand(c), e0, levels, self.terms)
        sign, shift, zero, value = _ternary_codes(w.detach() > d, w.detach() < -d, p, n)
        return WeightCodes(sign=sign, shift=shift, zero=zero, e0=e0.long(), value=value)

    def forward(self, w):
        c = w.shape[0]
        wp, wn, e0 = self.hardware_scales(c)
        # the latent weight's zone factors are the learned scales (the paper's Wp, Wn)
        sp, sn = self.wp.detach().expand(c), self.wn.detach().expand(c)
        return TernaryFn.apply(w, wp, wn, self.delta(w), sp, sn), e0.long()

    def extra_repr(self):
        return (f"wbits={self.wbits}, terms={self.terms}, per_channel={self.per_channel}, "
                f"threshold={self.threshold}")


#: The scales' learning rate as a fraction of ``--lr``.  Adam moves a scale by about the
#: learning rate each step, a large fraction of a scale of ~0.01-0.1; each time a scale crosses
#: a rounding boundary of its power-of-two form, its whole sign of the channel doubles or
#: halves.  Digits CNN, 8 epochs: W3/A4 75.00 % at 1, 91.94 % at 0.1, 91.11 % at 0.01.
SCALE_LR_SCALE = 0.1


class TTQ(FoldedMethod):
    """Trained ternary quantisation with per-channel learned scales on the shift hardware."""

    label = "ttq"

    @classmethod
    def check(cls, cfg):
        super().check(cfg)
        if not 0 < cfg.ttq_threshold < 1:
            raise UserError(f"--ttq-threshold {cfg.ttq_threshold} must be a fraction of max|w| in (0, 1), e.g. 0.05")

    def weight_quant(self):
        c = self.cfg
        return TTQWeightQuant(wbits=c.wbits, terms=c.terms, per_channel=c.per_channel, threshold=c.ttq_threshold)

    def param_groups(self, net):
        scales = [p for m in net.weighted_layers() for p in (m.weight_quant.wp, m.weight_quant.wn)]
        ids = {id(p) for p in scales}
        rest = [p for p in net.parameters() if p.requires_grad and id(p) not in ids]
        return [{"params": scales, "lr_scale": SCALE_LR_SCALE}, {"params": rest}]

    def init_layer(self, layer):
        # the learned scales are the deployed magnitudes: BatchNorm's factor goes into them once
        layer.weight_quant.init_scales(layer.weight)

    def describe(self):
        return super().describe() + f" t={self.cfg.ttq_threshold:g}"
