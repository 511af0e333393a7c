"""The per-column requantiser: round-half-up arithmetic shift, then ReLU and clamp."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from core.hwconfig import HwConfig


class Requantizer(wiring.Component):
    """``out = requantize(acc, shift)`` of :func:`core.arith.requantize`, in two paths.

    ReLU layers (``relu`` high) need only an ``abits``-bit code, so nothing ``acc_bits``
    wide is shifted.  With ``L = max_left`` and ``e = acc << L`` (wiring only), the shift
    ``s`` becomes ``s' = s + L >= 0`` and ``round_shift(acc, s) = floor((e + 2**(s'-1)) / 2**s')``.
    A barrel shifter picks the ``abits + 1`` bits ``e[s'-1 .. s'+abits-1]`` (the rounding
    bit and the code), an incrementer rounds them, and the clamp to ``amax`` is taken when
    any bit of ``e`` at ``s' + abits`` or above is set (one comparison of ``s'`` with a
    constant per bit, no second shifter) or the rounded code passes ``amax``.  A negative
    ``acc`` gives 0: its rounded quotient is at most 0.

    Layers without ReLU (the logits) are only ever shifted left (``shift <= 0``, see
    :meth:`hw.plan.LayerPlan`): ``out = acc << -shift``, full width.

    Any ``shift >= acc_bits`` gives 0 on the ReLU path, so the host clamps larger shifts
    to ``acc_bits``.

    Pipelined, ``cfg.requant_stages`` (2) registers deep: stage 1 holds the selected bits,
    the clamp condition and the logit; stage 2 rounds, clamps and picks the path into
    ``out``, a register, so the engine's pooling and output memory behind it start at a
    flip-flop.  ``acc`` may change every cycle; ``shift`` must be set a cycle before the
    first value (it is registered, off the data path), and ``shift``, ``relu`` and ``amax``
    must hold while a value is inside.

    Parameters
    ----------
    cfg : HwConfig
        ``acc_bits``, ``abits``, ``max_left``, ``rq_bits`` (shift range ``[-max_left, acc_bits]``),
        ``out_bits``.
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
        lmax, ab = cfg.max_left, cfg.abits

        # --- ReLU path -------------------------------------------------------------
        ext_bits = cfg.acc_bits + lmax
        ext = Signal(unsigned(ext_bits + 1), name="ext")  # (acc << L) << 1, non-negative part
        s1 = Signal(unsigned(cfg.rq_bits + 1), name="s_ext")  # s' = shift + L, in [0, acc_bits + L]
        m.d.comb += ext.eq(Cat(Const(0, 1 + lmax), self.acc[:-1]))
        m.d.sync += s1.eq(self.shift + lmax)  # registered: the shift changes only between layers' passes
        # stage 1: e[s'-1 .. s'+abits-1], whether a bit of e at s' + abits or above is set
        # (bit i is when i >= s' + abits), the sign, and the logit
        window = Signal(unsigned(ab + 1), name="window")
        over = Signal(name="over")
        negative = Signal(name="negative")
        # bit i's test of s' against a constant, registered off the shift like s' itself, so
        # the clamp's OR starts at flip-flops
        bits = range(max(ab, lmax), ext_bits - 1)
        above = Signal(len(bits), name="above")  # above[k]: bit bits[k] of e is at s' + abits or above
        m.d.sync += above.eq(Cat(self.shift <= i - ab - lmax for i in bits))
        high = [self.acc[i - lmax] & above[k] for k, i in enumerate(bits)]
        left = Signal(range(lmax + 1), name="left")
        m.d.sync += left.eq(Mux(self.shift[-1], -self.shift, 0))
        logit = Signal(signed(cfg.out_bits), name="logit")
        m.d.sync += [
            window.eq(ext >> s1),
            over.eq(Cat(*high).any() if high else 0),
            negative.eq(self.acc[-1]),
            logit.eq(self.acc << left),
        ]

        # stage 2: round, clamp, choose the path, into out (a register: on the iCE40 this
        # logic and the route on to the output memory were the critical path)
        rounded = Signal(unsigned(ab + 1), name="rounded")
        m.d.comb += rounded.eq((window + 1) >> 1)
        code = Signal(unsigned(ab), name="code")
        with m.If(negative):
            m.d.comb += code.eq(0)
        with m.Elif(over | (rounded > self.amax)):
            m.d.comb += code.eq(self.amax)
        with m.Else():
            m.d.comb += code.eq(rounded)
        m.d.sync += self.out.eq(Mux(self.relu, code, logit))
        return m
