"""cocotb testbenches: clock and reset, drivers, monitors, the golden model and a checker.

Each testbench wraps one generated top (``pe``, ``array`` or ``engine``).  Inputs are
driven and registered outputs sampled on the falling clock edge, half a cycle away from
the rising edge where the design samples and updates, so no read races a write.  The
golden model is always the foundation's (:mod:`core.arith`, :mod:`core.reference`).

A test case reaches the simulator as a JSON file named by :data:`CASE_ENV`; the pytest
side writes it (:func:`sim.runner.run` passes the variable).
"""

import json
import os
import pathlib

import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from core import arith
from core import codes
from core.hwconfig import HwConfig
from hw.array import lane_words
from hw.engine import descriptor_layout

CASE_ENV = "SHIFTNN_CASE"


def load_case():
    """The case dict pytest wrote for this simulation, with ``cfg`` made an :class:`HwConfig`."""
    case = json.loads(pathlib.Path(os.environ[CASE_ENV]).read_text())
    case["cfg"] = HwConfig.from_dict(case["config"])
    return case


def pack_struct(layout, values):
    """Pack a dict of field values into the integer bits of an Amaranth ``StructLayout``."""
    word = 0
    for name, fld in layout:
        word |= (int(values[name]) & ((1 << fld.width) - 1)) << fld.offset
    return word


class Mismatches:
    """The checker: collects every difference, then fails once with the first few."""

    def __init__(self, what):
        self.what = what
        self.lines = []
        self.checked = 0

    def compare(self, expected, got, where):
        self.checked += 1
        if int(expected) != int(got):
            self.lines.append(f"{where}: expected {int(expected)}, got {int(got)}")

    def check(self):
        if self.checked == 0:
            raise AssertionError(f"{self.what}: nothing was checked")
        if self.lines:
            shown = "\n  ".join(self.lines[:10])
            raise AssertionError(f"{self.what}: {len(self.lines)} of {self.checked} values differ\n  {shown}")


class Testbench:
    """Clock, reset and a cycle counter shared by the testbenches.

    Subclasses name the inputs that reset clears in ``INPUTS``.
    """

    INPUTS = ()

    def __init__(self, dut, cfg, *, period_ns=10):
        self.dut, self.cfg = dut, cfg
        self.cycle = 0
        Clock(dut.clk, period_ns, unit="ns").start()

    @classmethod
    async def start(cls, dut):
        """The usual opening of a cocotb test: read the case, start the clock, reset.

        Returns ``(tb, case, rng)`` with ``rng`` seeded from the case's ``seed`` (if any).
        """
        case = load_case()
        tb = cls(dut, case["cfg"])
        await tb.reset(tb.inputs())
        return tb, case, np.random.default_rng(case.get("seed"))

    def inputs(self):
        """The inputs reset clears."""
        return self.INPUTS

    async def step(self, n=1):
        """Advance to the falling edge after the next ``n`` rising edges."""
        for _ in range(n):
            await FallingEdge(self.dut.clk)
            self.cycle += 1

    async def reset(self, inputs=()):
        for name in inputs:
            getattr(self.dut, name).value = 0
        self.dut.rst.value = 1
        await self.step(2)
        self.dut.rst.value = 0
        await self.step()


class PETestbench(Testbench):
    """Drives one :class:`hw.pe.ShiftPE`: weight codes in, activation and partial sum each cycle."""

    INPUTS = ("en", "a_in", "s_in", "w_shift", "w_in")

    async def load(self, code):
        self.dut.w_shift.value = 1
        self.dut.w_in.value = int(code)
        await self.step()
        self.dut.w_shift.value = 0

    async def stream(self, code, a, s):
        """Load ``code``, feed ``a[i]``/``s[i]`` in cycle ``i``; ``s_out`` after each edge."""
        await self.load(code)
        mask = (1 << self.cfg.acc_bits) - 1
        self.dut.en.value = 1
        got = []
        for ai, si in zip(a, s):
            self.dut.a_in.value = int(ai)
            self.dut.s_in.value = int(si) & mask
            await self.step()
            got.append(self.dut.s_out.value.to_signed())
        return got

    @staticmethod
    def golden(code, a, s, cfg):
        """``s_out`` after the edge of cycle ``k``: ``s[k] + w * a[k - pipeline]``, for every
        ``k >= pipeline`` (the activation's product waits ``pipeline`` cycles for its sum)."""
        sign, shift, zero = codes.decode_terms(code, cfg.wbits, cfg.terms)
        w = int(arith.weight_value(sign, shift, zero))
        p = cfg.pipeline_stages
        return {k: int(s[k]) + w * int(a[k - p]) for k in range(p, len(a))}, w


