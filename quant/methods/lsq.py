"""``lsq``: learned step size quantisation (Esser et al., ICLR 2020, arXiv 1902.08153).

``v_hat = round(clip(v / s, -QN, QP)) * s`` with a learned step ``s`` whose gradient is the
paper's ``-v/s + round(v/s)`` inside the range and ``-QN`` / ``QP`` outside, scaled by
``g = 1 / sqrt(N * QP)``, and initialised to ``2 * mean|v| / sqrt(QP)``.

For the shift array the step is made a power of two inside the forward pass
(:func:`~quant.methods.base.pow2_exponent_ste`, straight-through to the learned ``s``):
weights become plain integers in ``[-QP, QP]`` times ``2**e0`` (run as canonical signed
digits, like ``uniform``), activations unsigned codes times ``2**-exp``.
"""

import math

import torch
from torch import nn

from core import arith

from ..layers import QuantReLU
from ..quantizers import WeightCodes, exact, uniform_terms
from .base import Method, channel_view, pow2_exponent_ste


def grad_scale(x, g):
    """``x`` in the forward pass, gradient multiplied by ``g`` in the backward pass."""
    return (x - x * g).detach() + x * g


def round_ste(x):
    """Round half up (the hardware's rounding), straight-through gradient."""
    return x + (torch.floor(x + 0.5) - x).detach()


def lsq_fake(v, step, qn, qp):
    """``round(clip(v / step, -qn, qp)) * step`` with LSQ's gradients to ``v`` and ``step``.

    Autograd of this expression is the paper's rule: ``d/dstep`` is ``round(v/s) - v/s``
    inside the range and ``-qn`` / ``qp`` outside; ``d/dv`` is 1 inside, 0 outside.
    """
    return round_ste(torch.clamp(v / step, -qn, qp)) * step


def lsq_init(v, qp, dim=None):
    """The paper's initial step ``2 * mean|v| / sqrt(QP)`` (per row of ``v`` when ``dim`` is given)."""
    mean = v.abs().mean() if dim is None else v.abs().mean(dim=dim)
    return 2.0 * mean / math.sqrt(qp)


class LSQWeightQuant(nn.Module):
    """Signed weights ``[-QP, QP]`` on a learned power-of-two step, one per output channel.

    The step parameter has one entry per output channel (sized by :meth:`allocate` before a
    checkpoint is loaded) or one per layer.
    """

    def __init__(self, *, wbits, per_channel=True):
        super().__init__()
        arith.check_bits(wbits=wbits)
        self.wbits, self.per_channel = wbits, per_channel
        self.terms = uniform_terms(wbits)
        # symmetric range: -2**(b-1) would need another code (and is no ternary weight at b = 2)
        self.qp = 2 ** (wbits - 1) - 1
        self.step = nn.Parameter(torch.ones(1))

    def allocate(self, weight):
        """One step per output channel of ``weight`` (per layer: one step)."""
        if self.per_channel:
            self.step = nn.Parameter(torch.ones(weight.shape[0]))

    def _steps(self, w):
        """The step per output channel (gradient-scaled), its power of two and exponent."""
        n = w[0].numel() if self.per_channel else w.numel()
        s = grad_scale(self.step, 1.0 / math.sqrt(n * self.qp)).expand(w.shape[0])
        s_pow2, e = pow2_exponent_ste(s)
        return s_pow2, e

    def _codes(self, w, e):
        value = torch.clamp(torch.floor(w.detach() * channel_view(torch.exp2(-e), w) + 0.5), -self.qp, self.qp)
        return WeightCodes(sign=None, shift=None, zero=None, e0=e.long(), value=value)

    def codes(self, w):
        return self._codes(w, self._steps(w)[1])

    def forward(self, w):
        s_pow2, e = self._steps(w)
        c = self._codes(w, e)
        q = c.value * channel_view(torch.exp2(e), w)
        return exact(q, lsq_fake(w, channel_view(s_pow2, w), self.qp, self.qp)), c.e0

    @torch.no_grad()
    def init_step(self, w):
        """LSQ's initial step from the (BatchNorm-folded) weights ``w``."""
        self.step.copy_(lsq_init(w.flatten(1), self.qp, dim=1) if self.per_channel else lsq_init(w, self.qp))
        self.step.clamp_(min=2.0**-24)

    def extra_repr(self):
        return f"wbits={self.wbits}, per_channel={self.per_channel}, channels={self.step.numel()}"


