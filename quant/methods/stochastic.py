"""``stochastic``: limited numerical precision with stochastic rounding (Gupta, Agrawal,
Gopalakrishnan, Narayanan, ICML 2015, arXiv 1502.02551).

Fixed point ``<IL, FL>`` with ``eps = 2**-FL``: ``x`` rounds up to ``floor_eps(x) + eps`` with
probability ``(x - floor_eps(x)) / eps``, else down, then saturates; the rounding is unbiased.
``--stochastic`` names where it is used in training:

``update`` (the default: Gupta et al.'s method)
    The parameters are stored as 16-bit fixed-point words with ``--update-frac-bits`` fraction
    bits: after each optimiser step the layers' weights and biases are rounded stochastically
    to them, so an update smaller than ``eps`` still moves a weight in expectation.  The
    forward pass computes on the stored words, rounded to nearest to the hardware's
    ``--wbits`` integers (``uniform``'s code), exactly as the export rounds them: what trains
    is what deploys.
``acts`` (opt-in)
    Activation codes are rounded stochastically in training; eval and export round half up.
``weights`` (opt-in)
    The forward pass re-samples the ``--wbits`` integer weights each step by rounding the
    stored words stochastically (not Gupta et al.'s method: the deployed network rounds to
    nearest, so training and deployment see different weights).
"""

import torch

from core.errors import UserError

from ..layers import QuantReLU
from ..quantizers import UniformWeightQuant, ste, uniform_codes
from .base import Method, channel_view

#: what ``--stochastic`` may name
WHERE = ("update", "acts", "weights")
#: Gupta et al.'s word length for the stored parameters
WORD_BITS = 16


def parse_where(text):
    """The set of places ``--stochastic`` names (``none``: deterministic everywhere)."""
    words = [w.strip() for w in text.split(",")]
    if words == ["none"]:
        return frozenset()
    bad = [w for w in words if w not in WHERE]
    if bad:
        raise UserError(f"--stochastic: unknown {bad[0]!r}; give a comma list of {', '.join(WHERE)} (or none)")
    return frozenset(words)


def stochastic_round(x, generator=None):
    """``floor(x) + 1`` with probability ``x - floor(x)``, else ``floor(x)``: unbiased, ``E = x``."""
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return torch.floor(x + u)


def round_fixed(x, frac_bits, word_bits=WORD_BITS, generator=None):
    """``x`` stochastically rounded to a ``word_bits``-bit two's complement fixed-point number
    with ``frac_bits`` fraction bits, saturating at the word's range."""
    top = 2.0 ** (word_bits - 1)
    return torch.clamp(stochastic_round(x * 2.0**frac_bits, generator), -top, top - 1) * 2.0**-frac_bits


class StochasticWeightQuant(UniformWeightQuant):
    """``uniform``'s integer weights re-sampled by stochastic rounding in each training forward
    (straight-through); eval rounds to nearest (``--stochastic weights``, an opt-in)."""

    def forward(self, w):
        if not self.training:
            return super().forward(w)
        e0 = uniform_codes(w, self.wbits, self.per_channel).e0
        unit = channel_view(torch.exp2(e0.to(w.dtype)), w)
        qmax = 2 ** (self.wbits - 1) - 1
        value = torch.clamp(stochastic_round(w.detach() / unit), -qmax, qmax)
        return ste(w, value * unit), e0


class StochasticActQuant(QuantReLU):
    """Activation codes rounded stochastically in training (clipped straight-through gradient)."""

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        self.train_step(x)
        scale = 2.0 ** int(self.exp)
        if self.world is not None and self.world.sharded:
            # the noise of the global batch, this process's rows (quant.distributed)
            noise = self.world.draw(x, lambda shape: torch.rand(shape, dtype=x.dtype, device=x.device))
            codes = torch.clamp(torch.floor(x * scale + noise), 0, self.qmax)
        else:
            codes = torch.clamp(stochastic_round(x * scale), 0, self.qmax)
        return ste(torch.clamp(x, 0.0, self.qmax / scale), codes / scale)


class Stochastic(Method):
    """Uniform fixed point with stochastic rounding where ``--stochastic`` says (default: the
    update of the stored 16-bit parameters, Gupta et al.'s method)."""

    label = "stochastic"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.where = parse_where(cfg.stochastic)

    @classmethod
    def check(cls, cfg):
        super().check(cfg)
        parse_where(cfg.stochastic)
        if not 0 < cfg.update_frac_bits < WORD_BITS:
            raise UserError(f"--update-frac-bits must be between 1 and {WORD_BITS - 1} "
                            f"(fraction bits of a {WORD_BITS}-bit word), not {cfg.update_frac_bits}")

    def weight_quant(self):
        c = self.cfg
        cls = StochasticWeightQuant if "weights" in self.where else UniformWeightQuant
        return cls(wbits=c.wbits, per_channel=c.per_channel)

    def act_quant(self, bits):
        return StochasticActQuant(bits=bits) if "acts" in self.where else QuantReLU(bits=bits)

    def setup(self, net, dataset, source):
        self.after_step(net)  # the stored parameters are fixed point from the start
        super().setup(net, dataset, source)

    @torch.no_grad()
    def after_step(self, net):
        if "update" not in self.where:
            return
        for m in net.weighted_layers():
            for p in (m.weight, m.bias):
                if p is not None:
                    p.copy_(round_fixed(p, self.cfg.update_frac_bits))

    def describe(self):
        c = self.cfg
        where = ",".join(w for w in WHERE if w in self.where) or "none"
        fixed = f"<{WORD_BITS - c.update_frac_bits},{c.update_frac_bits}>"
        return f"{self.label} W{c.wbits}/A{c.abits} (stochastic: {where}; update {fixed})"
