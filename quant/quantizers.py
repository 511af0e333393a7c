"""Quantisers: straight-through functions, then small modules that produce integer codes.

Layers of code, bottom up:

1. straight-through functions (:func:`ste`, :class:`ActQuantFn`);
2. code functions that turn a float tensor into the integer codes of :mod:`core.arith`
   (:func:`pow2_codes`, :func:`uniform_codes`, :func:`quant_bias`);
3. quantiser modules (:class:`Pow2WeightQuant`, :class:`UniformWeightQuant`,
   :class:`ActQuant`) that the layers in :mod:`quant.layers` hold.

A weight quantiser's ``forward`` returns the fake-quantised weight *and* the per-channel
unit exponent ``e0``; its ``codes`` returns what the hardware stores.  Both come from the
same code function, so the trained model and the exported one cannot disagree.
"""

from dataclasses import dataclass

import torch
from torch import nn

from core import arith


def ste(x, q):
    """Straight-through estimator: forward ``q``, backward identity to ``x``.

    Without a gradient to carry it returns ``q`` itself: ``x + (q - x)`` in floating point
    need not equal ``q`` exactly, and the eval forward must be the exported integers.
    """
    if not (torch.is_grad_enabled() and x.requires_grad):
        return q
    return x + (q - x).detach()


def exact(q, fake):
    """``q`` exactly in the forward pass, ``fake``'s gradient in the backward pass (and ``q``'s own).

    ``fake - fake.detach()`` is exactly zero, so the eval forward is the exported integers
    times their power-of-two unit, bit for bit.
    """
    if not torch.is_grad_enabled() or not fake.requires_grad:
        return q
    return q + (fake - fake.detach())


_HALF = torch.tensor(0.5)  # 0-dim: takes the dtype of the tensor it is added to


class ActQuantFn(torch.autograd.Function):
    """Unsigned activation quantiser with a power-of-two scale, fused with ReLU.

    Forward: ``clamp(floor(x * 2**exp + 0.5), 0, qmax) * 2**-exp``.
    Backward: the clipped straight-through estimator (gradient where ``0 <= x <= qmax * 2**-exp``).
    """

    @staticmethod
    def forward(ctx, x, scale, qmax):
        # t = x * scale + 1/2 in one pass; clamping t to [1/2, qmax + 1/2] before the floor is
        # the same as clamping the codes to [0, qmax], and marks where the gradient passes
        t = torch.add(_HALF, x, alpha=scale)
        q = t.clamp(0.5, qmax + 0.5)
        ctx.save_for_backward(q == t)
        return q.floor_().mul_(1.0 / scale)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None


def quantize_input(x, bits):
    """Integer codes of network inputs in ``[0, 1]``: ``clamp(floor(x * 2**bits + 0.5), 0, 2**bits - 1)``.

    The exponent of the input is ``bits``.  Shared by the fake-quantised forward and by the
    golden vectors, so both start from identical integers.
    """
    return torch.clamp(torch.floor(x * 2.0**bits + 0.5), 0, arith.act_max(bits))


def channel_absmax(w, per_channel):
    """``max|w|`` per output channel (row of ``w``), or the layer's maximum repeated per channel."""
    if per_channel:
        return w.detach().abs().flatten(1).amax(dim=1)
    return w.detach().abs().max().expand(w.shape[0])


def _view_channels(v, w):
    return v.view((-1,) + (1,) * (w.dim() - 1))


@dataclass
class WeightCodes:
    """Integer weight codes of one layer (see :mod:`core.arith`).

    ``sign``, ``shift``, ``zero`` have shape ``(terms, *weight.shape)``; ``e0`` has one
    exponent per output channel; ``value`` is the integer weight in units of ``2**e0``.
    """

    sign: torch.Tensor
    shift: torch.Tensor
    zero: torch.Tensor
    e0: torch.Tensor
    value: torch.Tensor


def floor_log2(v):
    """``floor(log2(v))`` of ``v > 0``, exactly, as floats of ``v``'s dtype: ``frexp`` gives
    ``v = m * 2**e`` with ``m`` in [0.5, 1)."""
    return torch.frexp(v).exponent.to(v.dtype) - 1


def pow2_top_exponent(absmax):
    """INQ's range rule ``n1 = floor(log2(4 * max|W| / 3))``: the largest level is the nearest
    power of two to ``max|W|``.  (An all-zero channel gets ``n1 = -1``; all its codes are zero.)"""
    return floor_log2(absmax * (4.0 / 3.0))


