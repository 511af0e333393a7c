"""Formal proof harnesses: the PE, requantiser, array and accumulator widths against the integer contract.

Each harness is an Amaranth elaboratable that wraps one of the project's own components
(:class:`hw.pe.ShiftPE`, :class:`hw.requant.Requantizer`, :class:`hw.array.SystolicArray`)
with free inputs (``AnySeq``/``AnyConst``), a model built from :mod:`core.arith` and
:mod:`core.codes`, and ``Assert`` statements comparing the two.  :mod:`sim.sby` turns one
into a SymbiYosys job and runs it.

Where the model needs a number (a term's weight, a product bound, an activation maximum,
an accumulator width), it takes it from the contract: the weight of every term code is
``core.arith.weight_value(*core.codes.decode_terms(code))``, the widths are
``HwConfig``'s.  The one formula written here as logic is the round-half-up shift of
:func:`core.arith.round_shift` (:func:`requantize_expr`), and ``tests/sim/test_formal.py``
evaluates it against :func:`core.arith.requantize` on concrete values.

A harness names the signals a counterexample is read from (:attr:`Proof.probes`) and
turns their values at the failing step back into the contract's terms (:meth:`Proof.explain`).
"""

import dataclasses

import numpy as np
from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import Array, Assert, Assume, Cat, Const, Elaboratable, Fragment, Module, Mux, Signal, signed

from core import arith, codes
from core.hwconfig import HwConfig
from hw.array import SystolicArray
from hw.pe import ShiftPE
from hw.requant import Requantizer

# --- the contract as logic ---------------------------------------------------------------------


def term_weights(wbits):
    """The integer weight of every ``wbits``-bit term code, indexed by the code:
    :func:`core.arith.weight_value` of :func:`core.codes.decode_terms`."""
    sign, shift, zero = codes.decode_terms(np.arange(2**wbits), wbits, 1)
    return [int(v) for v in arith.weight_value(sign, shift, zero)]


def product_expr(a, code, cfg):
    """``a * weight(code)`` for an activation ``a``: per term, a choice among the products of
    ``a`` with each constant of :func:`term_weights`, then their sum.  (A product with a
    constant is a shifted copy of ``a``; a solver proves that far faster than a general
    multiplication by a looked-up weight, and it is the same number.)"""
    def times(v):  # a * v; a power of two's magnitude as a shift
        if v == 0:
            return Const(0, 1)
        size = abs(v)
        magnitude = a << (size.bit_length() - 1) if size & (size - 1) == 0 else a * size
        return -magnitude if v < 0 else magnitude

    table = term_weights(cfg.wbits)
    total = Const(0, 1)
    for t in range(cfg.terms):
        choices = Array(times(v) for v in table)
        total = total + choices[code[t * cfg.wbits:(t + 1) * cfg.wbits]]
    return total


def describe_code(code, cfg):
    """A PE's code in the contract's terms, e.g. ``0b0011 = +2**3`` or ``0b1111 = 0``."""
    sign, shift, zero = codes.decode_terms(code, cfg.wbits, cfg.terms)
    parts = ["0" if z else f"{'-' if s else '+'}2**{e}" for s, e, z in zip(sign, shift, zero)]
    return f"{code:#0{cfg.code_bits + 2}b} = {' '.join(parts)} (weight {weight_of(code, cfg)})"


def weight_of(code, cfg):
    """The integer weight of a PE's code: :func:`core.arith.weight_value` of its terms."""
    return int(arith.weight_value(*codes.decode_terms(code, cfg.wbits, cfg.terms)))


