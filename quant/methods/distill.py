"""``distill``: quantised distillation and differentiable quantisation (Polino, Pascanu, Alistarh,
ICLR 2018, arXiv 1802.05668).

Quantised distillation: the quantised student learns from a float teacher's soft targets at
temperature ``T`` mixed with the labels; the forward uses the quantised weights and the
gradient updates the full-precision ones.  Differentiable quantisation (``--learn-points``):
the quantisation points themselves are parameters; a weight mapped to point ``p_j`` passes
its gradient, times its scale, to ``p_j``.  The hardware runs the points as greedy sums of
``terms`` powers of two, so that mapping is inside the forward pass.  The points start at the
window's powers of two or at the weights' quantiles (``--points-init``), and
``--redistribute-bits`` shares the code bits across layers by gradient norm (the authors' rule),
within the hardware's 2- to 5-bit codes.
"""

import torch
import torch.nn.functional as F
from torch import nn

from core import arith
from core.errors import UserError

from ..data import batches
from ..quantizers import Pow2WeightQuant, exact, pow2_sum_codes, pow2_window, ste
from .base import Method, channel_view


#: where the learned points start (``--points-init``)
POINTS_INIT = ("quantiles", "pow2")
#: batches whose gradient norm ranks the layers (the authors' code: 5)
GRAD_BATCHES = 5


class PointsWeightQuant(nn.Module):
    """Weights mapped to the nearest of learned points' hardware values.

    Per output channel the unit ``2**e0`` follows the weights' range as in ``pow2``
    (INQ's rule); the points ``p_1 < ... < p_n`` (``n = 2**(wbits-1) - 1``, shared by the
    layer, in units of ``2**e0``, initialised to ``1, 2, 4, ...`` or by :meth:`init_quantiles`)
    are parameters.  Each runs as its hardware form (greedy sum of ``terms`` shifts), and a
    weight takes the nearest of zero and those forms, so the assignment is the one the values
    give.  The gradient reaches the point straight through its hardware form (the sum, over the
    weights on it, of their upstream gradient times sign and unit); a point changes the network
    only when its hardware form does.
    """

    def __init__(self, *, wbits, terms, per_channel=True):
        super().__init__()
        arith.check_bits(wbits=wbits, terms=terms)
        self.wbits, self.terms, self.per_channel = wbits, terms, per_channel
        n = arith.shift_levels(wbits)
        self.points = nn.Parameter(torch.exp2(torch.arange(n, dtype=torch.float32)))

    @torch.no_grad()
    def init_quantiles(self, w):
        """Polino et al.'s initialisation: point ``j`` of ``n`` at the ``j/n`` quantile of the
        layer's ``|w|`` in units of each channel's ``2**e0`` (zero stands for the 0 quantile)."""
        units, _ = self._units(w.detach().float())
        n = self.points.numel()
        levels = torch.arange(1, n + 1, dtype=units.dtype) / n
        self.points.copy_(torch.quantile(units.abs().flatten(), levels).to(self.points.dtype))

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
        if cfg.points_init not in POINTS_INIT:
            raise UserError(f"unknown --points-init {cfg.points_init!r}; choose from {', '.join(POINTS_INIT)}")
        if not cfg.temperature > 0:
            raise UserError(f"--temperature must be positive, not {cfg.temperature}")
        if not 0 <= cfg.distill_weight <= 1:
            raise UserError(f"--distill-weight must be between 0 and 1, not {cfg.distill_weight}")

    def weight_quant(self, wbits=None):
        c = self.cfg
        wbits = c.wbits if wbits is None else wbits
        if c.learn_points:
            return PointsWeightQuant(wbits=wbits, terms=c.terms, per_channel=c.per_channel)
        return Pow2WeightQuant(wbits=wbits, terms=c.terms, per_channel=c.per_channel)

    def build(self, net):
        """Give each layer its redistributed code width (``layer_wbits``, set by :meth:`setup`)."""
        if self.cfg.layer_wbits is not None:
            set_layer_bits(net, self.cfg.layer_wbits, self.weight_quant)
        super().build(net)

    def setup(self, net, dataset, source):
        """Bits redistributed across layers (``--redistribute-bits``), then the points at the
        weights' quantiles (``--points-init quantiles``), then the activation exponents."""
        c = self.cfg
        if c.redistribute_bits:
            norms = gradient_norms(net, dataset, batch_size=c.batch_size)
            c.layer_wbits = redistribute_bits(norms, [c.wbits] * len(norms))
            set_layer_bits(net, c.layer_wbits, self.weight_quant)
        if c.learn_points and c.points_init == "quantiles":
            with torch.no_grad():
                for m in net.weighted_layers():
                    m.weight_quant.init_quantiles(m.folded()[0])
        super().setup(net, dataset, source)

    def loss(self, logits, yb, xb):
        """``(1 - a) * CE(labels) + a * T**2 * KL(teacher_T || student_T) / C``, the source's loss.

        Hinton et al.'s ``T**2`` keeps the soft-target gradient's scale independent of ``T``; the
        division by the ``C`` classes is the authors' code's (PyTorch's ``KLDivLoss`` averaged over
        every element of the ``(batch, C)`` table), which makes the soft term ``C`` times weaker
        than a per-image KL divergence would.
        """
        a, t = self.cfg.distill_weight, self.cfg.temperature
        hard = F.cross_entropy(logits, yb)
        if a == 0:
            return hard
        with torch.no_grad():
            soft_targets = F.softmax(self.teacher(xb) / t, dim=1)
        soft = F.kl_div(F.log_softmax(logits.float() / t, dim=1), soft_targets, reduction="batchmean")
        return (1 - a) * hard + a * t * t * soft / logits.shape[1]

    def describe(self):
        c = self.cfg
        return (super().describe() + (f" learned points ({c.points_init})" if c.learn_points else "")
                + (f" layer bits {','.join(map(str, c.layer_wbits))}" if c.layer_wbits else ""))


