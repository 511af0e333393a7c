"""``inq``: Incremental Network Quantization (Zhou, Yao, Guo, Xu, Chen, ICLR 2017, arXiv 1702.03044).

Weights become powers of two or zero a portion at a time: at each step of a schedule of
accumulated portions (e.g. 50, 75, 87.5, 100 %), the largest-magnitude weights not yet
quantised are rounded to INQ's level set and frozen, and the rest are retrained in float with
the learning rate restarted.  After the last epoch every weight is quantised.

INQ's level set for ``b`` bits spends one bit on zero: ``2**(b-2)`` powers of two per sign,
``{±2**n2, ..., ±2**n1, 0}`` with ``n1 = floor(log2(4 max|W| / 3))`` and
``n2 = n1 + 1 - 2**(b-2)``.  In units of ``2**e0`` with ``e0 = n2`` the shifts are
``0 .. 2**(b-2) - 1``, inside the hardware's window of ``2**(b-1) - 1`` shifts.
"""

import torch
from torch import nn

from core import arith
from core.errors import UserError

from ..quantizers import channel_absmax, pow2_sum_codes, pow2_top_exponent
from .base import FoldedMethod, channel_view

#: accumulated portions (percent) per weight bits: the paper's ternary, 4-bit and 5-bit
#: schedules; 3 bits (the paper gives none) uses the 4-bit one, see docs/methods.md
SCHEDULES = {
    2: (20, 40, 60, 70, 80, 85, 90, 95, 97.5, 100),
    3: (30, 50, 80, 90, 95, 100),
    4: (30, 50, 80, 90, 95, 100),
    5: (50, 75, 87.5, 100),
}


def inq_levels(wbits):
    """Powers of two per sign in INQ's ``wbits``-bit level set: ``2**(wbits-1) / 2``."""
    arith.check_bits(wbits=wbits)
    return 2 ** (wbits - 2)


def parse_schedule(text, wbits):
    """Accumulated portions in percent from ``--inq-schedule``: ``auto`` or a comma list.

    Returns a tuple of strictly increasing floats in ``(0, 100]``.  A list that stops short of
    100 is fine: :meth:`INQ.finish` quantises the rest.
    """
    if text.strip() == "auto":
        return tuple(float(p) for p in SCHEDULES[wbits])
    try:
        portions = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise UserError(f"--inq-schedule {text!r} is not a comma list of percentages; "
                        f"give e.g. 50,75,87.5,100 or auto") from None
    if not all(0 < p <= 100 for p in portions) or any(a >= b for a, b in zip(portions, portions[1:])):
        raise UserError(f"--inq-schedule {text!r} must be strictly increasing percentages in (0, 100], "
                        f"e.g. 50,75,87.5,100")
    return portions


def training_steps(portions):
    """The portions that are retrained after: all but a final 100 (nothing is left to train then)."""
    steps = tuple(p for p in portions if p < 100)
    return steps or (100.0,)