def wrap(value, bits):
    """``value`` as a ``bits``-bit two's complement register holds it."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def requantize_expr(m, acc, shift, relu, amax, *, max_left, max_right):
    """:func:`core.arith.requantize` as logic: ``round_shift(acc, shift)`` (half up, an
    arithmetic shift right by ``shift > 0``, left by ``-shift``), then clamped to
    ``[0, amax]`` where ``relu``.  ``shift`` lies in ``[-max_left, max_right]``."""
    right = Signal(range(max_right + 1), name="spec_right")
    left = Signal(range(max_left + 1), name="spec_left")
    m.d.comb += [right.eq(Mux(shift > 0, shift, 0)), left.eq(Mux(shift < 0, -shift, 0))]
    wide = signed(len(acc) + max_left + 2)
    half = Signal(wide, name="spec_half")  # 2**(right-1), 0 without a right shift
    m.d.comb += half.eq((Const(1, len(acc) + 2) << right) >> 1)
    shifted = Signal(wide, name="spec_shifted")
    with m.If(shift > 0):
        m.d.comb += shifted.eq((acc + half) >> right)
    with m.Else():
        m.d.comb += shifted.eq(acc << left)
    out = Signal(wide, name="spec_out")
    with m.If(relu & (shifted < 0)):
        m.d.comb += out.eq(0)
    with m.Elif(relu & (shifted > amax)):
        m.d.comb += out.eq(amax)
    with m.Else():
        m.d.comb += out.eq(shifted)
    return out


# --- harnesses ---------------------------------------------------------------------------------


def internal_signals(fragment):
    """``{name: Signal}`` of every signal assigned inside an elaborated design and its
    submodules: the registers an induction proof states invariants about."""
    found = {}
    for statements in fragment.statements.values():
        for stmt in statements:
            for sig in stmt._lhs_signals():
                found.setdefault(sig.name, sig)
    for sub, _name, _src in fragment.subfragments:
        for name, sig in internal_signals(sub).items():
            found.setdefault(name, sig)
    return found


def delayed(m, value, cycles, en, *, name, data=False):
    """``value`` through ``cycles`` registers that advance while ``en`` is high; returns every
    stage.  ``data`` registers take no reset, as the array's data registers."""
    stages = []
    for i in range(cycles):
        reg = Signal.like(value, name=f"{name}_{i}", reset_less=data)
        with m.If(en):
            m.d.sync += reg.eq(value)
        stages.append(reg)
        value = reg
    return stages


class Proof(Elaboratable):
    """A proof harness for one block and one :class:`~core.hwconfig.HwConfig`.

    Attributes
    ----------
    block : str
        What it proves, as the table names it.
    mode : str
        SymbiYosys mode: ``"prove"`` (k-induction: for every number of cycles) or ``"bmc"``
        (every input sequence of ``depth`` cycles from reset).
    depth : int
        The induction (or BMC) depth.
    probes : dict of str to Signal
        The signals a counterexample is read from, by name (filled while elaborating).
    """

    block = None
    mode = "prove"

    @property
    def name(self):
        """The job's name (its folder): the block, and the part of it where a block is split."""
        return self.block

    def __init__(self, cfg):
        self.cfg = cfg
        self.probes = {}

    def probe(self, sig):
        """Name ``sig`` a probe, kept (not optimised away) so the trace shows it."""
        sig.attrs["keep"] = 1
        self.probes[sig.name] = sig
        return sig

    def explain(self, values):
        """The failing step's ``values`` (``{probe name: int}``) in the contract's terms."""
        raise NotImplementedError


