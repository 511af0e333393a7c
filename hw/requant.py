"""The per-column requantiser: round-half-up arithmetic shift, then ReLU and clamp."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import HwConfig


class Requantizer(wiring.Component):
    """``out = round_shift(acc, shift)``, clamped to ``[0, amax]`` when ``relu``.

    Exactly :func:`quant.arith.requantize`: for ``shift >= 0`` the result is
    ``floor((acc + 2**(shift-1)) / 2**shift)``, computed as
    ``((2*acc >> shift) + 1) >> 1`` (one barrel shifter and an incrementer, no constant
    table); for ``shift < 0`` it is ``acc << -shift``.  Any ``shift >= acc_bits`` gives 0,
    so the host clamps larger shifts to ``acc_bits``.  Combinational.

    Parameters
    ----------
    cfg : HwConfig
        ``acc_bits``, ``rq_bits`` (shift range ``[-max_left, acc_bits]``), ``out_bits``.
    """

    def __init__(self, cfg):
        if not isinstance(cfg, HwConfig):
            raise TypeError(f"cfg must be an HwConfig, not {cfg!r}")
        self.cfg = cfg
        super().__init__({
            "acc": In(signed(cfg.acc_bits)),
            "shift": In(signed(cfg.rq_bits)),
            "relu": In(1),
            "amax": In(cfg.abits),
            "out": Out(signed(cfg.out_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        right = Signal(unsigned(cfg.rq_bits), name="right")
        left = Signal(unsigned(cfg.rq_bits), name="left")
        m.d.comb += [right.eq(Mux(self.shift[-1], 0, self.shift)), left.eq(Mux(self.shift[-1], -self.shift, 0))]

        doubled = Signal(signed(cfg.acc_bits + 1), name="doubled")
        halved = Signal(signed(cfg.acc_bits + 1), name="halved")
        rounded = Signal(signed(cfg.acc_bits + 1), name="rounded")
        m.d.comb += [
            doubled.eq(self.acc << 1),
            halved.eq(doubled >> right),
            rounded.eq((halved + 1) >> 1),
        ]
        shifted = Signal(signed(cfg.out_bits), name="shifted")
        m.d.comb += shifted.eq(Mux(self.shift[-1], self.acc << left, rounded))

        with m.If(self.relu & shifted[-1]):
            m.d.comb += self.out.eq(0)
        with m.Elif(self.relu & (shifted > self.amax)):
            m.d.comb += self.out.eq(self.amax)
        with m.Else():
            m.d.comb += self.out.eq(shifted)
        return m
