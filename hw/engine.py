"""The layer engine: runs one conv2d/linear layer of any size on the fixed array by tiling.

Memories (``amaranth.lib.memory``), with the host's ports on the engine's signature:

======== ============================ ================================================
memory   word                         address
======== ============================ ================================================
act      ``rows`` input codes         ``(y * W + x) * CB + cb``: channel-blocked HWC
wgt      ``wgt_lanes`` rows of codes  tile after tile (:func:`hw.array.lane_words`)
par      bias and shift of a channel  ``nb * cols + n``: output channel, padded
psum     ``cols`` partial sums        position within the M tile (engine-internal)
out      ``cols`` results             ``m * NB + nb``: channel-blocked HWC, like act
======== ============================ ================================================

The schedule, with ``M`` output positions, ``KT = kh * kw * CB`` K tiles and ``NB``
output channel blocks, is::

    for each M tile of at most psum_depth positions (all of them when KT = 1):
        for nb in range(NB):                 # a block: the array drains in full between two
            start the loads of the parameters and the kt = 0 weights  # one cycle
            for kt in range(KT):             # (ky, kx, cb), cb fastest
                stream the tile's positions  # one vector per cycle
                if kt < KT - 1:              # pass_gap cycles (at least), while the next
                    load the kt + 1 weights  # pass's weights load behind the last positions
            drain the array                  # input_stages + latency + drain_stages + 2 cycles

The passes of a block overlap: the next pass's weights load along the diagonal the
activations take, right behind the last of them (:class:`hw.array.SystolicArray`), so a
pass starts ``pass_gap`` cycles after the last position of the one before (or
``load_rows`` cycles after its own start, when that is later: the weight memory gives
``wgt_lanes`` rows a cycle), while the one before is still in the array and the drain.
Each position carries tags (first and last K tile) through the array, and the drain reads
them, not the controller's loop state.  The first pass of a block streams as its weights
start loading, and the block's ``cols`` channel parameters shift in meanwhile: the bias is
first read ``par_lead`` cycles later, when the first sums reach the drain.

The array sums one pass (``dot_bits`` wide); the drain adds that to the bias on the first
K tile or to the partial sums of the previous ones (``acc_bits`` wide), and the last K
tile goes through the requantisers into ``out``.  Every address is made
by adding host-computed steps (:mod:`hw.plan`), so the controller has no multiplier.
The exact cycle count is :meth:`hw.plan.LayerPlan.cycles`.
"""

from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from core.hwconfig import HwConfig

from .array import SystolicArray, delay
from .requant import Requantizer

#: Bits of the kernel, stride and padding fields of a layer descriptor.
GEOM_BITS = 4

#: No memory here sees a read and a write of one address in one cycle: the host ports are
#: used only while the engine is idle, and a partial sum is read (at ``j``) strictly before
#: it is rewritten (at ``j_out``, which trails ``j``).  Saying so spares yosys the
#: collision-bypass registers and multiplexers it would otherwise wrap round each block RAM.
NO_RW_CHECK = {"no_rw_check": 1}


def _abits(depth):
    return max(1, (depth - 1).bit_length())


def coord_bits(cfg):
    """Unsigned bits of a coordinate, count or activation/output address; one more bit makes
    it signed.  (The weight address has its own width, from ``wgt_depth``.)"""
    return max(cfg.act_depth, cfg.out_depth).bit_length() + 1


#: The walker's levels, innermost first: across a pooling window, down it, to the next window
#: of the row, to the next row of windows.  Without pooling the first two have one step.
LEVELS = 4