def pow2_round(a, levels):
    """Nearest of ``{0, 1, 2, ..., 2**(levels-1)}`` to ``a >= 0`` in the linear domain (INQ's rule:
    ``2**k`` for ``0.75 * 2**k <= a < 1.5 * 2**k``, zero below ``0.5``, clamped at the top).

    Returns ``(zero, k)`` with integer ``k``."""
    return a < 0.5, floor_log2(a * (4.0 / 3.0)).clamp_(0, levels - 1)


def pow2_codes(w, wbits, terms, per_channel=True, *, values_only=False):
    """Power-of-two codes of ``w``: each weight a sum of ``terms`` signed powers of two.

    The first term is the nearest power of two (or zero); each further term quantises the
    residual the same way, within the same shift window.  ``values_only`` skips the code
    stacks (``sign``/``shift``/``zero`` are None) for the training forward.
    """
    return window_codes(w, pow2_window(w, wbits, per_channel), wbits, terms, values_only=values_only)


def pow2_window(w, wbits, per_channel=True):
    """INQ's window per output channel: the unit exponent ``e0`` whose top level
    ``2**(e0 + levels - 1)`` is the power of two nearest to ``max|w|``."""
    return pow2_top_exponent(channel_absmax(w, per_channel)) - (arith.shift_levels(wbits) - 1)


def window_codes(w, e0, wbits, terms, *, values_only=False):
    """Power-of-two codes of ``w`` in the window whose unit is ``2**e0`` (one per row of ``w``);
    weights beyond the window's top level clip to it."""
    units = w.detach() * _view_channels(torch.exp2(-e0.to(w.dtype)), w)  # exact: a power of two
    return pow2_sum_codes(units, e0, arith.shift_levels(wbits), terms, values_only=values_only)


def pow2_sum_codes(units, e0, levels, terms, *, values_only=False):
    """Codes of ``units`` (values in units of ``2**e0``) as greedy sums of ``terms`` signed powers
    of two ``2**k``, ``k in [0, levels - 1]``: each term is the nearest power of two (or zero)
    to what the earlier terms left.  (``e0`` is only passed through; it may be None.)"""
    rest = units
    e0 = None if e0 is None else e0.long()
    signs, shifts, zeros = [], [], []
    value = None
    for _ in range(terms):
        zero, k = pow2_round(rest.abs(), levels)
        term = torch.sign(rest).masked_fill_(zero, 0.0).mul_(torch.exp2(k))
        value = term if value is None else value + term
        if terms > 1:
            rest = rest - term
        if values_only:
            continue
        signs.append(term < 0)
        shifts.append(k.masked_fill(zero, 0).long())
        zeros.append(zero)
    if values_only:
        return WeightCodes(sign=None, shift=None, zero=None, e0=e0, value=value)
    return WeightCodes(
        sign=torch.stack(signs).long(),
        shift=torch.stack(shifts).long(),
        zero=torch.stack(zeros),
        e0=e0,
        value=value,
    )


def uniform_codes(w, wbits, per_channel=True):
    """Plain uniform integers ``[-(2**(b-1) - 1), 2**(b-1) - 1]`` with a power-of-two scale,
    the baseline.  The hardware runs them as canonical-signed-digit sums of powers of two
    (:func:`core.arith.csd_codes`), so ``sign``/``shift``/``zero`` are filled at export."""
    qmax = 2 ** (wbits - 1) - 1
    absmax = channel_absmax(w, per_channel)
    safe = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    e0 = torch.round(torch.log2(safe / qmax))
    value = torch.clamp(torch.round(w.detach() * _view_channels(torch.exp2(-e0), w)), -qmax, qmax)
    return WeightCodes(sign=None, shift=None, zero=None, e0=e0.long(), value=value)


def uniform_terms(wbits):
    """Powers of two a uniform ``wbits``-bit weight needs in canonical signed digits."""
    return (wbits + 1) // 2


def quant_bias(b, in_exp, e0, bound):
    """Integer bias in accumulator units ``2**(e0 - in_exp)``, rounded and clamped to ``bound``.

    Returns ``(b_int, b_fake)``; the fake-quantised bias carries a straight-through gradient.
    """
    unit = torch.exp2(e0.to(b.dtype) - in_exp)
    b_int = torch.clamp(torch.round(b.detach() / unit), -bound, bound)
    return b_int, ste(b, b_int * unit)