class PEProof(Proof):
    """:class:`~hw.pe.ShiftPE`: ``s_out`` is ``s_in + a_in * weight(code)`` of the cycle(s)
    before, for every activation and weight code, and the weight chain and activation
    register pass their values on; proven by induction with ``en``, ``w_shift``, ``w_in``,
    ``a_in`` and ``s_in`` free every cycle.

    ``make_pe`` builds the PE (a subclass, for the test that breaks one on purpose).
    """

    block = "pe"

    def __init__(self, cfg, *, make_pe=ShiftPE):
        super().__init__(cfg)
        self.make_pe = make_pe

    @property
    def depth(self):
        return 2 + self.cfg.pipeline_stages

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        pe = self.make_pe(cfg, name="pe")
        fragment = Fragment.get(pe, platform)
        m.submodules.pe = fragment
        bits = pe.psum_bits
        m.d.comb += [pe.en.eq(AnySeq(1)), pe.a_in.eq(AnySeq(cfg.abits)), pe.s_in.eq(AnySeq(signed(bits))),
                     pe.w_shift.eq(AnySeq(1)), pe.w_in.eq(AnySeq(cfg.code_bits))]

        # the model: the weight register, the activation register and the sum, without a
        # reset, as the PE's (a reset held in any cycle leaves them all as they were)
        code = self.probe(Signal(cfg.code_bits, name="model_code", reset_less=True))
        with m.If(pe.w_shift):
            m.d.sync += code.eq(pe.w_in)
        a = self.probe(Signal(cfg.abits, name="model_a", reset_less=True))
        acc = self.probe(Signal(signed(bits), name="model_acc", reset_less=True))
        product = Signal(signed(cfg.product_bits + cfg.terms + 2), name="model_product")
        m.d.comb += product.eq(product_expr(pe.a_in, code, cfg))
        # what made model_acc: the activation, the code and the partial sum it was added to
        cx_a = self.probe(Signal(cfg.abits, name="cx_a", reset_less=True))
        cx_code = self.probe(Signal(cfg.code_bits, name="cx_code", reset_less=True))
        cx_s_in = self.probe(Signal(signed(bits), name="cx_s_in", reset_less=True))
        with m.If(pe.en):
            m.d.sync += a.eq(pe.a_in)
            if cfg.pipeline:
                staged = Signal.like(product, name="model_staged", reset_less=True)
                staged_a, staged_code = (Signal.like(cx_a, name="staged_a", reset_less=True),
                                         Signal.like(code, name="staged_code", reset_less=True))
                m.d.sync += [staged.eq(product), staged_a.eq(pe.a_in), staged_code.eq(code),
                             acc.eq(pe.s_in + staged), cx_a.eq(staged_a), cx_code.eq(staged_code)]
            else:
                m.d.sync += [acc.eq(pe.s_in + product), cx_a.eq(pe.a_in), cx_code.eq(code)]
            m.d.sync += cx_s_in.eq(pe.s_in)

        for port in (pe.w_out, pe.a_out, pe.s_out):
            self.probe(port)
        m.d.comb += [Assert(pe.w_out == code, "the weight chain passes the loaded code on"),
                     Assert(pe.a_out == a, "the activation moves right one register a cycle"),
                     Assert(pe.s_out == acc, "s_out is s_in plus the activation times the weight")]
        if cfg.pipeline:
            # the one register the ports do not show: its addends and carries are the product
            inside = internal_signals(fragment)
            held = sum(inside[f"pe_p{t}"] for t in range(cfg.terms)) + sum(inside[f"pe_c{t}"] for t in range(cfg.terms))
            m.d.comb += Assert(held == staged, "the pipeline register holds the product of the activation it took")
        return m

    def explain(self, v):
        cfg, bits = self.cfg, len(self.probes["model_acc"])
        if v["w_out"] != v["model_code"]:
            return f"weight chain: loaded code {describe_code(v['model_code'], cfg)}, w_out {v['w_out']:#b}"
        if v["a_out"] != v["model_a"]:
            return f"activation register: expected {v['model_a']}, got {v['a_out']}"
        w = weight_of(v["cx_code"], cfg)
        want = wrap(v["cx_s_in"] + v["cx_a"] * w, bits)
        return (f"activation code {v['cx_a']}, weight code {describe_code(v['cx_code'], cfg)}, s_in {v['cx_s_in']}: "
                f"expected s_out {v['cx_s_in']} + {v['cx_a']} * {w} = {want}, got {v['s_out']}")


class RequantizerProof(Proof):
    """:class:`~hw.requant.Requantizer`: ``out`` equals :func:`core.arith.requantize` of the
    ``acc`` given ``cfg.requant_stages`` cycles before, for every ``acc_bits``-bit value,
    every shift in ``[-max_left, acc_bits]`` with ReLU (``[-max_left, 0]`` without, as the
    planner allows) and every activation maximum ``2**b - 1``, ``b <= abits``.

    The shift, ``relu`` and ``amax`` are free constants (they hold while values pass, as
    the component asks); ``acc`` is free every cycle.
    """

    block = "requantizer"

    @property
    def depth(self):
        return self.cfg.requant_stages + 3

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.rq = rq = Requantizer(cfg)
        shift = self.probe(Signal(signed(cfg.rq_bits), name="shift"))
        relu = self.probe(Signal(name="relu"))
        amax = self.probe(Signal(cfg.abits, name="amax"))
        m.d.comb += [shift.eq(AnyConst(signed(cfg.rq_bits))), relu.eq(AnyConst(1)), amax.eq(AnyConst(cfg.abits)),
                     rq.acc.eq(AnySeq(signed(cfg.acc_bits))), rq.shift.eq(shift), rq.relu.eq(relu),
                     rq.amax.eq(amax)]
        maxima = [arith.act_max(b) for b in range(1, cfg.abits + 1)]
        m.d.comb += [Assume(Cat(*(amax == v for v in maxima)).any()),
                     Assume(shift >= -cfg.max_left),
                     Assume(shift <= Mux(relu, cfg.acc_bits, 0))]

        stages = delayed(m, rq.acc, cfg.requant_stages, Const(1), name="acc_d")
        acc = self.probe(stages[-1])
        warm = Signal(range(cfg.requant_stages + 2), name="warm")  # the shift register and the stages filled
        with m.If(warm < cfg.requant_stages + 1):
            m.d.sync += warm.eq(warm + 1)
        want = self.probe(requantize_expr(m, acc, shift, relu, amax, max_left=cfg.max_left, max_right=cfg.acc_bits))
        self.probe(rq.out)
        with m.If(warm == cfg.requant_stages + 1):
            m.d.comb += Assert(rq.out == want, "out is the round-half-up shift, ReLU and clamp of core.arith")
        return m

    def explain(self, v):
        acc = v[f"acc_d_{self.cfg.requant_stages - 1}"]
        out_bits = (v["amax"] + 1).bit_length() - 1  # amax is 2**out_bits - 1
        want = int(arith.requantize(acc, v["shift"], bool(v["relu"]), out_bits))
        return (f"acc {acc}, shift {v['shift']}, relu {v['relu']}, {out_bits}-bit output: "
                f"expected {want} (core.arith.requantize), got {v['out']}")