class ArrayTestbench(Testbench):
    """Drives :class:`hw.array.SystolicArray` with idle cycles and stalls, monitors its results."""

    INPUTS = ("en", "valid", "a", "s_in", "w_load", "w_in")

    async def load_weights(self, w_codes):
        """``w_codes`` ``(rows, cols)``: one word a cycle (:func:`hw.array.lane_words`), with
        ``w_load`` on the first."""
        cfg = self.cfg
        self.dut.en.value = 0
        for k, word in enumerate(codes.pack(lane_words(w_codes, cfg.wgt_lanes), cfg.code_bits)):
            self.dut.w_load.value = int(k == 0)
            self.dut.w_in.value = word
            await self.step()
        self.dut.w_load.value = 0

    async def run(self, a, s, rng, *, p_idle=0.0, p_stall=0.0):
        """Stream vectors ``a`` ``(N, rows)`` with partial sums ``s`` ``(N, cols)``; idle
        cycles (``valid`` low) and stalls (``en`` low) come with the given probabilities.
        Returns ``(outputs, cycles)``: each result vector and the cycle it appeared."""
        cfg, dut = self.cfg, self.dut
        out, when = [], []
        i = 0
        limit = 4 * (len(a) + cfg.latency) + 100  # idle and stall cycles included
        for _ in range(limit):
            if len(out) == len(a):
                break
            stall = rng.random() < p_stall
            dut.en.value = int(not stall)
            if i < len(a) and not stall and rng.random() >= p_idle:
                dut.valid.value = 1
                dut.a.value = codes.pack(a[i], cfg.abits)[0]
                dut.s_in.value = codes.pack(s[i], cfg.acc_bits)[0]
                i += 1
            else:
                dut.valid.value = 0
            await self.step()
            # registered outputs, after the edge that consumed the inputs above
            if int(dut.s_valid.value) and not stall:
                out.append(codes.unpack(int(dut.s_out.value), cfg.cols, cfg.acc_bits, signed=True))
                when.append(self.cycle)
        return np.array(out, dtype=np.int64).reshape(-1, cfg.cols), when


class EngineTestbench(Testbench):
    """Loads a layer into :class:`hw.engine.LayerEngine`, runs it, reads the results back."""

    INPUTS = ("start", "desc", "act_w__en", "wgt_w__en", "par_w__en", "out_r__en")

    def inputs(self):
        return self.INPUTS + (("skip_w__en",) if self.cfg.skip else ())

    async def write(self, port, words):
        dut = self.dut
        en, addr, data = (getattr(dut, f"{port}__{k}") for k in ("en", "addr", "data"))
        en.value = 1
        for i, word in enumerate(words):
            addr.value = i
            data.value = int(word)
            await self.step()
        en.value = 0

    async def load(self, plan, x, skip=None):
        """Input codes ``x`` (the layer's ``in_shape``), weights, channel parameters and the
        skip codes of a residual add."""
        for name, words in plan.memory_words(x, skip).items():
            await self.write(f"{name}_w", words)

    async def run(self, plan):
        """Start the layer; return ``(cycles, writes)``: how many cycles after the cycle that
        presents ``start`` ``done`` is high, and each result write ``(cycle, addr, word)``."""
        dut = self.dut
        dut.desc.value = pack_struct(descriptor_layout(self.cfg), plan.descriptor())
        dut.start.value = 1
        t0 = self.cycle
        await self.step()
        dut.start.value = 0
        writes = []
        limit = 2 * plan.cycles() + 100
        while not int(dut.done.value):
            if self.cycle - t0 > limit:
                raise AssertionError(f"layer {plan.layer.name}: no done after {limit} cycles "
                                     f"(expected {plan.cycles()})")
            if int(dut.res_valid.value):
                writes.append((self.cycle - t0, int(dut.res_addr.value), int(dut.res_data.value)))
            await self.step()
        return self.cycle - t0, writes

    async def read_outputs(self, plan):
        """The output memory, through the read port, as the layer's ``out_shape``."""
        cfg, dut = self.cfg, self.dut
        dut.out_r__en.value = 1
        words = []
        for i in range(plan.out_words):
            dut.out_r__addr.value = i
            await self.step()
            words.append(codes.unpack(int(dut.out_r__data.value), cfg.cols, cfg.out_bits, signed=True))
        dut.out_r__en.value = 0
        return plan.unpack_outputs(words)

    def check(self, plan, expected, got, cycles, writes, what):
        """Every output value, the stream of writes and the cycle count, in one checker."""
        cfg = self.cfg
        checker = Mismatches(what)
        first_write = {}
        for cycle, addr, word in writes:
            first_write.setdefault(addr, (cycle, word))
        for idx, (e, v) in enumerate(zip(np.asarray(expected).ravel(), np.asarray(got).ravel())):
            tile, nb, position, col = plan.locate(idx)
            addr = position * plan.nb + nb
            cycle, word = first_write.get(addr, (None, None))
            streamed = None if word is None else codes.unpack(word, cfg.cols, cfg.out_bits, signed=True)[col]
            oy, ox = divmod(position, plan.out_hw[1])
            where = (f"{what}, M tile {tile}, block {nb}, position {position} (y {oy}, x {ox}), column {col}, "
                     f"written at cycle {cycle}")
            checker.compare(e, v, where)
            if streamed is not None and streamed != v:
                checker.lines.append(f"{where}: streamed {streamed} but the memory holds {v}")
        if len(first_write) != plan.out_words or len(writes) != plan.out_words:
            checker.lines.append(f"{what}: {len(writes)} result writes to {len(first_write)} addresses, "
                                 f"expected one to each of {plan.out_words}")
        checker.compare(plan.cycles(), cycles, f"{what}: cycle count (plan.cycles())")
        checker.check()
