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

import math

import torch
from torch import nn

from core import arith
from core.errors import UserError

from ..quantizers import channel_absmax, pow2_sum_codes, pow2_top_exponent, pow2_window
from .base import Method, channel_view, fold_bn_for_good, mark_bn_folded

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


def stage_starts(total, stages):
    """The optimiser step at which each of ``stages`` schedule steps begins when ``total`` steps
    are split evenly over them: stage ``j`` starts at ``floor(j * total / stages)``.

    With fewer optimiser steps than stages some stages get none (their portion is frozen and at
    once overtaken by the next), so the last portion, after which nothing is retrained, stays small.
    """
    return [(j * total) // stages for j in range(stages)]


def stage_at(step, starts):
    """The schedule stage optimiser step ``step`` belongs to: the last one started at or before it."""
    return max(j for j, s in enumerate(starts) if s <= step)


def refold_stage(starts, total, frozen_steps):
    """The stage at whose start BatchNorm is folded into the weights for good (the re-fold): the
    stage start nearest to ``total - frozen_steps``, the point from which the last
    ``frozen_steps`` optimiser steps train on the deployed arithmetic (``--bn-freeze``, as for
    ``pow2``); ``len(starts)`` (only at the end, in ``finish``) when ``frozen_steps`` is 0."""
    if frozen_steps <= 0:
        return len(starts)
    target = total - frozen_steps
    return min(range(len(starts)), key=lambda j: (abs(starts[j] - target), -j))


def inq_units(w, e0, wbits):
    """INQ's rounding of ``w`` in units of ``2**e0``: ``2**k`` for ``0.75 * 2**k <= |w| < 1.5 * 2**k``,
    zero below half the lowest level, the top level above it (see :func:`quant.quantizers.pow2_round`)."""
    units = w.detach() * channel_view(torch.exp2(-e0.to(w.dtype)), w)
    return pow2_sum_codes(units, e0, inq_levels(wbits), 1, values_only=True).value


class INQWeightQuant(nn.Module):
    """INQ's partially frozen power-of-two weights.

    State (buffers, sized by :meth:`allocate`): ``n1`` per output channel (INQ's top exponent,
    fixed when the first portion is quantised and again at the re-fold), ``mask`` (the weights
    quantised so far), ``frozen`` (their exact values), ``refolded`` (BatchNorm folded into the
    weights for good), and the schedule's position: ``step`` (optimiser steps done),
    ``stage`` (the last schedule stage applied, -1 before the first) and ``steps_per_epoch``.

    Before the re-fold the layer's weight parameter holds the frozen values itself (raw
    weights, before BatchNorm), so the forward is the identity on the BatchNorm-scaled weight
    it is given: BatchNorm, still training on batch statistics, sees exactly the float layer
    with some weights on powers of two.  After the re-fold the weight is the folded one and the
    forward puts the frozen values where ``mask`` is set; the gradient reaches only the float
    weights.
    """

    def __init__(self, *, wbits, per_channel=True):
        super().__init__()
        arith.check_bits(wbits=wbits)
        self.wbits, self.terms, self.per_channel = wbits, 1, per_channel
        self.register_buffer("n1", torch.zeros(0, dtype=torch.long))
        self.register_buffer("mask", torch.zeros(0, dtype=torch.bool))
        self.register_buffer("frozen", torch.zeros(0))
        self.register_buffer("refolded", torch.zeros((), dtype=torch.bool))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("stage", torch.full((), -1, dtype=torch.long))
        self.register_buffer("steps_per_epoch", torch.zeros((), dtype=torch.long))

    def allocate(self, weight):
        """Size the buffers for ``weight`` (called by ``Method.build``, before any state is loaded)."""
        self.n1 = torch.zeros(weight.shape[0], dtype=torch.long)
        self.mask = torch.zeros(weight.shape, dtype=torch.bool)
        self.frozen = torch.zeros(weight.shape)

    @torch.no_grad()
    def reset(self, steps_per_epoch):
        """A fresh schedule: nothing frozen, BatchNorm not folded."""
        self.mask.zero_()
        self.frozen.zero_()
        self.refolded.fill_(False)
        self.step.zero_()
        self.stage.fill_(-1)
        self.steps_per_epoch.fill_(steps_per_epoch)

    @property
    def e0(self):
        """The unit exponent ``n2 = n1 + 1 - 2**(wbits-2)`` per output channel."""
        return self.n1 - (inq_levels(self.wbits) - 1)

    @torch.no_grad()
    def set_range(self, w):
        """Fix ``n1`` from ``w``'s largest magnitude per output channel (or per layer)."""
        self.n1.copy_(pow2_top_exponent(channel_absmax(w, self.per_channel)).long())

    def _levels(self, w):
        return inq_units(w, self.e0, self.wbits) * channel_view(torch.exp2(self.e0.to(w.dtype)), w)

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
        self.frozen.copy_(torch.where(new, self._levels(w), self.frozen))
        self.mask |= new

    @torch.no_grad()
    def refold(self, w):
        """After BatchNorm is folded into the weight ``w`` for good: the window follows the folded
        channel (INQ's rule on its largest magnitude) and the frozen weights, scaled by BatchNorm,
        are rounded onto it again (a channel's frozen weights all move by the same power of two)."""
        self.set_range(w)
        self.frozen.copy_(torch.where(self.mask, self._levels(w), torch.zeros_like(w)))
        self.refolded.fill_(True)

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
        if not self.refolded:
            # the weight parameter holds the frozen raw values; ``w`` is it times BatchNorm's scale
            # (the unit only rounds the bias of this float eval forward: pow2's window of ``w``)
            return w, pow2_window(w.detach(), self.wbits, self.per_channel).long()
        return self.weight(w), self.e0

    def extra_repr(self):
        return f"wbits={self.wbits}, per_channel={self.per_channel}"


class INQ(Method):
    """Incremental network quantisation: quantise the largest weights, freeze, retrain the rest,
    repeat; BatchNorm trains until the re-fold, then is folded into the weights for good."""

    label = "inq"

    single_shift = True

    @classmethod
    def check(cls, cfg):
        super().check(cfg)
        parse_schedule(cfg.inq_schedule, cfg.wbits)
        if not cfg.inq_lr_scale > 0:
            raise UserError(f"--inq-lr-scale must be positive, not {cfg.inq_lr_scale}")

    def __init__(self, cfg):
        super().__init__(cfg)
        self.portions = parse_schedule(cfg.inq_schedule, cfg.wbits)
        self.steps = training_steps(self.portions)
        self.trainer = None

    def weight_quant(self):
        return INQWeightQuant(wbits=self.cfg.wbits, per_channel=self.cfg.per_channel)

    def setup(self, net, dataset, source):
        spe = -(-dataset.train_x.shape[0] // self.cfg.batch_size)
        for m in net.weighted_layers():
            m.weight_quant.reset(spe)
        super().setup(net, dataset, source)

    # -- the schedule, in optimiser steps -------------------------------------------------------
    def _state(self, net):
        return net.weighted_layers()[0].weight_quant

    def _plan(self, net):
        """``(starts, total, refold stage)`` of this run."""
        spe = int(self._state(net).steps_per_epoch)
        total = self.cfg.epochs * spe
        starts = stage_starts(total, len(self.steps))
        return starts, total, refold_stage(starts, total, self.cfg.bn_freeze_epochs * spe)

    def bn_frozen(self, epoch):
        return False  # BatchNorm trains until the re-fold (epoch_start sets the state)

    def epoch_start(self, net, epoch, trainer):
        self.trainer = trainer
        if bool(self._state(net).refolded):
            mark_bn_folded(net)  # (a resumed run: the folded weights are in its state)
        self._advance(net)

    @torch.no_grad()
    def _advance(self, net):
        """Apply every schedule stage that has started by the current optimiser step."""
        state = self._state(net)
        starts, _, refold_at = self._plan(net)
        target = stage_at(int(state.step), starts)
        if target == int(state.stage):
            return
        for j in range(int(state.stage) + 1, target + 1):
            if j == refold_at:
                self._refold(net)
            for m in net.weighted_layers():
                if j == 0:
                    m.weight_quant.set_range(m.weight)
                m.weight_quant.freeze(m.weight, self.steps[j])
                m.weight_quant.stage.fill_(j)
        self._restore(net)
        if self.trainer is not None:
            self.trainer.opt.state.clear()  # each stage retrains afresh: Adam's moments reset

    def _refold(self, net):
        fold_bn_for_good(net)
        for m in net.weighted_layers():
            m.weight_quant.refold(m.weight)

    def before_step(self, net):
        # frozen weights get no update (weight decay aside, which after_step undoes)
        for m in net.weighted_layers():
            if m.weight.grad is not None:
                m.weight.grad.masked_fill_(m.weight_quant.mask, 0.0)
        # the learning rate restarts at each stage: cosine from --lr * --inq-lr-scale to zero over its steps
        if self.trainer is None:
            return
        starts, total, _ = self._plan(net)
        step = int(self._state(net).step)
        j = stage_at(step, starts)
        end = starts[j + 1] if j + 1 < len(starts) else total
        t, length = step - starts[j], max(1, end - starts[j])
        factor = 0.5 * (1 + math.cos(math.pi * t / length))
        for g in self.trainer.opt.param_groups:
            g["lr"] = g.get("lr_scale", 1.0) * self.cfg.lr * self.cfg.inq_lr_scale * factor

    @torch.no_grad()
    def _restore(self, net):
        # weight decay moves even weights without a gradient: put frozen ones back exactly
        for m in net.weighted_layers():
            m.weight.copy_(m.weight_quant.weight(m.weight))

    @torch.no_grad()
    def after_step(self, net):
        self._restore(net)
        for m in net.weighted_layers():
            m.weight_quant.step += 1
        self._advance(net)

    @torch.no_grad()
    def finish(self, net):
        if not bool(self._state(net).refolded):
            self._refold(net)
        for m in net.weighted_layers():
            m.weight_quant.freeze(m.weight, 100)
        self._restore(net)

    def describe(self):
        return super().describe() + f" schedule={','.join(f'{p:g}' for p in self.portions)}"