class LearnedStepAct(QuantReLU):
    """Unsigned activations on a learned step made a power of two (subclasses say how the step
    is parametrised).

    The integer exponent ``exp`` (what the export reads) is kept equal to ``-log2`` of the
    power-of-two step: it is set on every forward pass and by :meth:`sync`.  In eval mode the
    forward is the shared :class:`~quant.quantizers.ActQuantFn` with that exponent.
    """

    def learned_step(self, n):
        """The step as learned (a tensor with its gradient); ``n``: activations per image."""
        raise NotImplementedError

    def set_step(self, s):
        """Initialise the learned parameter so the step is ``s``."""
        raise NotImplementedError

    @torch.no_grad()
    def sync(self):
        """Set ``exp`` from the learned step: ``2**-exp`` is the step rounded to a power of two."""
        _, e = pow2_exponent_ste(self.learned_step(1).detach())
        self.exp.fill_(-int(e))

    def forward(self, x):
        if not self.training:
            self.sync()
            return super().forward(x)
        s_pow2, e = pow2_exponent_ste(self.learned_step(x[0].numel()))
        self.exp.fill_(-int(e))
        return lsq_fake(x, s_pow2, 0, self.qmax).to(torch.float32)


class LSQActQuant(LearnedStepAct):
    """LSQ's activation quantiser: ``QN = 0``, ``QP = 2**bits - 1``, the step learned directly
    with its gradient scaled by ``1 / sqrt(N * QP)`` (``N``: activations per image)."""

    def __init__(self, *, bits):
        super().__init__(bits=bits)
        self.step = nn.Parameter(torch.ones(()))

    def learned_step(self, n):
        return grad_scale(self.step, 1.0 / math.sqrt(n * self.qmax))

    @torch.no_grad()
    def set_step(self, s):
        self.step.fill_(max(float(s), 2.0**-24))

    @torch.no_grad()
    def observe(self, x):
        """LSQ's initial step from a calibration batch (called by ``QuantNet.calibrate``)."""
        self.set_step(lsq_init(x.clamp(min=0), self.qmax))
        self.calibrated.fill_(True)
        self.sync()


class LearnedScaleMethod(Method):
    """A method with learned weight scales and learned-step activations (LSQ, APoT).

    ``setup`` initialises each layer's scale (:meth:`init_layer`) unless the run starts from
    one of the same method and width, whose learned scales carry over; after every optimiser
    step the activations' integer exponents follow their learned steps.
    """

    def setup(self, net, dataset, source):
        if source is None or source.method != self.label or source.wbits != self.cfg.wbits:
            self.init_layers(net)
        super().setup(net, dataset, source)

    def after_step(self, net):
        sync_acts(net)

    def finish(self, net):
        sync_acts(net)


class LSQ(LearnedScaleMethod):
    """Learned power-of-two step sizes for weights (per channel) and activations (per tensor)."""

    label = "lsq"

    def weight_quant(self):
        c = self.cfg
        return LSQWeightQuant(wbits=c.wbits, per_channel=c.per_channel)

    def act_quant(self, bits):
        return LSQActQuant(bits=bits)

    def init_layer(self, layer):
        layer.weight_quant.init_step(layer.folded()[0])

    @torch.no_grad()
    def after_step(self, net):
        """A step is a positive size: an optimiser step that pushes one through zero (a large
        learning rate can) would give a NaN power of two, so steps are kept at least
        ``2**-24``, as they start."""
        for m in net.modules():
            if isinstance(m, (LSQWeightQuant, LSQActQuant)):
                m.step.clamp_(min=2.0**-24)
        super().after_step(net)

    def describe(self):
        c = self.cfg
        return f"{self.label} W{c.wbits}/A{c.abits}"


def sync_acts(net):
    """Keep every learned-step activation exponent equal to its step after an optimiser step."""
    for m in net.body:
        if isinstance(m, LearnedStepAct):
            m.sync()