class ArrayProof(Proof):
    """:class:`~hw.array.SystolicArray` as the layer engine uses it (partial sums of
    ``dot_bits``, ``s_in`` zero): every ``s_valid`` result is the dot product (modulo
    ``2**dot_bits``; :class:`AccumulatorProof` shows the exact sum fits) of the activation
    vector given :attr:`~hw.array.SystolicArray.latency` cycles with ``en`` high before and
    the weights each row held as the vector passed it, and ``s_valid`` is ``valid`` as late.

    ``en``, ``valid``, the activations and the weight loads (``w_load``, ``w_in``) are free
    every cycle: stalls of any length, any weight codes loaded at any time, also while
    vectors are inside, as the engine loads the next pass's weights behind the last
    vectors of the current one.  Proven by induction over any number of cycles.

    The induction states what every register holds (the ports show too little of it): the
    skew and deskew registers, each PE's activation, pipeline register and partial sum, as
    the array's documented schedule places each vector (row ``k`` delayed ``k`` cycles,
    column ``n`` ``n`` more, one more with the pipeline); the weight-load chain and each PE's
    weight; a partial sum only for a valid vector.  The reset is free too: the model's
    histories of data take none, as the array's data registers, and its ``valid`` and
    ``w_load`` histories take it, as the array's chains.

    ``column``: check that column only (its PEs, and the activations passing the ones to
    its left), a smaller problem; one job per column covers the array.
    """

    block = "array"
    depth = 2

    def __init__(self, cfg, *, column=None):
        super().__init__(cfg)
        if column is not None and not 0 <= column < cfg.cols:
            raise ValueError(f"column must be in 0..{cfg.cols - 1}, not {column!r}")
        self.column = column

    @property
    def columns(self):
        """The columns whose results are checked."""
        return range(self.cfg.cols) if self.column is None else [self.column]

    @property
    def name(self):
        return self.block if self.column is None else f"{self.block}-col{self.column}"

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        array = SystolicArray(cfg, psum_bits=cfg.dot_bits)
        latency, p = array.latency, cfg.pipeline_stages
        fragment = Fragment.get(array, platform)
        m.submodules.array = fragment
        inside = internal_signals(fragment)
        en = Signal(name="en")
        m.d.comb += [en.eq(AnySeq(1)), array.en.eq(en), array.valid.eq(AnySeq(1)), array.w_load.eq(AnySeq(1)),
                     array.a.as_value().eq(AnySeq(len(array.a.as_value()))),
                     array.w_in.as_value().eq(AnySeq(len(array.w_in.as_value()))),
                     array.s_in.as_value().eq(0)]

        # the weights as the PEs take them: PE (k, n) the codes of lane g = k // R, column n,
        # as w_in gave them g * R + n cycles before, k + n cycles after w_load
        R, code_bits, lane_bits = cfg.load_rows, cfg.code_bits, cfg.cols * cfg.code_bits
        load_hist = delayed(m, array.w_load, cfg.rows + cfg.cols - 2, 1, name="load_hist")
        writes = [array.w_load] + load_hist
        lane_now = [array.w_in.as_value()[g * lane_bits:(g + 1) * lane_bits] for g in range(cfg.wgt_lanes)]
        lane_hist = [delayed(m, lane_now[g], g * R + cfg.cols - 1, 1, name=f"lane_hist_{g}", data=True)
                     for g in range(cfg.wgt_lanes)]

        def lane_code(g, n, age):  # column n of lane g as w_in gave it `age` cycles ago
            lane = lane_now[g] if age == 0 else lane_hist[g][age - 1]
            return lane[n * code_bits:(n + 1) * code_bits]

        weights = [[Signal(code_bits, name=f"w_{k}_{n}", reset_less=True) for n in range(cfg.cols)] for k in range(cfg.rows)]
        for k in range(cfg.rows):
            g = k // R
            for n in range(cfg.cols):
                with m.If(writes[k + n]):
                    m.d.sync += weights[k][n].eq(lane_code(g, n, g * R + n))

        # the vectors in flight, by age: index i entered i + 1 cycles (with en high) ago; with
        # each, its product with PE (k, n)'s weight, taken in the cycle it reaches the PE:
        # index i of p_hist[k, n] is the vector of age k + n + i
        a_hist = [delayed(m, array.a[k], latency, en, name=f"a_hist_{k}", data=True) for k in range(cfg.rows)]
        valid_hist = delayed(m, array.valid, latency, en, name="valid_hist")

        def at_pe(k, n):  # the activation reaching PE (k, n) now
            return array.a[k] if k + n == 0 else a_hist[k][k + n - 1]

        p_hist = {(k, n): delayed(m, product_expr(at_pe(k, n), weights[k][n], cfg), latency - k - n, en,
                                  name=f"p_hist_{k}_{n}", data=True)
                  for k in range(cfg.rows) for n in self.columns}

        def dot(n, age, rows):
            """Column ``n``'s sum over ``rows`` of the products of the vector of that age,
            modulo ``2**dot_bits`` as the array's registers hold it (the widths proof shows
            the exact sum fits)."""
            return sum(p_hist[k, n][age - k - n] for k in rows)[:cfg.dot_bits].as_signed()

        # what every register holds, by the schedule (hw/array.py).  Each step of the
        # induction then compares one PE's addend with one product, both of the same cycle.
        for i in range(latency):
            m.d.comb += Assert(inside[f"valid_d{i}"] == valid_hist[i])
        for d in range(1, cfg.rows + cfg.cols - 1):
            m.d.comb += Assert(inside[f"w_load_{d}_d0"] == load_hist[d - 1])
        for g in range(cfg.wgt_lanes):
            for i in range(g * R):
                m.d.comb += Assert(inside[f"w_lane_{g}_d{i}"] == lane_hist[g][i])
            for n in range(cfg.cols):
                for i in range(n):
                    m.d.comb += Assert(inside[f"w_col_{g}_{n}_d{i}"] == lane_code(g, n, g * R + i + 1))
        for k in range(cfg.rows):
            for i in range(k):
                m.d.comb += Assert(inside[f"a_skew_{k}_d{i}"] == a_hist[k][i])
        for n in self.columns:
            for i in range(n + p):
                m.d.comb += Assert(inside[f"s_skew_{n}_d{i}"] == 0)
            for k in range(cfg.rows):
                m.d.comb += Assert(inside[f"pe_{k}_{n}_code"] == weights[k][n], "PE (k, n) holds the weight loaded")
                for c in range(n + 1):  # the activations of row k pass the PEs left of n
                    m.d.comb += Assert(inside[f"pe_{k}_{c}_a"] == a_hist[k][k + c])
                if p:
                    held = sum(inside[f"pe_{k}_{n}_p{t}"] + inside[f"pe_{k}_{n}_c{t}"] for t in range(cfg.terms))
                    with m.If(valid_hist[k + n]):
                        m.d.comb += Assert(held == p_hist[k, n][0])
                with m.If(valid_hist[k + n + p]):
                    m.d.comb += Assert(inside[f"pe_{k}_{n}_acc"] == dot(n, k + n + p, range(k + 1)))
            bottom = cfg.rows - 1 + n + p
            for i in range(cfg.cols - 1 - n):
                with m.If(valid_hist[bottom + 1 + i]):
                    m.d.comb += Assert(inside[f"s_deskew_{n}_d{i}"] == dot(n, bottom + 1 + i, range(cfg.rows)))

        # the ports: what the engine reads
        m.d.comb += Assert(array.s_valid == valid_hist[-1], "s_valid is valid `latency` cycles late")
        for k in range(cfg.rows):
            for age in range(latency):
                self.probe(a_hist[k][age])
        for age in range(latency):
            self.probe(valid_hist[age])
        for k in range(cfg.rows):  # copies of the partial sums at the top, where the trace is read
            for n in self.columns:
                seen = Signal.like(inside[f"pe_{k}_{n}_acc"], name=f"seen_pe_{k}_{n}_acc")
                m.d.comb += seen.eq(inside[f"pe_{k}_{n}_acc"])
                self.probe(seen)
                # what row k added to the vector of each age, as it passed
                for i, v in enumerate(p_hist[k, n]):
                    self.probe(v)
        self.probe(array.s_valid)
        for n in self.columns:
            for k in range(cfg.rows):
                self.probe(weights[k][n])
            # the contract: the vector's activations times the weights its rows held, summed
            want = Signal(signed(cfg.dot_bits), name=f"want_{n}")
            m.d.comb += want.eq(sum(p_hist[k, n][latency - 1 - k - n] for k in range(cfg.rows)))
            got = Signal(signed(cfg.dot_bits), name=f"got_{n}")
            m.d.comb += got.eq(array.s_out[n])
            self.probe(want), self.probe(got)
            with m.If(array.s_valid):
                m.d.comb += Assert(got == want, "a result is the dot product of its vector and the weights")
        return m

    def explain(self, v):
        cfg, L = self.cfg, self.cfg.latency
        acts = [v[f"a_hist_{k}_{L - 1}"] for k in range(cfg.rows)]
        for n in self.columns:
            # each row's addend as the vector passed it (the product with the weight then held)
            adds = [v[f"p_hist_{k}_{n}_{L - 1 - k - n}"] for k in range(cfg.rows)]
            want = wrap(sum(adds), cfg.dot_bits)
            if v["s_valid"] and v[f"got_{n}"] != want:
                return (f"column {n}: activation codes {acts} entered {L} cycles before; the rows added "
                        f"{adds} as it passed, {want} in all, got {v[f'got_{n}']}")
        for n in self.columns:
            for k in range(cfg.rows):
                age = k + n + cfg.pipeline_stages
                if not v[f"valid_hist_{age}"]:
                    continue
                adds = [v[f"p_hist_{j}_{n}_{age - j - n}"] for j in range(k + 1)]
                want = wrap(sum(adds), cfg.dot_bits)
                if v[f"seen_pe_{k}_{n}_acc"] != want:
                    return (f"PE ({k}, {n}): the partial sum of the vector that entered {age + 1} cycles before "
                            f"should be {' + '.join(map(str, adds))} = {want}, it holds {v[f'seen_pe_{k}_{n}_acc']}")
        return (f"s_valid {v['s_valid']}, or a register inside (see the failed assertion): "
                f"the schedule of {L} cycles does not hold")