# -- Polino et al.'s bit redistribution across layers ------------------------------------------

def gradient_norms(net, dataset, *, batch_size, n_batches=GRAD_BATCHES):
    """Per weighted layer, the 2-norm of the mean gradient of the label cross-entropy over the
    first ``n_batches`` training batches (the authors' ``assignBitsAutomatically``).

    The forward is the eval-mode one (BatchNorm's running statistics, the quantisers' fixed
    state), so nothing the network holds moves.
    """
    layers = net.weighted_layers()
    was = net.training
    net.eval()
    grads = [torch.zeros_like(m.weight) for m in layers]
    it = batches(dataset.train_x, dataset.train_y, batch_size, shuffle=False)
    n = 0
    for (xb, yb), _ in zip(it, range(n_batches)):
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(xb), yb).backward()
        for g, m in zip(grads, layers):
            g += m.weight.grad
        n += 1
    net.zero_grad(set_to_none=True)
    net.train(was)
    return [float((g / n).norm()) for g in grads]


def redistribute_bits(norms, bits, *, lo=arith.WBITS_RANGE[0], hi=arith.WBITS_RANGE[1]):
    """Code bits per layer in proportion to gradient norm, keeping their total (Polino et al.).

    The source's rule (``assign_bits_automatically``): each layer keeps ``bits - 1``; the
    remaining one bit per layer is shared out in proportion to ``norms``, rounded; the rounding
    surplus is taken from the layer with the most bits, a deficit given to the one with the
    fewest.  The hardware adds bounds: no layer below ``lo`` (ternary, the narrowest code) or
    above ``hi``; what a bound cuts off goes to (or comes from) the layers in order of gradient
    norm, so the total stays the source's.
    """
    total, count = sum(bits), len(bits)
    s = sum(norms)
    share = [n / s if s > 0 else 1 / count for n in norms]
    out = [b - 1 + round(f * count) for b, f in zip(bits, share)]
    diff = sum(out) - total
    if diff > 0:
        out[out.index(max(out))] -= diff
    elif diff < 0:
        out[out.index(min(out))] -= diff
    out = [min(max(b, lo), hi) for b in out]
    order = sorted(range(count), key=lambda i: -norms[i])
    while sum(out) < total and any(out[i] < hi for i in order):
        out[next(i for i in order if out[i] < hi)] += 1
    while sum(out) > total and any(out[i] > lo for i in order[::-1]):
        out[next(i for i in order[::-1] if out[i] > lo)] -= 1
    return out


def set_layer_bits(net, layer_bits, make_quant):
    """Give weighted layer ``i`` a fresh weight quantiser ``make_quant(layer_bits[i])``."""
    layers = net.weighted_layers()
    if len(layer_bits) != len(layers):
        raise UserError(f"layer_wbits has {len(layer_bits)} entries; the network has {len(layers)} weighted layers")
    for m, b in zip(layers, layer_bits):
        if m.weight_quant.wbits != b:
            m.weight_quant = make_quant(b)
