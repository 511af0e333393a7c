"""``apot``: additive powers-of-two quantisation (Li, Dong, Wang, ICLR 2020, arXiv 1909.13144).

Each weight level is a sum of ``n`` (``--terms``) powers of two, one from each of ``n``
interleaved exponent sets; weights are standardised and clipped at a learned ``alpha``:
``W_hat = alpha * Proj(clip(W' / alpha, -1, 1))``, with the reparameterised clipping
function's gradient for ``alpha``.

``--wbits b`` is APoT's ``b``: one sign bit and ``b - 1`` magnitude bits, so ``2**(b-1)``
magnitudes including zero.  In units of the smallest power of two used, every level is an
integer whose binary digits are the chosen powers, so a weight is stored as ``n`` hardware
terms (``weight_quant.terms``) whose shift window covers all ``E`` exponents of the level
set (``weight_quant.wbits``, the narrowest code with ``2**(w-1) - 1 >= E`` shifts).  The
clip ``alpha * std`` of each output channel becomes, inside the forward pass, a power-of-two
unit ``2**e0`` times the largest integer level.
"""

from dataclasses import dataclass
from itertools import product

import torch
from torch import nn

from core import arith

from ..layers import QuantReLU
from ..quantizers import WeightCodes, exact
from .base import channel_view, pow2_exponent_ste
from .lsq import LearnedScaleMethod, LearnedStepAct