def epoch_plan(epochs, steps):
    """The schedule step of each epoch when ``epochs`` epochs are split evenly over ``steps`` steps.

    Epoch ``e`` runs step ``ceil((e + 1) * steps / epochs) - 1``: every step gets at least one
    epoch when there are enough; with fewer epochs than steps the early steps are skipped, so
    that the last step, after which nothing is retrained, stays the smallest.
    """
    return [-(-(e + 1) * steps // epochs) - 1 for e in range(epochs)]


def inq_units(w, e0, wbits):
    """INQ's rounding of ``w`` in units of ``2**e0``: ``2**k`` for ``0.75 * 2**k <= |w| < 1.5 * 2**k``,
    zero below half the lowest level, the top level above it (see :func:`quant.quantizers.pow2_round`)."""
    units = w.detach() * channel_view(torch.exp2(-e0.to(w.dtype)), w)
    return pow2_sum_codes(units, e0, inq_levels(wbits), 1, values_only=True).value


class INQWeightQuant(nn.Module):
    """INQ's partially frozen power-of-two weights.

    State (buffers, sized by :meth:`allocate`): ``n1`` per output channel (INQ's top exponent,
    fixed when the first portion is quantised), ``mask`` (the weights quantised so far) and
    ``frozen`` (their exact values).  The forward uses ``frozen`` where ``mask`` is set and the
    float weight elsewhere; the gradient reaches only the float weights.
    """

    def __init__(self, *, wbits, per_channel=True):
        super().__init__()
        arith.check_bits(wbits=wbits)
        self.wbits, self.terms, self.per_channel = wbits, 1, per_channel
        self.register_buffer("n1", torch.zeros(0, dtype=torch.long))
        self.register_buffer("mask", torch.zeros(0, dtype=torch.bool))
        self.register_buffer("frozen", torch.zeros(0))

    def allocate(self, weight):
        """Size the buffers for ``weight`` (called by ``Method.build``, before any state is loaded)."""
        self.n1 = torch.zeros(weight.shape[0], dtype=torch.long)
        self.mask = torch.zeros(weight.shape, dtype=torch.bool)
        self.frozen = torch.zeros(weight.shape)

    @property
    def e0(self):
        """The unit exponent ``n2 = n1 + 1 - 2**(wbits-2)`` per output channel."""
        return self.n1 - (inq_levels(self.wbits) - 1)

    @torch.no_grad()
    def set_range(self, w):
        """Fix ``n1`` from ``w``'s largest magnitude per output channel (or per layer)."""
        self.n1.copy_(pow2_top_exponent(channel_absmax(w, self.per_channel)).long())

    @torch.no_grad()
    def freeze(self, w, portion):
        """Quantise and freeze the largest-magnitude weights of ``w`` until ``portion`` percent of
        each output channel (of the layer, with ``per_channel`` false) is frozen."""
        groups = w.shape[0] if self.per_channel else 1
        score = w.abs().masked_fill(self.mask, float("inf")).reshape(groups, -1)
        count = round(portion / 100 * score.shape[1])
        top = torch.zeros_like(score, dtype=torch.bool)
        top.scatter_(1, score.topk(count, dim=1).indices, True)
        new = top.view_as(w) & ~self.mask
        value = inq_units(w, self.e0, self.wbits) * channel_view(torch.exp2(self.e0.to(w.dtype)), w)
        self.frozen.copy_(torch.where(new, value, self.frozen))
        self.mask |= new

    def portion(self):
        """Percent of the weights frozen so far."""
        return 100.0 * self.mask.float().mean().item()

    def codes(self, w):
        units = self.weight(w).detach() * channel_view(torch.exp2(-self.e0.to(w.dtype)), w)
        return pow2_sum_codes(units, self.e0, inq_levels(self.wbits), 1)

    def weight(self, w):
        """Frozen values where quantised, ``w`` elsewhere (the gradient reaches only the latter)."""
        return torch.where(self.mask, self.frozen, w)

    def forward(self, w):
        return self.weight(w), self.e0

    def extra_repr(self):
        return f"wbits={self.wbits}, per_channel={self.per_channel}"


class INQ(FoldedMethod):
    """Incremental network quantisation: quantise the largest weights, freeze, retrain the rest, repeat."""

    label = "inq"

    single_shift = True

    @classmethod
    def check(cls, cfg):
        super().check(cfg)
        parse_schedule(cfg.inq_schedule, cfg.wbits)

    def __init__(self, cfg):
        super().__init__(cfg)
        self.portions = parse_schedule(cfg.inq_schedule, cfg.wbits)
        self.steps = training_steps(self.portions)

    def weight_quant(self):
        return INQWeightQuant(wbits=self.cfg.wbits, per_channel=self.cfg.per_channel)

    def init_layer(self, layer):
        # (frozen weights must stay on their levels: BatchNorm is folded for good, FoldedMethod)
        layer.weight_quant.set_range(layer.weight)

    def epoch_start(self, net, epoch, trainer):
        plan = epoch_plan(self.cfg.epochs, len(self.steps))
        step = plan[epoch]
        if epoch > 0 and plan[epoch - 1] == step:
            return  # mid-step (also on a resumed run): the partition and learning rate stand
        for m in net.weighted_layers():
            m.weight_quant.freeze(m.weight, self.steps[step])
        self.after_step(net)
        trainer.restart_lr(plan.count(step))

    @torch.no_grad()
    def after_step(self, net):
        # weight decay moves even weights without a gradient: put frozen ones back exactly
        for m in net.weighted_layers():
            m.weight.copy_(m.weight_quant.weight(m.weight))

    def finish(self, net):
        for m in net.weighted_layers():
            m.weight_quant.freeze(m.weight, 100)
        self.after_step(net)

    def describe(self):
        return super().describe() + f" schedule={','.join(f'{p:g}' for p in self.portions)}"
