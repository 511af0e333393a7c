"""``direct``: direct updating of quantised weights with learnable levels, and channel-aware
activation quantisers (Hoang, Do, Nguyen, Cheung, IJCAI 2020, arXiv 2012.13762).

Weights: the layer's weight tensor *is* the quantised weight; there is no full-precision
copy.  The gradient updates it and the learnable levels together, and after every optimiser
step each weight is projected back onto the level set, stochastically between its two
neighbouring levels with probabilities that make the projection unbiased, so a step smaller
than a level gap still moves the weight in expectation.  The levels are learned in units of
the channel's ``2**e0`` and mapped, inside the forward pass, to the nearest greedy sum of
``terms`` powers of two in the shift window (straight-through to the learned level).

Activations: the exponent minimises the quantisation error of the majority of channels: each
candidate's squared error is normalised per channel by that channel's mean square, and the
candidate with the least median normalised error wins, so a few high-variance channels do not
decide the range.
"""

import torch
from torch import nn

from core import arith

from ..layers import QuantReLU
from ..quantizers import exact, pow2_sum_codes, ste
from .base import FoldedMethod, channel_view
from .ptq import choose_window


#: windows tried below INQ's, per channel, when the weights are first quantised
CLIP_STEPS = 3


class DirectWeightQuant(nn.Module):
    """Quantised weights stored as such, on learnable levels mapped to sums of powers of two.

    State: ``e0`` (per output channel, fixed at set-up from the float weights' range),
    ``index`` (per weight: 0 for zero, ``±k`` for the ``k``-th level with that sign) and the
    parameter ``levels`` (``2**(wbits-1) - 1`` magnitudes in units of ``2**e0``, initialised to
    the powers of two ``1, 2, 4, ...``).
    """

    def __init__(self, *, wbits, terms, per_channel=True):
        super().__init__()
        arith.check_bits(wbits=wbits, terms=terms)
        self.wbits, self.terms, self.per_channel = wbits, terms, per_channel
        n = arith.shift_levels(wbits)
        self.levels = nn.Parameter(torch.exp2(torch.arange(n, dtype=torch.float32)))

    def allocate(self, weight):
        """Size ``e0`` and ``index`` for ``weight`` (before any state is loaded)."""
        self.register_buffer("e0", torch.zeros(weight.shape[0], dtype=torch.long))
        self.register_buffer("index", torch.zeros(weight.shape, dtype=torch.int8))

    def level_values(self):
        """The learned levels as the hardware runs them: greedy sums of ``terms`` shifts, in
        units of ``2**e0``, with a straight-through gradient to ``levels``."""
        n = arith.shift_levels(self.wbits)
        hw = pow2_sum_codes(self.levels.detach(), None, n, self.terms, values_only=True).value
        return ste(self.levels, hw)

    def _values(self, table):
        """Integer weights (units of ``2**e0``) looked up from ``index`` in ``table`` (the levels)."""
        idx = self.index.long()
        mags = torch.cat([table.new_zeros(1), table])[idx.abs()]
        return torch.sign(idx).to(table.dtype) * mags

    def init_from(self, w):
        """Set ``e0`` and each weight to its nearest power-of-two level.

        Per channel ``e0`` is the window, among INQ's (top level nearest to ``max|w|``) and the
        three below it, with the least squared error: the weights never return to float, so
        the window is chosen once for the bulk of the weights rather than for the largest.
        """
        self.e0.copy_(choose_window(w, self.wbits, 1, "mse", self.per_channel, clip_steps=CLIP_STEPS))
        self.project(w, stochastic=False)

    @torch.no_grad()
    def project(self, w, *, stochastic=True, generator=None):
        """Move each weight of ``w`` (in place) onto the level set and record its ``index``.

        Between the two levels around ``|w|`` the upper one is taken with probability
        ``(|w| - lower) / (upper - lower)`` (deterministically: the nearer one); beyond the top
        level the top level.
        """
        units = w / channel_view(torch.exp2(self.e0.to(w.dtype)), w)
        table = torch.cat([units.new_zeros(1), self.level_values().detach()])
        table, order = torch.sort(table)  # learned levels may cross; keep the lookup monotone
        a = units.abs().clamp(max=float(table[-1]))
        upper = torch.searchsorted(table, a.contiguous()).clamp(1, table.numel() - 1)
        lo, hi = table[upper - 1], table[upper]
        frac = ((a - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
        if stochastic:
            up = torch.rand(a.shape, generator=generator, device=a.device) < frac
        else:
            up = frac >= 0.5
        pos = torch.where(up, upper, upper - 1)
        k = order[pos]  # index into [0, levels...]
        self.index.copy_((torch.sign(units) * k).to(torch.int8))
        w.copy_(self._values(self.level_values().detach()) * channel_view(torch.exp2(self.e0.to(w.dtype)), w))

    def codes(self, w):
        n = arith.shift_levels(self.wbits)
        return pow2_sum_codes(self._values(self.level_values().detach()), self.e0, n, self.terms)

    def forward(self, w):
        # the stored weight equals the looked-up one; the sum routes the gradient to both
        q = self._values(self.level_values()) * channel_view(torch.exp2(self.e0.to(w.dtype)), w)
        return exact(q, w), self.e0

    def extra_repr(self):
        return f"wbits={self.wbits}, terms={self.terms}, per_channel={self.per_channel}"


class ChannelAwareActQuant(QuantReLU):
    """Activation exponent chosen for the majority of channels (least median per-channel relative error)."""

    def _columns(self, x, sample):
        """``x`` (B, C, ...) as (C, positions): every position of the batch, or, when they are more
        than ``sample // C``, that many drawn at random, the same for every channel.  A batch
        split over processes gives the global batch's columns (:class:`~quant.quantizers.ActQuant`)."""
        channels = x.shape[1]
        wanted = max(1, sample // channels)
        if self.world is None or not self.world.sharded:
            per_channel = x.transpose(0, 1).flatten(1)
            if per_channel.shape[1] > sample // max(1, channels):
                per_channel = per_channel[:, torch.randint(per_channel.shape[1], (wanted,))]
            return per_channel
        per = x[0, 0].numel()  # positions per channel in one sample
        total = self.world.batch * per
        cols = torch.randint(total, (wanted,)) if total > sample // max(1, channels) else torch.arange(total)
        # column j is position j % per of sample j // per; its element of channel c in the flat batch:
        index = (cols // per * channels * per + cols % per)[None, :] + (torch.arange(channels) * per)[:, None]
        return self.world.batch_elements(x, index.flatten()).view(channels, -1)

    @torch.no_grad()
    def observe(self, x):
        x = x.detach().clamp(min=0)
        per_channel = self._columns(x, self.sample)  # (channels, samples)
        top = per_channel.max()
        if top <= 0:
            return
        base = torch.floor(torch.log2(self.qmax / top))
        cands = base + torch.arange(4, dtype=x.dtype)
        power = per_channel.pow(2).mean(dim=1)
        live = power > 0
        if not live.any():
            return
        errs = []
        for c in cands:
            scale = 2.0 ** float(c)
            q = (per_channel * scale + 0.5).floor().clamp(0, self.qmax) / scale
            rel = (q - per_channel).pow(2).mean(dim=1)[live] / power[live]
            errs.append(rel.median())
        self.record(cands[int(torch.argmin(torch.stack(errs)))])


class Direct(FoldedMethod):
    """Directly updated quantised weights on learned levels; channel-aware activation exponents."""

    label = "direct"

    def __init__(self, cfg):
        super().__init__(cfg)

    def weight_quant(self):
        c = self.cfg
        return DirectWeightQuant(wbits=c.wbits, terms=c.terms, per_channel=c.per_channel)

    def act_quant(self, bits):
        return ChannelAwareActQuant(bits=bits)

    def init_layer(self, layer):
        layer.weight_quant.init_from(layer.weight)

    def after_step(self, net):
        for m in net.weighted_layers():
            # the global generator: a checkpoint saves its state, so a resumed run draws the same
            m.weight_quant.project(m.weight.data)

