"""``distill``: quantised distillation and differentiable quantisation (Polino, Pascanu, Alistarh,
ICLR 2018, arXiv 1802.05668).

Quantised distillation: the quantised student learns from a float teacher's soft targets at
temperature ``T`` mixed with the labels; the forward uses the quantised weights and the
gradient updates the full-precision ones.  Differentiable quantisation (``--learn-points``):
the quantisation points themselves are parameters; a weight mapped to point ``p_j`` passes
its gradient, times its scale, to ``p_j``.  The hardware runs the points as greedy sums of
``terms`` powers of two, so that mapping is inside the forward pass.
"""

import torch
import torch.nn.functional as F
from torch import nn

from core import arith
from core.errors import UserError

from ..quantizers import Pow2WeightQuant, exact, pow2_sum_codes, pow2_window, ste
from .base import Method, channel_view


class PointsWeightQuant(nn.Module):
    """Weights mapped to the nearest of learned points' hardware values.

    Per output channel the unit ``2**e0`` follows the weights' range as in ``pow2``
    (INQ's rule); the points ``p_1 < ... < p_n`` (``n = 2**(wbits-1) - 1``, shared by the
    layer, in units of ``2**e0``, initialised to ``1, 2, 4, ...``) are parameters.  Each runs
    as its hardware form (greedy sum of ``terms`` shifts), and a weight takes the nearest of
    zero and those forms, so the assignment is the one the values give.  The gradient
    reaches the point straight through its hardware form (the sum, over the weights on it, of
    their upstream gradient times sign and unit); a point changes the network only when its
    hardware form does.
    """

    def __init__(self, *, wbits, terms, per_channel=True):
        super().__init__()
        arith.check_bits(wbits=wbits, terms=terms)
        self.wbits, self.terms, self.per_channel = wbits, terms, per_channel
        n = arith.shift_levels(wbits)
        self.points = nn.Parameter(torch.exp2(torch.arange(n, dtype=torch.float32)))

    def _units(self, w):
        e0 = pow2_window(w, self.wbits, self.per_channel)
        return w / channel_view(torch.exp2(e0), w), e0

    def _hardware(self):
        """Each point's hardware form: the greedy sum of ``terms`` powers of two in the window."""
        n = arith.shift_levels(self.wbits)
        return pow2_sum_codes(self.points.detach(), None, n, self.terms, values_only=True).value

    def _assign(self, units):
        """Index into ``[0, points...]`` of the candidate whose hardware value is nearest ``|units|``
        (ties to the smaller value; a point sharing its value with a smaller one gets no weight)."""
        table = torch.cat([self.points.new_zeros(1), self._hardware()])
        return (units.detach().abs().unsqueeze(-1) - table).abs().argmin(dim=-1)

    def _table(self):
        return torch.cat([self.points.new_zeros(1), ste(self.points, self._hardware())])

    def codes(self, w):
        units, e0 = self._units(w.detach())
        values = torch.sign(units) * self._table().detach()[self._assign(units)]
        return pow2_sum_codes(values, e0, arith.shift_levels(self.wbits), self.terms)

    def forward(self, w):
        units, e0 = self._units(w)
        q = torch.sign(units.detach()) * self._table()[self._assign(units)]
        # the point's value is the forward; the full-precision weight gets a straight-through gradient
        return exact(q, units) * channel_view(torch.exp2(e0), w), e0.long()

    def extra_repr(self):
        return f"wbits={self.wbits}, terms={self.terms}, per_channel={self.per_channel}"


class Distill(Method):
    """A quantised student trained on a float teacher's soft targets (and the labels)."""

    label = "distill"
    needs_teacher = True

    @classmethod
    def check(cls, cfg):
        super().check(cfg)
        if not cfg.temperature > 0:
            raise UserError(f"--temperature must be positive, not {cfg.temperature}")
        if not 0 <= cfg.distill_weight <= 1:
            raise UserError(f"--distill-weight must be between 0 and 1, not {cfg.distill_weight}")

    def weight_quant(self):
        c = self.cfg
        if c.learn_points:
            return PointsWeightQuant(wbits=c.wbits, terms=c.terms, per_channel=c.per_channel)
        return Pow2WeightQuant(wbits=c.wbits, terms=c.terms, per_channel=c.per_channel)

    def loss(self, logits, yb, xb):
        """``(1 - a) * CE(labels) + a * T**2 * KL(teacher_T || student_T)`` (Hinton et al.'s ``T**2``
        keeps the soft-target gradient's scale independent of ``T``)."""
        a, t = self.cfg.distill_weight, self.cfg.temperature
        hard = F.cross_entropy(logits, yb)
        if a == 0:
            return hard
        with torch.no_grad():
            soft_targets = F.softmax(self.teacher(xb) / t, dim=1)
        soft = F.kl_div(F.log_softmax(logits.float() / t, dim=1), soft_targets, reduction="batchmean")
        return (1 - a) * hard + a * t * t * soft

    def describe(self):
        return super().describe() + (" learned points" if self.cfg.learn_points else "")