def descriptor_layout(cfg):
    """The layer descriptor: the geometry and the address steps the controller adds.

    Output positions are visited window by window of the fused max-pool (``pool_w`` x
    ``pool_h``, stride equal to its size; 1 x 1 without pooling): ``(oy, ox) = (py * pool_h
    + dy, px * pool_w + dx)`` with ``dx`` fastest, then ``dy``, ``px``, ``py``.  Moving on
    at level ``L`` (the innermost one not at its end) adds ``step{L}_y``, ``step{L}_x`` and
    ``step{L}_pos`` to the window origin ``(oy * stride_y - pad_y, ox * stride_x - pad_x)``
    and to its activation address ``(oy * stride_y * in_w + ox * stride_x) * CB``.
    """
    cw = coord_bits(cfg)
    fields = {
        "relu": unsigned(1),
        "amax": unsigned(cfg.abits),  # clamp bound 2**out_bits - 1
        "in_h": unsigned(cw),
        "in_w": unsigned(cw),
        "m_count": unsigned(cw),  # positions visited: pooled positions * pool_n
        "cb_n": unsigned(cw),  # input channel blocks CB
        "nb_n": unsigned(cw),  # output channel blocks NB
        "kh": unsigned(GEOM_BITS),
        "kw": unsigned(GEOM_BITS),
        "pad_y": unsigned(GEOM_BITS),
        "pad_x": unsigned(GEOM_BITS),
        "pool_w": unsigned(GEOM_BITS),
        "pool_h": unsigned(GEOM_BITS),
        "pool_n": unsigned(2 * GEOM_BITS),  # pool_w * pool_h: results per output written
        "px_n": unsigned(cw),  # windows per row (out_w // pool_w)
        "tap0": signed(cw + 1),  # act offset of tap (0, 0, 0): (-pad_y * W - pad_x) * CB
        "ky_jump": signed(cw + 1),  # from tap (ky, kw-1, CB-1) to (ky+1, 0, 0): (W - kw) * CB + 1
    }
    for level in range(LEVELS):
        fields |= {f"step{level}_{k}": signed(cw + 1) for k in ("y", "x", "pos")}
    if cfg.skip:
        # the residual add: whether the layer has one, and the skip walker's address steps,
        # which visit the output positions in the same order in units of skip words
        # ((oy * out_w + ox) * NB + nb, as the output memory is laid out)
        fields["skip"] = unsigned(1)
        fields |= {f"skip_step{level}": signed(cw + 1) for level in range(LEVELS)}
    return data.StructLayout(fields)


def par_layout(cfg):
    """A channel-parameter word: one output channel's bias and requantiser shift.  (One
    channel a word keeps the memory narrow enough for a block RAM; the engine reads a
    block's ``cols`` words while it loads the weights.)"""
    fields = {"bias": signed(cfg.acc_bits), "shift": signed(cfg.rq_bits)}
    if cfg.skip:  # the skip term's shift: left where >= 0, rounding right where < 0
        fields["skip"] = signed(cfg.skip_shift_bits)
    return data.StructLayout(fields)


@dataclass
class _SkipPath:
    walk: dict
    tile: dict
    shift: object
    base: object