class Pow2WeightQuant(nn.Module):
    """Power-of-two weights (sums of ``terms`` shifts), straight-through gradient.

    Parameters
    ----------
    wbits : int
        Code bits per term: sign + shift field with one code for zero.
    terms : int
        Powers of two per weight (1 is a pure shift).
    per_channel : bool
        One exponent window per output channel (else per layer).
    """

    def __init__(self, *, wbits, terms=1, per_channel=True):
        super().__init__()
        arith.check_bits(wbits=wbits, terms=terms)
        self.wbits, self.terms, self.per_channel = wbits, terms, per_channel

    def codes(self, w):
        return pow2_codes(w, self.wbits, self.terms, self.per_channel)

    def forward(self, w):
        c = pow2_codes(w, self.wbits, self.terms, self.per_channel, values_only=True)
        return ste(w, c.value * _view_channels(torch.exp2(c.e0.to(w.dtype)), w)), c.e0

    def extra_repr(self):
        return f"wbits={self.wbits}, terms={self.terms}, per_channel={self.per_channel}"


class UniformWeightQuant(nn.Module):
    """Uniform signed integer weights with a power-of-two scale, straight-through gradient."""

    def __init__(self, *, wbits, per_channel=True):
        super().__init__()
        arith.check_bits(wbits=wbits)
        self.wbits, self.per_channel = wbits, per_channel
        self.terms = uniform_terms(wbits)

    def codes(self, w):
        return uniform_codes(w, self.wbits, self.per_channel)

    def forward(self, w):
        c = self.codes(w)
        return ste(w, c.value * _view_channels(torch.exp2(c.e0.to(w.dtype)), w)), c.e0

    def extra_repr(self):
        return f"wbits={self.wbits}, per_channel={self.per_channel}"


class ActQuant(nn.Module):
    """Unsigned ``bits``-bit activation with a power-of-two scale ``2**-exp``, fused with ReLU.

    During training the exponent follows the batches: every ``every`` steps, on a small
    sample of the batch, it picks the exponent with the least mean squared quantisation
    error among the four just below the no-clipping one, and keeps a running average of
    that choice (momentum ``momentum``).  In eval mode the stored exponent is used unchanged, so what is
    evaluated is what is exported.
    """

    #: a :class:`quant.distributed.World` when training batches are split over processes
    #: (set by ``World.attach``): then the sample is drawn from the global batch
    world = None

    def __init__(self, *, bits, momentum=0.1, sample=4096, every=8):
        super().__init__()
        arith.check_bits(abits=bits)
        self.bits, self.momentum, self.sample, self.every = bits, momentum, sample, every
        self._steps = 0
        self.register_buffer("exp", torch.zeros((), dtype=torch.long))
        self.register_buffer("exp_avg", torch.zeros(()))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))

    @property
    def qmax(self):
        return arith.act_max(self.bits)

    def batch_sample(self, x, count):
        """``count`` elements of the batch ``x`` drawn at random (all of them if it has no more), flat.

        When the training batch is split over processes, the elements are drawn from the
        global batch with the generator all processes share and gathered from the processes
        that hold them: every process gets the sample one process would draw.
        """
        world = self.world
        if world is None or not world.sharded:
            flat = x.flatten()
            if flat.numel() > count:
                flat = flat[torch.randint(flat.numel(), (count,), device=flat.device)]
            return flat
        numel = world.batch * x[0].numel()
        index = torch.randint(numel, (count,), device=x.device) if numel > count else torch.arange(numel)
        return world.batch_elements(x, index)

    @torch.no_grad()
    def observe(self, x):
        """Update the exponent from a batch (the training-time calibration described above)."""
        flat = self.batch_sample(x.detach(), self.sample)
        top = flat.max()
        if top <= 0:
            return
        base = torch.floor(torch.log2(self.qmax / top))
        cands = base + torch.arange(4, dtype=flat.dtype)
        scale = torch.exp2(cands)[:, None]
        err = ((flat * scale + 0.5).floor().clamp(0, self.qmax) / scale - flat.clamp(min=0)).pow(2).mean(dim=1)
        self.record(cands[torch.argmin(err)])

    @torch.no_grad()
    def record(self, best):
        """Fold one batch's best exponent into the running average (the first one sets it)."""
        if not self.calibrated:
            self.exp_avg.fill_(best)
            self.calibrated.fill_(True)
        else:
            self.exp_avg.mul_(1 - self.momentum).add_(self.momentum * best)
        self.exp.fill_(int(torch.round(self.exp_avg)))

    def train_step(self, x):
        """Called on each training batch: observe every ``every``-th one."""
        if self._steps % self.every == 0 or not self.calibrated:
            self.observe(x)
        self._steps += 1

    def forward(self, x):
        if self.training:
            self.train_step(x)
        # a float64 input (an exact wide accumulator, see quant.layers) gives small codes: float32 holds them
        return ActQuantFn.apply(x, 2.0 ** int(self.exp), self.qmax).to(torch.float32)

    def extra_repr(self):
        return f"bits={self.bits}, exp={int(self.exp)}"