class AccumulatorProof(Proof):
    """Widths, for any activation and weight codes (:func:`core.arith.product_bound` per
    product):

    * ``layer``: an accumulator of ``acc_bits`` (``HwConfig.acc_bits``, from
      :func:`core.arith.accumulator_bits`) that starts at any bias within the contract's
      bound plus any skip term up to its bound and adds up to ``max_fan_in`` products holds
      the exact sum: it never overflows;
    * ``pass``: the array's partial sums of ``dot_bits`` hold the exact sum of the ``rows``
      products of one pass (the array proof checks the sums modulo ``2**dot_bits``).

    Proven by induction over the whole fan-in, with the invariant
    ``|sum - start| <= count * product_bound(1)``.  ``bits`` replaces ``acc_bits`` (a test
    shows one bit fewer is not proven).
    """

    block = "widths"
    depth = 3

    def __init__(self, cfg, *, bits=None):
        super().__init__(cfg)
        self.bits = cfg.acc_bits if bits is None else bits

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        bias = cfg.arith.product_bound  # biases are clamped to the fan-in's bound
        self.accumulate(m, "layer", fan_in=cfg.max_fan_in, bits=self.bits, bias_bound=bias,
                        skip_bound=cfg.arith.skip_bound)
        self.accumulate(m, "pass", fan_in=cfg.rows, bits=cfg.dot_bits, bias_bound=0, skip_bound=0)
        return m

    def accumulate(self, m, name, *, fan_in, bits, bias_bound, skip_bound):
        cfg = self.cfg
        one = arith.product_bound(1, cfg.abits, cfg.wbits, cfg.terms)  # the largest |a * w|
        a, code = Signal(cfg.abits, name=f"{name}_a"), Signal(cfg.code_bits, name=f"{name}_code")
        bias = Signal(signed(arith.signed_bits(bias_bound)), name=f"{name}_bias")
        skip = Signal(range(skip_bound + 1), name=f"{name}_skip")
        m.d.comb += [a.eq(AnySeq(cfg.abits)), code.eq(AnySeq(cfg.code_bits))]
        if bias_bound:
            m.d.comb += bias.eq(AnyConst(len(bias)))
        if skip_bound:
            m.d.comb += skip.eq(AnyConst(len(skip)))
        m.d.comb += [Assume(bias >= -bias_bound), Assume(bias <= bias_bound), Assume(skip <= skip_bound)]
        product = Signal(signed(cfg.product_bits + cfg.terms + 2), name=f"{name}_product")
        m.d.comb += product.eq(product_expr(a, code, cfg))
        m.d.comb += Assert((product <= one) & (product >= -one), "a product is within core.arith.product_bound")

        count = self.probe(Signal(range(fan_in + 1), name=f"{name}_count"))
        started = Signal(name=f"{name}_started")
        acc = self.probe(Signal(signed(bits), name=f"{name}_acc"))
        wide = self.probe(Signal(signed(bits + 8), name=f"{name}_wide"))
        start = self.probe(Signal(signed(len(bias) + 1 + len(skip)), name=f"{name}_start"))
        m.d.comb += start.eq(bias + skip)
        with m.If(~started):
            m.d.sync += [acc.eq(start), wide.eq(start), started.eq(1)]
        with m.Elif(count < fan_in):
            m.d.sync += [acc.eq(acc + product), wide.eq(wide + product), count.eq(count + 1)]
        with m.If(started):
            m.d.comb += [Assert(acc == wide, f"the {name} accumulator holds the exact sum"),
                         Assert(wide - start <= count * one), Assert(wide - start >= -(count * one))]
        with m.Else():
            m.d.comb += Assert(count == 0)

    def explain(self, v):
        for name, bits in (("layer", self.bits), ("pass", self.cfg.dot_bits)):
            if v[f"{name}_acc"] != v[f"{name}_wide"]:
                return (f"{name}: after {v[f'{name}_count']} products from {v[f'{name}_start']} (bias and skip) the "
                        f"exact sum is {v[f'{name}_wide']}, the {bits}-bit accumulator holds {v[f'{name}_acc']}")
        return "a product outside core.arith.product_bound, or the sum past its bound (see the failed assertion)"