def term_exponents(bits, terms):
    """APoT's interleaved exponent sets: for each term, the exponents ``j`` of its powers ``2**-j``.

    The ``bits - 1`` magnitude bits are shared out among ``min(terms, bits - 1)`` terms as
    evenly as possible (earlier terms get the spare bits); a term of ``k`` bits has
    ``2**k - 1`` powers besides zero.  Exponents ``0, 1, 2, ...`` (largest first) are dealt
    out as in the authors' tables: first the extra powers of the wider terms, in turn; then
    rounds of one power per term, narrowest term first.  With equal widths this is the
    paper's ``p_i in {0, 2**-i, 2**-(i+n), 2**-(i+2n), ...}``.
    """
    m = bits - 1
    n = min(terms, m)
    slots = [2 ** (m // n + (i < m % n)) - 1 for i in range(n)]
    low = min(slots)
    order = []
    for r in range(max(slots) - low):
        order += [i for i in range(n) if slots[i] - low > r]
    for _ in range(low):
        order += sorted(range(n), key=lambda i: slots[i])
    sets = [[] for _ in range(n)]
    for j, i in enumerate(order):
        sets[i].append(j)
    return sets


@dataclass(frozen=True)
class LevelSet:
    """APoT's level magnitudes as integers, with the hardware terms of each.

    ``values`` (ascending, ``values[0] == 0``) are in units of the smallest power of two,
    ``2**-(E-1)`` of the top exponent; ``shift``/``zero`` (``(levels, terms)``) are the
    hardware code of each level, one term per APoT term.
    """

    values: torch.Tensor
    shift: torch.Tensor
    zero: torch.Tensor
    exponents: int

    @property
    def terms(self):
        return self.shift.shape[1]

    @property
    def top(self):
        return float(self.values[-1])

    @property
    def hw_wbits(self):
        """The narrowest hardware code whose shift window holds every exponent of the set."""
        lo, hi = arith.WBITS_RANGE
        return next(w for w in range(lo, hi + 1) if arith.shift_levels(w) >= self.exponents)


def level_set(bits, terms):
    """The :class:`LevelSet` of APoT with ``bits`` (sign included) and ``terms`` additive terms."""
    sets = term_exponents(bits, terms)
    top = sum(len(s) for s in sets) - 1
    # per term: None (zero) or one of its exponents; each choice a distinct set of binary digits
    rows = []
    for pick in product(*[[None] + s for s in sets]):
        shifts = [0 if j is None else top - j for j in pick]
        zeros = [j is None for j in pick]
        value = sum(2**s for s, z in zip(shifts, zeros) if not z)
        rows.append((value, shifts, zeros))
    rows.sort(key=lambda r: r[0])
    return LevelSet(values=torch.tensor([r[0] for r in rows], dtype=torch.float32),
                    shift=torch.tensor([r[1] for r in rows], dtype=torch.long),
                    zero=torch.tensor([r[2] for r in rows], dtype=torch.bool),
                    exponents=top + 1)


def nearest_level(a, values):
    """Index of the nearest of the ascending ``values`` to each ``a`` (a tie goes to the smaller)."""
    mids = (values[1:] + values[:-1]) / 2
    return torch.bucketize(a, mids)


class APoTWeightQuant(nn.Module):
    """APoT weights: per-channel standardised, clipped at a learned ``alpha``, projected onto
    additive powers of two, with a power-of-two unit per output channel.

    Parameters
    ----------
    bits : int
        APoT's ``b`` (``--wbits``): sign plus ``b - 1`` magnitude bits.
    terms : int
        Additive terms (``--terms``); at most ``b - 1`` of them are used.
    per_channel : bool
        Standardise and scale each output channel on its own (else the whole layer).
    """

    def __init__(self, *, bits, terms, per_channel=True):
        super().__init__()
        arith.check_bits(wbits=bits, terms=terms)
        self.bits, self.per_channel = bits, per_channel
        self.levels = level_set(bits, terms)
        self.wbits, self.terms = self.levels.hw_wbits, self.levels.terms
        # the authors' initial clip for standardised weights; setup() refines it
        self.alpha = nn.Parameter(torch.tensor(3.0))

    def _std(self, w):
        w = w.detach()
        std = w.flatten(1).std(dim=1) if self.per_channel else w.std().expand(w.shape[0])
        return torch.where(std > 0, std, torch.ones_like(std))

    def _unit(self, w, alpha):
        """Per channel: the power-of-two unit of one integer level (straight-through to
        ``alpha * std / top``) and its exponent ``e0``."""
        return pow2_exponent_ste(alpha * self._std(w) / self.levels.top)

    def _values(self, w, e):
        """Integer levels (signed) of ``w`` in units of ``2**e``: nearest level of ``clip(|w|)``."""
        units = w.detach() * channel_view(torch.exp2(-e), w)
        idx = nearest_level(units.abs().clamp(max=self.levels.top), self.levels.values)
        return torch.sign(units), idx

    def codes(self, w):
        _, e = self._unit(w, self.alpha.detach())
        sign, idx = self._values(w, e)
        value = sign * self.levels.values[idx]
        neg = (sign < 0).long()
        zero = self.levels.zero[idx].movedim(-1, 0)
        sign_codes = neg.unsqueeze(0).expand_as(zero).masked_fill(zero, 0)
        return WeightCodes(sign=sign_codes.contiguous(), shift=self.levels.shift[idx].movedim(-1, 0).contiguous(),
                           zero=zero.contiguous(), e0=e.long(), value=value)

    def forward(self, w):
        unit, e = self._unit(w, self.alpha)
        sign, idx = self._values(w, e)
        value = sign * self.levels.values[idx]
        q = value * channel_view(torch.exp2(e), w)
        return exact(q, self.rcf(w, channel_view(unit * self.levels.top, w), value / self.levels.top)), e.long()

    @staticmethod
    def rcf(w, clip, proj):
        """``clip * Proj(clip(w / clip, -1, 1))`` with the reparameterised clipping function's
        gradients: to ``clip``, ``sign(w)`` outside and ``Proj(x) - x`` inside (``x = w / clip``);
        to ``w``, 1 inside and 0 outside.  ``proj`` is the projection already computed."""
        x = torch.clamp(w / clip, -1.0, 1.0)
        return (x + (proj - x).detach()) * clip

    @torch.no_grad()
    def init_alpha(self, w, candidates=torch.linspace(0.25, 5.0, 39)):
        """Choose the initial ``alpha`` with the least squared error on ``w`` among ``candidates``."""
        errs = []
        for a in candidates:
            _, e = self._unit(w, a)
            sign, idx = self._values(w, e)
            q = sign * self.levels.values[idx] * channel_view(torch.exp2(e), w)
            errs.append((q - w).pow(2).sum())
        self.alpha.fill_(float(candidates[int(torch.argmin(torch.stack(errs)))]))

    def extra_repr(self):
        return (f"bits={self.bits}, terms={self.terms}, hardware wbits={self.wbits}, "
                f"per_channel={self.per_channel}")


class APoTActQuant(LearnedStepAct):
    """APoT's activation quantiser with uniform levels (the hardware's unsigned codes):
    ``alpha * round(clip(x / alpha, 0, 1) * QP) / QP`` with a learned clip ``alpha`` and the
    reparameterised clipping gradient; the step ``alpha / QP`` is made a power of two."""

    def __init__(self, *, bits):
        super().__init__(bits=bits)
        self.alpha = nn.Parameter(torch.ones(()))

    def learned_step(self, n):
        return self.alpha / self.qmax

    @torch.no_grad()
    def set_step(self, s):
        self.alpha.fill_(max(float(s), 2.0**-24) * self.qmax)

    @torch.no_grad()
    def observe(self, x):
        """Initial ``alpha``: the shared least-squared-error exponent's range ``QP * 2**-exp``."""
        QuantReLU.observe(self, x)
        self.set_step(2.0 ** -int(self.exp))


class APoT(LearnedScaleMethod):
    """Additive powers-of-two weights with learned clipping; learned-clip uniform activations."""

    label = "apot"

    def weight_quant(self):
        c = self.cfg
        return APoTWeightQuant(bits=c.wbits, terms=c.terms, per_channel=c.per_channel)

    def act_quant(self, bits):
        return APoTActQuant(bits=bits)

    def init_layer(self, layer):
        layer.weight_quant.init_alpha(layer.folded()[0])

    def describe(self):
        c = self.cfg
        lv = level_set(c.wbits, c.terms)
        return (f"{self.label} W{c.wbits}/A{c.abits} ({lv.terms} term{'s' if lv.terms > 1 else ''} "
                f"of {lv.hw_wbits}-bit hardware codes)")