class LayerEngine(wiring.Component):
    """Runs the layer described on ``desc`` over the memories, from ``start`` to ``done``.

    Parameters
    ----------
    cfg : HwConfig
        Array shape, widths and memory depths.
    external : tuple of str
        Input memories (``"act"``, ``"wgt"``, ``"par"``) that live outside the engine, for
        example ROMs a board top initialises from files.  Each one's write port ``<name>_w``
        is replaced by a read port ``<name>_r`` that the engine drives (address, enable) and
        whose data it reads one cycle later, exactly as from its own memory.
    out_memory : bool
        Whether the engine holds its output memory (and ``out_r``).  Without it the results
        leave only on the ``res_*`` stream, for a network that writes them into its own
        activation buffers.

    Notes
    -----
    Ports: ``desc`` (held while ``busy``), ``start`` (a one-cycle pulse while idle),
    ``busy``, ``done`` (a one-cycle pulse at the end); ``act_w``, ``wgt_w``, ``par_w``
    (write ports into the memories, used while idle) and ``out_r`` (a synchronous read
    port of the output memory, one cycle of latency).  ``res_valid``/``res_addr``/``res_data``
    show each write into the output memory in the cycle it happens.
    """

    INPUT_MEMORIES = ("act", "wgt", "par")

    def __init__(self, cfg, *, external=(), out_memory=True):
        if not isinstance(cfg, HwConfig):
            raise TypeError(f"cfg must be an HwConfig, not {cfg!r}")
        # the skip memory (codes of the tensor a residual add reads) exists with the skip path
        self.input_memories = self.INPUT_MEMORIES + (("skip",) if cfg.skip else ())
        unknown = set(external) - set(self.input_memories)
        if unknown:
            raise ValueError(f"external memories must be among {self.input_memories}, not {sorted(unknown)}")
        self.cfg = cfg
        self.external = tuple(external)
        self.out_memory = bool(out_memory)
        self.act_shape = data.ArrayLayout(cfg.abits, cfg.rows)
        self.wgt_shape = data.ArrayLayout(cfg.code_bits, cfg.wgt_lanes * cfg.cols)
        self.par_shape = par_layout(cfg)
        self.skip_shape = data.ArrayLayout(cfg.abits, cfg.cols)
        self.psum_shape = data.ArrayLayout(signed(cfg.acc_bits), cfg.cols)
        self.out_shape = data.ArrayLayout(signed(cfg.out_bits), cfg.cols)
        members = {
            "desc": In(descriptor_layout(cfg)),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
        }
        for name in self.input_memories:
            geometry = dict(addr_width=_abits(self.depth(name)), shape=self.shape(name))
            if name in self.external:
                members[f"{name}_r"] = In(ReadPort.Signature(**geometry))
            else:
                members[f"{name}_w"] = Out(WritePort.Signature(**geometry))
        if self.out_memory:
            members["out_r"] = Out(ReadPort.Signature(addr_width=_abits(cfg.out_depth), shape=self.out_shape))
        super().__init__(members | {
            # every write into the output memory, as it happens (a result stream)
            "res_valid": Out(1),
            "res_addr": Out(_abits(cfg.out_depth)),
            "res_data": Out(self.out_shape),
        })

    def depth(self, name):
        """Words of memory ``name`` (``act``, ``wgt``, ``par``, ``skip``, ``psum`` or ``out``)."""
        if name == "par":  # par_depth counts output channel blocks
            return self.cfg.par_depth * self.cfg.cols
        if name == "skip":  # skip words are laid out as the output memory's
            return self.cfg.out_depth
        return getattr(self.cfg, f"{name}_depth")

    def shape(self, name):
        """Word layout of memory ``name``."""
        return getattr(self, f"{name}_shape")

    def _walk(self, m, pos, walk_ends, steps):
        """Step a position walker: the innermost level not at its end counts up, the ones
        inside it start again, and each register ``k`` of ``steps(level)`` moves by its step."""
        counters = [pos[f"c{i}"] for i in range(LEVELS - 1)]
        at_end = [pos[f"end{i}"] for i in range(LEVELS - 1)]

        def move(level):
            m.d.sync += [pos[k].eq(pos[k] + step) for k, step in steps(level).items()]
            for i in range(level):
                m.d.sync += [counters[i].eq(0), at_end[i].eq(walk_ends[i] == 0)]
            if level < LEVELS - 1:
                m.d.sync += [counters[level].eq(counters[level] + 1),
                             at_end[level].eq(counters[level] + 1 == walk_ends[level])]

        with m.If(~at_end[0]):
            move(0)
        for level in range(1, LEVELS - 1):
            with m.Elif(~at_end[level]):
                move(level)
        with m.Else():
            move(LEVELS - 1)

    def _skip_path(self, m, skip_rd, a_valid, bias, walk_ends, nb):
        """The residual add: the first K tile's sums start from ``bias + skip_term`` instead of
        the bias.  A second walker visits the output positions in the order the drain
        takes them, ``skip_issue`` cycles after each enters the array (``a_valid``), and
        reads the ``cols`` skip codes of block ``nb`` there; a cycle later each column's code
        is shifted by its channel's skip shift (:func:`core.arith.skip_term`: left where
        >= 0, rounding half up where negative) and added to the bias, into ``base``, which
        the adder takes as the position's dot products arrive.  No cycle is added.

        Returns the state the controller sets: ``walk`` and ``tile`` (the walker and its
        saved M tile start, keyed like the first walker), ``shift`` (the block's shifts,
        loaded with the parameters) and ``base``.
        """
        cfg, d = self.cfg, self.desc
        cw = coord_bits(cfg)
        keys = {"c0": GEOM_BITS, "c1": GEOM_BITS, "c2": cw, "end0": 1, "end1": 1, "end2": 1, "pos": signed(cw + 1)}
        walk = {k: Signal(shape, name=f"skip_run_{k}") for k, shape in keys.items()}
        tile = {k: Signal(shape, name=f"skip_tile_{k}") for k, shape in keys.items()}
        go = delay(m, a_valid, cfg.skip_issue, 1, name="skip_go")
        with m.If(go):
            self._walk(m, walk, walk_ends, lambda level: {"pos": getattr(d, f"skip_step{level}")})
        m.d.comb += skip_rd.addr.eq(walk["pos"] + nb)
        shift = Signal(data.ArrayLayout(signed(cfg.skip_shift_bits), cfg.cols), name="skip_shift")
        base = Signal(data.ArrayLayout(signed(cfg.acc_bits), cfg.cols), name="base")
        left_bits = max(1, cfg.max_skip_left.bit_length())
        right_bits = max(1, (cfg.skip_right - 1).bit_length())
        for n in range(cfg.cols):
            code, s = skip_rd.data[n], shift[n]
            left = code << s.as_unsigned()[:left_bits]  # s >= 0
            # s < 0, r = -s: round half up (code + 2**(r-1)) >> r == ((code >> (r-1)) + 1) >> 1,
            # and r - 1 == ~s
            right = ((code >> (~s).as_unsigned()[:right_bits]) + 1) >> 1
            term = Signal(cfg.abits + cfg.max_skip_left, name=f"skip_term_{n}")
            m.d.comb += term.eq(Mux(s[-1], right, left))
            m.d.sync += base[n].eq(bias[n] + Mux(d.skip, term, 0))
        return _SkipPath(walk=walk, tile=tile, shift=shift, base=base)

    def elaborate(self, platform):
        m = Module()
        cfg, d = self.cfg, self.desc
        # a block's first pass streams the cycle after its loads start (HwConfig.load_cycles)
        assert cfg.load_cycles == 0, "the channel parameters must be in place before par_lead"
        cw = coord_bits(cfg)
        scoord = signed(cw + 1)

        readers = {}
        for name in self.input_memories:
            if name in self.external:
                port = readers[name] = getattr(self, f"{name}_r")
                m.d.comb += port.en.eq(1)
            else:
                mem = Memory(shape=self.shape(name), depth=self.depth(name), init=[], attrs=NO_RW_CHECK)
                m.submodules[f"{name}_mem"] = mem
                wiring.connect(m, wiring.flipped(getattr(self, f"{name}_w")), mem.write_port())
                readers[name] = mem.read_port()
        act_rd, wgt_rd, par_rd = (readers[name] for name in self.INPUT_MEMORIES)
        m.submodules.psum_mem = psum_mem = Memory(shape=self.psum_shape, depth=cfg.psum_depth, init=[],
                                                  attrs=NO_RW_CHECK)
        out_port = WritePort.Signature(addr_width=_abits(cfg.out_depth), shape=self.out_shape)
        if self.out_memory:
            m.submodules.out_mem = out_mem = Memory(shape=self.out_shape, depth=cfg.out_depth, init=[],
                                                    attrs=NO_RW_CHECK)
            wiring.connect(m, wiring.flipped(self.out_r), out_mem.read_port())
            out_wr = out_mem.write_port()
        else:
            out_wr = out_port.create(path=("out_wr",))
        psum_rd = psum_mem.read_port()
        psum_wr = psum_mem.write_port()

        # the array sums one pass (dot_bits); passes accumulate after it, in the drain
        m.submodules.array = array = SystolicArray(cfg, psum_bits=cfg.dot_bits)
        m.d.comb += [array.en.eq(1), array.s_in.eq(0)]

        # --- loop state -------------------------------------------------------------
        # M tile: saved start of the tile and the positions left from it
        m_left = Signal(cw, name="m_left")
        t_len = Signal(cw, name="t_len")  # positions in this M tile
        t_last = Signal(cw, name="t_last")  # t_len - 1, registered off the STREAM exit test
        t_single = Signal(name="t_single")  # t_len == 1
        # j == t_last, kept a cycle ahead in a register: the pass's end, which steps the K loop
        # and restores the walker, is decided from a flip-flop rather than a comparator
        j_last = Signal(name="j_last")
        # the position walker (see descriptor_layout): counters c0..c2 of the first three
        # levels, each with its "at the end" flag kept beside it so the level choice starts
        # at flip-flops, and the window origin and its activation address
        walker = {"c0": GEOM_BITS, "c1": GEOM_BITS, "c2": cw, "end0": 1, "end1": 1, "end2": 1,
                  "y0": scoord, "x0": scoord, "pos": scoord}
        tile = {k: Signal(shape, name=f"tile_{k}") for k, shape in walker.items()}
        pos = {k: Signal(shape, name=f"run_{k}") for k, shape in walker.items()}
        # K tile (tap) and N block
        ky = Signal(GEOM_BITS, name="ky")
        kx = Signal(GEOM_BITS, name="kx")
        cb = Signal(cw, name="cb")
        tap = Signal(scoord, name="tap")
        nb = Signal(cw, name="nb")
        w_addr = Signal(range(cfg.wgt_depth + 1), name="w_addr")
        out_base = Signal(cw, name="out_base")  # m0 * NB of this M tile
        # where the pass is in the loops; registered (two cycles behind the descriptor and
        # one behind the counters, which change in a pass's last streaming cycle; the next
        # pass streams at least pass_gap + 1 >= 2 cycles later and tags its positions with them)
        first_kt = Signal(name="first_kt")
        last_kt = Signal(name="last_kt")
        last_kx_cb = Signal(name="last_kx_cb")
        last_cb = Signal(name="last_cb")
        last_nb = Signal(name="last_nb")
        # the loops' last indices, registered from the (held) descriptor
        ends = {k: Signal.like(getattr(d, k), name=f"{k}_end")
                for k in ("kh", "kw", "cb_n", "nb_n", "pool_w", "pool_h", "px_n", "pool_n")}
        m.d.sync += [ends[k].eq(getattr(d, k) - 1) for k in ends]
        single_kt = Signal(name="single_kt")  # KT = 1: no partial sums (see TILE)
        m.d.comb += single_kt.eq((ends["kh"] == 0) & (ends["kw"] == 0) & (ends["cb_n"] == 0))
        walk_ends = (ends["pool_w"], ends["pool_h"], ends["px_n"])
        m.d.sync += [
            first_kt.eq((ky == 0) & (kx == 0) & (cb == 0)),
            last_cb.eq(cb == ends["cb_n"]),
            last_kx_cb.eq((kx == ends["kw"]) & (cb == ends["cb_n"])),
            last_kt.eq((ky == ends["kh"]) & (kx == ends["kw"]) & (cb == ends["cb_n"])),
            last_nb.eq(nb == ends["nb_n"]),
        ]

        # --- per-nb channel parameters ----------------------------------------------
        bias = Signal(data.ArrayLayout(signed(cfg.acc_bits), cfg.cols), name="bias")
        rq_shift = Signal(data.ArrayLayout(signed(cfg.rq_bits), cfg.cols), name="rq_shift")
        # the parameter loader: started with the block (start_par), it reads channel c in
        # the c-th cycle and shifts it in the next, cycles 1..cols of the block, whatever the
        # controller does meanwhile
        par_base = Signal(cw, name="par_base")  # nb * cols
        par_count = Signal(range(cfg.cols), name="par_count")  # the channel being read
        par_left = Signal(range(cfg.cols), name="par_left")  # reads still to come
        start_par = Signal(name="start_par")
        par_shift = Signal(name="par_shift")  # a parameter word arrives
        m.d.comb += par_rd.addr.eq(par_base + par_count)
        m.d.sync += par_shift.eq(start_par | (par_left != 0))
        with m.If(start_par):
            m.d.sync += [par_count.eq(1 % cfg.cols), par_left.eq(cfg.cols - 1)]
        with m.Elif(par_left != 0):
            m.d.sync += [par_count.eq(Mux(par_left == 1, 0, par_count + 1)), par_left.eq(par_left - 1)]
        with m.If(par_shift):
            m.d.sync += [
                bias.eq(Cat(bias.as_value()[cfg.acc_bits:], par_rd.data.bias)),
                rq_shift.eq(Cat(rq_shift.as_value()[cfg.rq_bits:], par_rd.data.shift)),
            ]

        # --- stream (input side): issue reads, present to the array one cycle later --
        j = Signal(cw, name="j")  # position within the M tile
        y = Signal(scoord, name="y")
        x = Signal(scoord, name="x")
        m.d.comb += [
            y.eq(pos["y0"] + ky),
            x.eq(pos["x0"] + kx),
            act_rd.addr.eq(pos["pos"] + tap),
            wgt_rd.addr.eq(w_addr),
        ]
        inside = Signal(name="inside")
        m.d.comb += inside.eq((y >= 0) & (y < d.in_h) & (x >= 0) & (x < d.in_w))
        issue = Signal(name="issue")
        issued = Signal(name="issued")  # a read was issued last cycle: present it now
        inside_d = Signal(name="inside_d")
        # each position's tags: whether its pass is the block's first / last K tile; they
        # travel beside it to the drain, where passes overlap
        tag_layout = data.StructLayout({"first_kt": 1, "last_kt": 1})
        tag_issued = Signal(tag_layout, name="tag_issued")
        m.d.sync += [issued.eq(issue), inside_d.eq(inside), tag_issued.first_kt.eq(first_kt),
                     tag_issued.last_kt.eq(last_kt)]
        for k in range(cfg.rows):
            m.d.comb += array.a[k].eq(delay(m, Mux(inside_d, act_rd.data[k], 0), cfg.input_stages, 1,
                                            name=f"a_in_{k}", data=True))
        m.d.comb += array.valid.eq(delay(m, issued, cfg.input_stages, 1, name="a_valid"))
        tag_in = tag_layout(delay(m, tag_issued.as_value(), cfg.input_stages, 1, name="tag_in"))

        # --- drain (output side), drain_stages deep ----------------------------------
        # the partial sums of a position are read the cycle before its dot products leave
        # the array, so they arrive together; stage 1 adds them (bias + dot on the first
        # K tile) and writes the sums back to psum, and on the last K tile they go on
        # through the requantisers' requant_stages into out
        # the position counters count round the M tile: every pass of a block streams it all
        def count(counter, when):
            with m.If(when):
                m.d.sync += counter.eq(Mux(counter == t_last, 0, counter + 1))

        ahead = delay(m, array.valid, cfg.latency - 1, 1, name="ahead")  # s_valid, one cycle early
        j_rd = Signal(cw, name="j_rd")  # position whose partial sums are being read
        m.d.comb += psum_rd.addr.eq(j_rd)
        count(j_rd, ahead)
        dots, sums, valid = array.s_out, psum_rd.data, array.s_valid
        tag_v = tag_layout(delay(m, tag_in.as_value(), cfg.latency + int(cfg.bram_reg), 1, name="tag_v"))
        if cfg.bram_reg:  # one register stage on both addends
            dots, sums, valid = (delay(m, v, 1, 1, name=f"{k}_reg") for k, v in
                                 (("dots", dots), ("sums", sums), ("valid", valid)))
        total = Signal(data.ArrayLayout(signed(cfg.acc_bits), cfg.cols), name="total")
        total_valid = Signal(name="total_valid")
        tag_t = Signal(tag_layout, name="tag_t")
        m.d.sync += [total_valid.eq(valid), tag_t.eq(tag_v)]
        # the first K tile starts from the bias (plus the skip term of a residual add)
        skip = self._skip_path(m, readers["skip"], array.valid & tag_in.first_kt, bias, walk_ends, nb) \
            if cfg.skip else None
        base = skip.base if cfg.skip else bias
        if cfg.skip:  # the block's skip shifts load with its parameters
            with m.If(par_shift):
                bits = cfg.skip_shift_bits
                m.d.sync += skip.shift.eq(Cat(skip.shift.as_value()[bits:], par_rd.data.skip))
        for n in range(cfg.cols):
            m.d.sync += total[n].eq(Mux(tag_v.first_kt, base[n], sums[n]) + dots[n])

        j_ps = Signal(cw, name="j_ps")  # position whose partial sums are being written
        count(j_ps, total_valid)
        out_valid = delay(m, total_valid, cfg.requant_stages, 1, name="out_valid")
        tag_o = tag_layout(delay(m, tag_t.as_value(), cfg.requant_stages, 1, name="tag_o"))
        j_out = Signal(cw, name="j_out")  # position leaving the requantisers
        out_m = Signal(cw, name="out_m")  # (pooled position) * NB
        # the fused max-pool: the results of a window leave one after another; the first
        # is taken as it is, later ones are compared as abits-bit codes (only ReLU layers
        # pool, so every value is a code), and the window's last one writes the maximum.
        # `pool_first` is `pool_count == 0` kept as a flip-flop of its own: it chooses every
        # column's result, and at 32 columns the compare's fan-out was the critical path
        pool_count = Signal(2 * GEOM_BITS, name="pool_count")
        pool_first = Signal(init=1, name="pool_first")
        window_end = Signal(name="window_end")
        m.d.comb += window_end.eq(pool_count == ends["pool_n"])
        with m.If(out_valid):
            m.d.sync += [pool_count.eq(Mux(window_end, 0, pool_count + 1)), pool_first.eq(window_end)]
        for n in range(cfg.cols):
            rq = Requantizer(cfg)
            m.submodules[f"requant_{n}"] = rq
            best = Signal(cfg.abits, name=f"pool_max_{n}")
            code = rq.out[:cfg.abits]
            take = pool_first | (code > best)
            with m.If(out_valid & take):
                m.d.sync += best.eq(code)
            m.d.comb += [
                rq.acc.eq(total[n]),
                rq.shift.eq(rq_shift[n]),
                rq.relu.eq(d.relu),
                rq.amax.eq(d.amax),
                out_wr.data[n].eq(Mux(take, rq.out, best)),
                psum_wr.data[n].eq(total[n]),
            ]
        m.d.comb += [
            psum_wr.addr.eq(j_ps),
            psum_wr.en.eq(total_valid & ~tag_t.last_kt),
            out_wr.addr.eq(out_m + nb),
            out_wr.en.eq(out_valid & tag_o.last_kt & window_end),
            self.res_valid.eq(out_wr.en),
            self.res_addr.eq(out_wr.addr),
            self.res_data.eq(out_wr.data),
        ]
        # drained: the block's last write has happened; kept as a register so the decision
        # at the block's end, which fans out to most of the controller, starts at a flip-flop
        drained = Signal(name="drained")
        count(j_out, out_valid)
        with m.If(out_valid & tag_o.last_kt):
            with m.If(j_out == t_last):
                m.d.sync += drained.eq(1)
            with m.If(window_end):
                m.d.sync += out_m.eq(out_m + d.nb_n)

        # --- weight loader: ``load_rows`` words from w_addr, one a cycle (``wgt_lanes`` rows
        # each, :func:`hw.array.lane_words`), started by the controller (start_load) in the
        # cycle it reads the first; the array takes them along its diagonal from w_load,
        # which follows that read by a cycle
        start_load = Signal(name="start_load")
        load_left = Signal(range(cfg.load_rows), name="load_left")  # reads of the load still to come
        w_load = Signal(name="w_load")
        m.d.sync += w_load.eq(start_load)
        with m.If(start_load):
            m.d.sync += [w_addr.eq(w_addr + 1), load_left.eq(cfg.load_rows - 1)]
        with m.Elif(load_left != 0):
            m.d.sync += [w_addr.eq(w_addr + 1), load_left.eq(load_left - 1)]
        # the weight words take the activations' input_stages registers (the ROM's output
        # register with bram_reg: block RAM's clock-to-output then reaches one flip-flop, not
        # the weight registers of every row; one more with input_reg, for the route across a
        # large array), so the loads keep their place on the activations' diagonal
        m.d.comb += [array.w_load.eq(delay(m, w_load, cfg.input_stages, 1, name="w_load_reg")),
                     array.w_in.eq(delay(m, wgt_rd.data, cfg.input_stages, 1, name="w_in_reg", data=True))]

        # --- controller -------------------------------------------------------------
        gap_left = Signal(range(cfg.pass_gap), name="gap_left")
        m.d.comb += self.busy.eq(1)
        with m.FSM(name="ctrl"):
            with m.State("IDLE"):
                m.d.comb += self.busy.eq(0)
                with m.If(self.start):
                    m.d.sync += [
                        m_left.eq(d.m_count),
                        nb.eq(0), par_base.eq(0), ky.eq(0), kx.eq(0), cb.eq(0), tap.eq(d.tap0),
                        w_addr.eq(0), out_base.eq(0), out_m.eq(0),
                    ]
                    first = {"c0": 0, "c1": 0, "c2": 0, "end0": d.pool_w == 1, "end1": d.pool_h == 1,
                             "end2": d.px_n == 1, "y0": -d.pad_y, "x0": -d.pad_x, "pos": 0}
                    m.d.sync += [r[k].eq(v) for r in (tile, pos) for k, v in first.items()]
                    if cfg.skip:
                        m.d.sync += [r[k].eq(first[k]) for r in (skip.tile, skip.walk) for k in skip.walk]
                    m.next = "TILE"
            with m.State("TILE"):
                # a layer of one K tile keeps no partial sums, so its M tile is the whole layer
                split = (m_left > cfg.psum_depth) & ~single_kt
                tile_len = Mux(split, cfg.psum_depth, m_left)
                m.d.sync += [t_len.eq(tile_len), t_last.eq(tile_len - 1), t_single.eq(tile_len == 1)]
                m.next = "LOAD"
            with m.State("LOAD"):
                # a block starts with the array and the drain empty: this cycle starts the
                # loaders on the first pass's weights and the block's parameters, and the
                # pass streams from the next (load_cycles is 0, asserted above)
                m.d.comb += [start_load.eq(1), start_par.eq(1)]
                if cfg.skip:  # the block's first pass walks the skip words from the M tile's start
                    m.d.sync += [skip.walk[k].eq(skip.tile[k]) for k in skip.walk]
                m.d.sync += [j.eq(0), j_rd.eq(0), j_ps.eq(0), j_out.eq(0), drained.eq(0), out_m.eq(out_base),
                             pool_count.eq(0), pool_first.eq(1), j_last.eq(t_single)]
                m.next = "STREAM"
            with m.State("STREAM"):
                m.d.comb += issue.eq(1)
                m.d.sync += [j.eq(j + 1), j_last.eq(Mux(j_last, t_single, j + 1 == t_last))]
                self._walk(m, pos, walk_ends, lambda level: {
                    k: getattr(d, f"step{level}_{key}") for k, key in (("y0", "y"), ("x0", "x"), ("pos", "pos"))})
                with m.If(j_last):
                    m.d.sync += j.eq(0)
                    with m.If(last_kt):
                        m.next = "DRAIN"
                    with m.Else():
                        # the next K tile of the block: step (ky, kx, cb) and walk the tile again
                        m.d.sync += [pos[k].eq(tile[k]) for k in tile]
                        with m.If(last_kx_cb):
                            m.d.sync += [kx.eq(0), cb.eq(0), ky.eq(ky + 1), tap.eq(tap + d.ky_jump)]
                        with m.Elif(last_cb):
                            m.d.sync += [cb.eq(0), kx.eq(kx + 1), tap.eq(tap + 1)]
                        with m.Else():
                            m.d.sync += [cb.eq(cb + 1), tap.eq(tap + 1)]
                        m.d.sync += gap_left.eq(cfg.pass_gap - 1)
                        m.next = "GAP"
            with m.State("GAP"):
                # at least pass_gap cycles, and the loader free: then load the next pass's
                # weights and stream it from the next cycle
                with m.If(gap_left != 0):
                    m.d.sync += gap_left.eq(gap_left - 1)
                with m.Elif(load_left == 0):
                    m.d.comb += start_load.eq(1)
                    m.next = "STREAM"
            with m.State("DRAIN"):
                with m.If(drained):
                    # the block is complete: step (nb, M tile)
                    m.d.sync += [ky.eq(0), kx.eq(0), cb.eq(0), tap.eq(d.tap0)]
                    tile_done = last_nb
                    m.d.sync += [nb.eq(Mux(last_nb, 0, nb + 1)), par_base.eq(Mux(last_nb, 0, par_base + cfg.cols))]
                    with m.If(tile_done):
                        # the running position is the next tile's start
                        m.d.sync += [tile[k].eq(pos[k]) for k in tile]
                        m.d.sync += [m_left.eq(m_left - t_len), out_base.eq(out_m), w_addr.eq(0)]
                        if cfg.skip:
                            m.d.sync += [skip.tile[k].eq(skip.walk[k]) for k in skip.walk]
                    with m.Else():
                        m.d.sync += [pos[k].eq(tile[k]) for k in tile]
                    with m.If(tile_done & (m_left == t_len)):
                        m.next = "DONE"
                    with m.Elif(tile_done):
                        m.next = "TILE"
                    with m.Else():
                        m.next = "LOAD"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
        return m