def planner_check(cfg):
    """The planner's side of the widths: :class:`hw.plan.LayerPlan` accepts a linear layer of
    fan-in ``max_fan_in`` at its worst case (every weight the largest shift with one sign, the
    bias at its bound: :func:`hw.random_layers.random_layer` ``extreme``) and refuses fan-in
    ``max_fan_in + 1``; and the worst accumulator, ``2 * product_bound + skip_bound``, needs
    every one of the ``acc_bits`` (one fewer would not hold it).

    The memories are made deep enough for the layer, so only the fan-in decides.

    Returns
    -------
    list of str
        What is wrong; empty when all holds.
    """
    from core.errors import UserError
    from hw.plan import LayerPlan
    from hw.random_layers import random_layer

    words = -(-(cfg.max_fan_in + 1) // cfg.rows) * cfg.rows
    roomy = dataclasses.replace(cfg, act_depth=1 << words.bit_length(), wgt_depth=1 << words.bit_length())
    problems = []
    for fan_in, fits in ((cfg.max_fan_in, True), (cfg.max_fan_in + 1, False)):
        layer = random_layer(np.random.default_rng(0), kind="linear", in_c=fan_in, out_c=1, abits=cfg.abits,
                             wbits=cfg.wbits, terms=cfg.terms, extreme=True)
        try:
            LayerPlan(layer, roomy)
            if not fits:
                problems.append(f"the planner accepts fan-in {fan_in}, over max_fan_in {cfg.max_fan_in}")
        except UserError as exc:
            if fits:
                problems.append(f"the planner refuses fan-in {fan_in} = max_fan_in: {exc}")
            elif "fan-in" not in str(exc):
                problems.append(f"fan-in {fan_in} is refused for another reason: {exc}")
    worst = 2 * cfg.arith.product_bound + cfg.arith.skip_bound
    top = 2 ** (cfg.acc_bits - 1)
    if not -top <= -worst and worst <= top - 1:
        problems.append(f"the worst accumulator {worst} does not fit {cfg.acc_bits} bits")
    if worst <= top // 2 - 1:
        problems.append(f"the worst accumulator {worst} fits {cfg.acc_bits - 1} bits: acc_bits is not tight")
    return problems


# --- jobs ----------------------------------------------------------------------------------------

#: Every block a job proves, by the name the table gives it.
BLOCKS = {
    "pe": PEProof,
    "requantizer": RequantizerProof,
    "array": ArrayProof,
    "widths": AccumulatorProof,
}
#: What ``python -m sim.formal`` proves unless told otherwise.
DEFAULT_BLOCKS = tuple(BLOCKS)


def jobs_for(configs, blocks):
    """``[(label, proof)]`` for every ``(label, HwConfig)`` in ``configs`` and block named in
    ``blocks``; an array's proof is split into one job per column (a column's proof is far
    smaller than the whole array's, and the jobs run in parallel)."""
    jobs = []
    for label, cfg in configs:
        for block in blocks:
            if block == "array" and cfg.cols > 1:
                jobs += [(label, ArrayProof(cfg, column=n)) for n in range(cfg.cols)]
            else:
                jobs.append((label, BLOCKS[block](cfg)))
    return jobs


def run_proofs(jobs, out, *, workers=2, timeout=None, progress=None):
    """Run ``jobs`` (:func:`jobs_for`) under ``out`` with :func:`sim.sby.run_jobs`; a widths
    job also runs :func:`planner_check` and fails with what it found."""
    from . import sby

    def checked(result, proof):
        if isinstance(proof, AccumulatorProof) and result.passed:
            problems = planner_check(proof.cfg)
            if problems:
                result.status, result.detail = "FAIL", "; ".join(problems)
        return result

    by_folder = {}

    def report(result):
        if progress is not None:
            progress(checked(result, by_folder[result.folder.name]))

    for label, proof in jobs:
        by_folder[f"{proof.name}-{sby.slug(label)}"] = proof
    results = sby.run_jobs(jobs, out, workers=workers, timeout=timeout, progress=report)
    return [checked(r, proof) for r, (_label, proof) in zip(results, jobs)]


# --- configurations ----------------------------------------------------------------------------

#: The networks whose designs are proven: the built-in CNN (``quant.models.cnn_spec``) on the
#: demo's digits at W4/A4 on the default array, and on MNIST at W2/A4 on the iCEBreaker (8x4).
NETWORKS = {
    "demo": {"image": (1, 8, 8), "abits": 4, "wbits": 4, "board": None},
    "mnist": {"image": (1, 28, 28), "abits": 4, "wbits": 2, "board": "icebreaker"},
}


def _engine_layers(spec, num_classes):
    """A model spec's weighted layers and pools as :func:`hw.random_layers.random_network` takes them."""
    out = []
    for e in spec:
        if e["type"] == "conv":
            out.append(("conv", e["out"], e["kernel"], e.get("stride", 1), e.get("padding", 0)))
        elif e["type"] == "maxpool":
            out.append(("maxpool", e["kernel"]))
        elif e["type"] == "flatten":
            out.append(("flatten",))
        elif e["type"] == "linear":
            out.append(("linear", e.get("out") or num_classes))
    return out


def network_config(name):
    """The :class:`HwConfig` the planner fits to network ``name`` of :data:`NETWORKS`
    (:func:`hw.plan.design_config` with the board's defaults), its shapes from the built-in
    CNN's spec and its codes random (seed 0): widths and fan-ins are what matter here."""
    from core.boards import board
    from hw.plan import design_config
    from hw.random_layers import random_network
    from quant.models import cnn_spec

    net = NETWORKS[name]
    network = random_network(np.random.default_rng(0), _engine_layers(cnn_spec(), 10), net["image"],
                             abits=net["abits"], wbits=net["wbits"])
    return design_config(network, board=board(net["board"]) if net["board"] else None)


def random_configs(count=20, seed=0):
    """``count`` small random :class:`HwConfig` (seeded): arrays up to 3x3, every width the
    hardware takes up to 4 activation bits, 1 or 2 terms, pipelined or not, with or without
    the skip path, weight words of any number of rows that divides them."""
    rng = np.random.default_rng(seed)
    lane_rng = np.random.default_rng(seed + 1)  # its own draws: the other fields stay as they were
    out = []
    for _ in range(count):
        rows, cols = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        skip = bool(rng.integers(0, 2)) and rows * cols > 1  # the skip path needs 2 PEs
        out.append(HwConfig(rows=rows, cols=cols, abits=int(rng.integers(1, 5)),
                            wbits=int(rng.integers(arith.WBITS_RANGE[0], 5)), terms=int(rng.integers(1, 3)),
                            max_fan_in=int(rng.integers(1, 200)), max_left=int(rng.integers(0, 4)),
                            pipeline=bool(rng.integers(0, 2)), skip=skip,
                            max_skip_left=int(rng.integers(0, 3)) if skip else 0,
                            wgt_lanes=int(lane_rng.choice([d for d in range(1, rows + 1) if rows % d == 0]))))
    return out


def label(cfg):
    """A short name of a config for the table: ``8x8 A4 W4x1 fan-in 144``."""
    extra = (" pipe" if cfg.pipeline else "") + (f" skip<<{cfg.max_skip_left}" if cfg.skip else "") + \
        (f" lanes {cfg.wgt_lanes}" if cfg.wgt_lanes > 1 else "")
    return (f"{cfg.rows}x{cfg.cols} A{cfg.abits} W{cfg.wbits}x{cfg.terms} fan-in {cfg.max_fan_in} "
            f"L{cfg.max_left}{extra}")
