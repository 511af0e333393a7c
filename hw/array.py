"""The weight-stationary systolic array of shift-accumulate PEs, with input skew and output deskew."""

import numpy as np
from amaranth.hdl import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from core.hwconfig import HwConfig

from .pe import ShiftPE


def delay(m, value, cycles, en, *, name, data=False):
    """``value`` delayed by ``cycles`` registers that advance while ``en`` is high; with
    ``data``, registers without a reset (see :class:`SystolicArray`)."""
    for i in range(cycles):
        reg = Signal.like(value, name=f"{name}_d{i}", reset_less=data)
        with m.If(en):
            m.d.sync += reg.eq(value)
        value = reg
    return value


#: Bits of a block RAM word that a group of rows shares in :func:`ram_delay` (iCE40 and ECP5
#: block RAMs are 16 bits wide in their 256- and 1024-word shapes).
RAM_DELAY_BITS = 16
#: Words of a delay RAM: one block RAM's, so yosys maps it to one.
RAM_DELAY_DEPTH = 256


def skew_ram_groups(cfg):
    """With ``skew_ram``, the array's rows in groups of ``RAM_DELAY_BITS // abits``: a list
    of ``(rows, base)``, where the group's codes share a block RAM that delays them ``base``
    cycles (0: no RAM, the first group's) and each row ``k`` the remaining ``k - base`` cycles
    in flip-flops."""
    group = max(1, RAM_DELAY_BITS // cfg.abits)
    return [(range(g0, min(g0 + group, cfg.rows)), g0 if g0 >= 2 else 0)  # the RAM needs two cycles at least
            for g0 in range(0, cfg.rows, group)]


def ram_delay(m, value, cycles, en, ptr, *, name):
    """``value`` delayed by ``cycles`` (2 .. ``RAM_DELAY_DEPTH``) cycles of ``en`` through a
    block RAM used as a circular buffer: written at ``ptr`` (a counter that advances with
    ``en``), read ``cycles - 1`` words behind it, the read port's register the last stage.
    Unlike :func:`delay` it is not reset; what it gives in its first ``cycles`` cycles is
    whatever the RAM held."""
    assert 2 <= cycles <= RAM_DELAY_DEPTH
    mem = Memory(shape=unsigned(len(value)), depth=RAM_DELAY_DEPTH, init=[], attrs={"ram_style": "block"})
    m.submodules[name] = mem
    wr, rd = mem.write_port(), mem.read_port()
    m.d.comb += [wr.addr.eq(ptr), wr.data.eq(value), wr.en.eq(en),
                 rd.addr.eq(ptr - (cycles - 1)), rd.en.eq(en)]
    return rd.data


def lane_words(tile, lanes):
    """A ``(rows, cols)`` tile of weight codes as the ``rows / lanes`` words that load it,
    ``(rows / lanes, lanes * cols)``: word ``i`` holds rows ``i, R + i, 2 R + i, ...``
    (``R = rows / lanes``), lane ``g`` in codes ``g * cols`` to ``(g + 1) * cols - 1``."""
    tile = np.asarray(tile)
    rows, cols = tile.shape
    return tile.reshape(lanes, rows // lanes, cols).transpose(1, 0, 2).reshape(rows // lanes, lanes * cols)


class SystolicArray(wiring.Component):
    """A ``rows x cols`` grid of :class:`~hw.pe.ShiftPE`.

    Weight ``W[k][n]`` sits in PE ``(k, n)``.  Activation ``a[k]`` enters row ``k`` from
    the left and moves one column right per cycle; partial sums start at the top from
    ``s_in[n]`` and move one row down per cycle, so column ``n`` leaves the bottom with
    ``s_in[n] + sum_k W[k][n] * a[k]``.  Row ``k``'s input is delayed ``k`` cycles and
    column ``n``'s output ``cols - 1 - n`` cycles, so the ports carry whole, aligned
    vectors: once full, one activation vector enters and one result vector leaves per cycle.

    Latency: :attr:`latency` ``= rows + cols - 1 + pipeline`` cycles from a vector on
    ``a``/``s_in`` (with ``valid``) to its results on ``s_out`` (with ``s_valid``),
    counting only cycles with ``en`` high.  Throughput: one vector per cycle.

    Weights load along the diagonal the activations take: PE ``(k, n)`` takes its code
    ``k + n`` cycles after ``w_load`` (a one-bit chain of ``rows + cols - 2`` registers, tapped
    at ``k + n``).  ``w_in`` has ``wgt_lanes`` lanes of ``cols`` codes, one for each group of
    ``R = rows / wgt_lanes`` rows: in the cycle ``w_load`` is high lane ``g`` carries row
    ``g * R``'s codes, and ``i`` cycles later row ``g * R + i``'s (:func:`lane_words`); the
    array delays lane ``g`` by ``g * R`` cycles and its column ``n`` by ``n`` more, so each
    code arrives with its write.  A PE computes with the weight it holds in the cycle an
    activation reaches it, so with ``w_load`` high in cycle ``L`` every vector that entered
    in cycle ``L`` or before uses the old weights and every vector that enters after it the
    new ones: the engine loads the next pass's weights right behind the last vectors of the
    current one (:mod:`hw.engine`), and a pass's load takes ``R`` cycles of ``w_in``.

    Only the control registers (``valid`` and ``w_load``'s chains) take the reset.  The data
    registers (activations, weight codes, partial sums and their delays) have none: a result
    leaves only behind ``valid``, computed from what entered with it, and a weight is
    written before a vector that uses it enters, so nothing a reset would clear is read.
    The reset's route to every PE across the die was the critical path of a ULX3S-85F 32x32
    build (15.5 ns).

    Parameters
    ----------
    cfg : HwConfig
        Array shape and bit widths.
    """

    def __init__(self, cfg, *, psum_bits=None):
        if not isinstance(cfg, HwConfig):
            raise TypeError(f"cfg must be an HwConfig, not {cfg!r}")
        self.cfg = cfg
        self.psum_bits = cfg.acc_bits if psum_bits is None else psum_bits
        acc = signed(self.psum_bits)
        super().__init__({
            "en": In(1),
            "valid": In(1),
            "a": In(data.ArrayLayout(cfg.abits, cfg.rows)),
            "s_in": In(data.ArrayLayout(acc, cfg.cols)),
            "s_out": Out(data.ArrayLayout(acc, cfg.cols)),
            "s_valid": Out(1),
            "w_load": In(1),
            "w_in": In(data.ArrayLayout(cfg.code_bits, cfg.wgt_lanes * cfg.cols)),
        })

    @property
    def latency(self):
        return self.cfg.latency

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        pes = [[ShiftPE(cfg, name=f"pe_{k}_{n}", psum_bits=self.psum_bits) for n in range(cfg.cols)] for k in range(cfg.rows)]
        # PE (k, n)'s write enable: w_load, k + n cycles later (weights load whether or not `en`)
        writes = [self.w_load]
        for d in range(1, cfg.rows + cfg.cols - 1):
            writes.append(delay(m, writes[-1], 1, 1, name=f"w_load_{d}"))
        # lane g's codes delayed g * R cycles, then column n's n more
        lanes = self.w_in.as_value()
        lane_bits = cfg.cols * cfg.code_bits
        codes = []
        for g in range(cfg.wgt_lanes):
            lane = delay(m, lanes[g * lane_bits:(g + 1) * lane_bits], g * cfg.load_rows, 1, name=f"w_lane_{g}", data=True)
            codes.append([delay(m, lane[n * cfg.code_bits:(n + 1) * cfg.code_bits], n, 1, name=f"w_col_{g}_{n}", data=True)
                          for n in range(cfg.cols)])
        skewed = self._skew(m)
        for k in range(cfg.rows):
            for n in range(cfg.cols):
                pe = pes[k][n]
                m.submodules[f"pe_{k}_{n}"] = pe
                m.d.comb += [pe.en.eq(self.en), pe.w_shift.eq(writes[k + n]),
                             pe.w_in.eq(codes[k // cfg.load_rows][n])]
                if n == 0:
                    m.d.comb += pe.a_in.eq(skewed[k])
                else:
                    m.d.comb += pe.a_in.eq(pes[k][n - 1].a_out)
                if k == 0:
                    # a row-0 PE adds its activation `n` cycles (plus the pipeline stage) after
                    # the vector arrived, so its partial-sum input waits as long
                    skew = n + cfg.pipeline_stages
                    m.d.comb += pe.s_in.eq(delay(m, self.s_in[n], skew, self.en, name=f"s_skew_{n}", data=True))
                else:
                    m.d.comb += pe.s_in.eq(pes[k - 1][n].s_out)
        for n in range(cfg.cols):
            bottom = pes[cfg.rows - 1][n].s_out
            m.d.comb += self.s_out[n].eq(delay(m, bottom, cfg.cols - 1 - n, self.en, name=f"s_deskew_{n}", data=True))
        m.d.comb += self.s_valid.eq(delay(m, self.valid, self.latency, self.en, name="valid"))
        return m

    def _skew(self, m):
        """Row ``k``'s activation delayed ``k`` cycles: in flip-flops, or with ``skew_ram``
        the rows in groups of ``RAM_DELAY_BITS // abits``, group ``g`` delayed ``g * G``
        cycles in a block RAM (:func:`ram_delay`) and each row the rest in flip-flops."""
        cfg = self.cfg
        if not cfg.skew_ram:
            return [delay(m, self.a[k], k, self.en, name=f"a_skew_{k}", data=True) for k in range(cfg.rows)]
        ptr = Signal(range(RAM_DELAY_DEPTH), name="skew_ptr")
        with m.If(self.en):
            m.d.sync += ptr.eq(ptr + 1)
        out = []
        for rows, base in skew_ram_groups(cfg):
            values = [self.a[k] for k in rows]
            if base:
                coarse = ram_delay(m, Cat(values), base, self.en, ptr, name=f"a_skew_ram_{rows[0]}")
                values = [coarse[i * cfg.abits:(i + 1) * cfg.abits] for i in range(len(rows))]
            out += [delay(m, v, k - base, self.en, name=f"a_skew_{k}", data=True) for k, v in zip(rows, values)]
        return out
