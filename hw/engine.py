"""The layer engine: runs one conv2d/linear layer of any size on the fixed array by tiling.

Memories (``amaranth.lib.memory``), with the host's ports on the engine's signature:

======== ============================ ================================================
memory   word                         address
======== ============================ ================================================
act      ``rows`` input codes         ``(y * W + x) * CB + cb``: channel-blocked HWC
wgt      one array row of codes       tile after tile, bottom row first
par      bias and shift of ``cols``   output channel block ``nb``
psum     ``cols`` partial sums        position within the M tile (engine-internal)
out      ``cols`` results             ``m * NB + nb``: channel-blocked HWC, like act
======== ============================ ================================================

The schedule, with ``M`` output positions, ``KT = kh * kw * CB`` K tiles and ``NB``
output channel blocks, is::

    for each M tile of at most psum_depth positions:
        for nb in range(NB):
            for kt in range(KT):            # (ky, kx, cb), cb fastest
                load the (nb, kt) weights    # rows + 1 cycles
                stream the tile's positions  # one vector per cycle
                drain the array              # latency + 2 cycles

The first K tile starts from the bias, the others from the partial sums of the previous
one; the last one goes through the requantisers into ``out``.  Every address is made
by adding host-computed steps (:mod:`hw.plan`), so the controller has no multiplier.
The exact cycle count is :meth:`hw.plan.LayerPlan.cycles`.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from .array import SystolicArray
from .config import HwConfig
from .requant import Requantizer

#: Bits of the kernel, stride and padding fields of a layer descriptor.
GEOM_BITS = 4


def _abits(depth):
    return max(1, (depth - 1).bit_length())


def coord_bits(cfg):
    """Unsigned bits of a coordinate, count or address; one more bit makes it signed."""
    return max(cfg.act_depth, cfg.out_depth, cfg.wgt_depth).bit_length() + 1


def descriptor_layout(cfg):
    """The layer descriptor: the geometry and the address steps the controller adds."""
    cw = coord_bits(cfg)
    return data.StructLayout({
        "relu": unsigned(1),
        "amax": unsigned(cfg.abits),  # clamp bound 2**out_bits - 1
        "in_h": unsigned(cw),
        "in_w": unsigned(cw),
        "out_w": unsigned(cw),
        "m_count": unsigned(cw),  # output positions out_h * out_w
        "cb_n": unsigned(cw),  # input channel blocks CB
        "nb_n": unsigned(cw),  # output channel blocks NB
        "kh": unsigned(GEOM_BITS),
        "kw": unsigned(GEOM_BITS),
        "pad_y": unsigned(GEOM_BITS),
        "pad_x": unsigned(GEOM_BITS),
        "stride_y": unsigned(GEOM_BITS),
        "stride_x": unsigned(GEOM_BITS),
        "tap0": signed(cw + 1),  # act offset of tap (0, 0, 0): (-pad_y * W - pad_x) * CB
        "ky_jump": signed(cw + 1),  # from tap (ky, kw-1, CB-1) to (ky+1, 0, 0): (W - kw) * CB + 1
        "x_step": signed(cw + 1),  # next position in a row: stride_x * CB
        "y_jump": signed(cw + 1),  # first position of the next row: (stride_y * W - (out_w-1) * stride_x) * CB
    })


def par_layout(cfg):
    """A channel-parameter word: ``cols`` biases, then ``cols`` requantiser shifts."""
    return data.StructLayout({
        "bias": data.ArrayLayout(signed(cfg.acc_bits), cfg.cols),
        "shift": data.ArrayLayout(signed(cfg.rq_bits), cfg.cols),
    })


class LayerEngine(wiring.Component):
    """Runs the layer described on ``desc`` over the memories, from ``start`` to ``done``.

    Parameters
    ----------
    cfg : HwConfig
        Array shape, widths and memory depths.

    Notes
    -----
    Ports: ``desc`` (held while ``busy``), ``start`` (a one-cycle pulse while idle),
    ``busy``, ``done`` (a one-cycle pulse at the end); ``act_w``, ``wgt_w``, ``par_w``
    (write ports into the memories, used while idle) and ``out_r`` (a synchronous read
    port of the output memory, one cycle of latency).  ``res_valid``/``res_addr``/``res_data``
    show each write into the output memory in the cycle it happens.
    """

    def __init__(self, cfg):
        if not isinstance(cfg, HwConfig):
            raise TypeError(f"cfg must be an HwConfig, not {cfg!r}")
        self.cfg = cfg
        self.act_shape = data.ArrayLayout(cfg.abits, cfg.rows)
        self.wgt_shape = data.ArrayLayout(cfg.code_bits, cfg.cols)
        self.par_shape = par_layout(cfg)
        self.psum_shape = data.ArrayLayout(signed(cfg.acc_bits), cfg.cols)
        self.out_shape = data.ArrayLayout(signed(cfg.out_bits), cfg.cols)
        super().__init__({
            "desc": In(descriptor_layout(cfg)),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "act_w": Out(WritePort.Signature(addr_width=_abits(cfg.act_depth), shape=self.act_shape)),
            "wgt_w": Out(WritePort.Signature(addr_width=_abits(cfg.wgt_depth), shape=self.wgt_shape)),
            "par_w": Out(WritePort.Signature(addr_width=_abits(cfg.par_depth), shape=self.par_shape)),
            "out_r": Out(ReadPort.Signature(addr_width=_abits(cfg.out_depth), shape=self.out_shape)),
            # every write into the output memory, as it happens (a result stream)
            "res_valid": Out(1),
            "res_addr": Out(_abits(cfg.out_depth)),
            "res_data": Out(self.out_shape),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, d = self.cfg, self.desc
        cw = coord_bits(cfg)
        scoord = signed(cw + 1)

        m.submodules.act_mem = act_mem = Memory(shape=self.act_shape, depth=cfg.act_depth, init=[])
        m.submodules.wgt_mem = wgt_mem = Memory(shape=self.wgt_shape, depth=cfg.wgt_depth, init=[])
        m.submodules.par_mem = par_mem = Memory(shape=self.par_shape, depth=cfg.par_depth, init=[])
        m.submodules.psum_mem = psum_mem = Memory(shape=self.psum_shape, depth=cfg.psum_depth, init=[])
        m.submodules.out_mem = out_mem = Memory(shape=self.out_shape, depth=cfg.out_depth, init=[])
        wiring.connect(m, wiring.flipped(self.act_w), act_mem.write_port())
        wiring.connect(m, wiring.flipped(self.wgt_w), wgt_mem.write_port())
        wiring.connect(m, wiring.flipped(self.par_w), par_mem.write_port())
        wiring.connect(m, wiring.flipped(self.out_r), out_mem.read_port())
        act_rd = act_mem.read_port()
        wgt_rd = wgt_mem.read_port()
        par_rd = par_mem.read_port()
        psum_rd = psum_mem.read_port()
        psum_wr = psum_mem.write_port()
        out_wr = out_mem.write_port()

        m.submodules.array = array = SystolicArray(cfg)
        m.d.comb += array.en.eq(1)

        # --- loop state -------------------------------------------------------------
        # M tile: saved start of the tile and the positions left from it
        m_left = Signal(cw, name="m_left")
        t_len = Signal(cw, name="t_len")  # positions in this M tile
        tile = {k: Signal(scoord, name=f"tile_{k}") for k in ("ox", "y0", "x0", "pos")}
        pos = {k: Signal(scoord, name=f"run_{k}") for k in ("ox", "y0", "x0", "pos")}
        # K tile (tap) and N block
        ky = Signal(GEOM_BITS, name="ky")
        kx = Signal(GEOM_BITS, name="kx")
        cb = Signal(cw, name="cb")
        tap = Signal(scoord, name="tap")
        nb = Signal(cw, name="nb")
        w_addr = Signal(cw, name="w_addr")
        out_base = Signal(cw, name="out_base")  # m0 * NB of this M tile
        first_kt = Signal(name="first_kt")
        last_kt = Signal(name="last_kt")
        m.d.comb += [
            first_kt.eq((ky == 0) & (kx == 0) & (cb == 0)),
            last_kt.eq((ky == d.kh - 1) & (kx == d.kw - 1) & (cb == d.cb_n - 1)),
        ]
        last_nb = nb == d.nb_n - 1

        # --- per-nb channel parameters ----------------------------------------------
        bias = Signal(data.ArrayLayout(signed(cfg.acc_bits), cfg.cols), name="bias")
        rq_shift = Signal(data.ArrayLayout(signed(cfg.rq_bits), cfg.cols), name="rq_shift")
        m.d.comb += par_rd.addr.eq(nb)

        # --- stream (input side): issue reads, present to the array one cycle later --
        j = Signal(cw, name="j")  # position within the M tile
        y = Signal(scoord, name="y")
        x = Signal(scoord, name="x")
        m.d.comb += [
            y.eq(pos["y0"] + ky),
            x.eq(pos["x0"] + kx),
            act_rd.addr.eq(pos["pos"] + tap),
            psum_rd.addr.eq(j),
            wgt_rd.addr.eq(w_addr),
        ]
        inside = Signal(name="inside")
        m.d.comb += inside.eq((y >= 0) & (y < d.in_h) & (x >= 0) & (x < d.in_w))
        issue = Signal(name="issue")
        issued = Signal(name="issued")  # a read was issued last cycle: present it now
        inside_d = Signal(name="inside_d")
        first_d = Signal(name="first_d")
        m.d.sync += [issued.eq(issue), inside_d.eq(inside), first_d.eq(first_kt)]
        for k in range(cfg.rows):
            m.d.comb += array.a[k].eq(Mux(inside_d, act_rd.data[k], 0))
        for n in range(cfg.cols):
            m.d.comb += array.s_in[n].eq(Mux(first_d, bias[n], psum_rd.data[n]))
        m.d.comb += array.valid.eq(issued)

        # --- drain (output side): partial sums back to psum, last K tile to out -----
        j_out = Signal(cw, name="j_out")
        out_m = Signal(cw, name="out_m")  # (m0 + j_out) * NB
        for n in range(cfg.cols):
            rq = Requantizer(cfg)
            m.submodules[f"requant_{n}"] = rq
            m.d.comb += [
                rq.acc.eq(array.s_out[n]),
                rq.shift.eq(rq_shift[n]),
                rq.relu.eq(d.relu),
                rq.amax.eq(d.amax),
                out_wr.data[n].eq(rq.out),
                psum_wr.data[n].eq(array.s_out[n]),
            ]
        m.d.comb += [
            psum_wr.addr.eq(j_out),
            psum_wr.en.eq(array.s_valid & ~last_kt),
            out_wr.addr.eq(out_m + nb),
            out_wr.en.eq(array.s_valid & last_kt),
            self.res_valid.eq(out_wr.en),
            self.res_addr.eq(out_wr.addr),
            self.res_data.eq(out_wr.data),
        ]
        with m.If(array.s_valid):
            m.d.sync += [j_out.eq(j_out + 1), out_m.eq(out_m + d.nb_n)]

        # --- controller -------------------------------------------------------------
        load_count = Signal(range(cfg.rows + 2), name="load_count")
        m.d.comb += self.busy.eq(1)
        with m.FSM(name="ctrl"):
            with m.State("IDLE"):
                m.d.comb += self.busy.eq(0)
                with m.If(self.start):
                    m.d.sync += [
                        m_left.eq(d.m_count),
                        nb.eq(0), ky.eq(0), kx.eq(0), cb.eq(0), tap.eq(d.tap0),
                        w_addr.eq(0), out_base.eq(0), out_m.eq(0),
                        tile["ox"].eq(0), tile["pos"].eq(0),
                        tile["y0"].eq(-d.pad_y), tile["x0"].eq(-d.pad_x),
                        pos["ox"].eq(0), pos["pos"].eq(0),
                        pos["y0"].eq(-d.pad_y), pos["x0"].eq(-d.pad_x),
                    ]
                    m.next = "TILE"
            with m.State("TILE"):
                m.d.sync += t_len.eq(Mux(m_left > cfg.psum_depth, cfg.psum_depth, m_left))
                m.next = "LOAD"
            with m.State("LOAD"):
                # cycle c < rows reads weight word c; cycles 1..rows shift it in
                m.d.sync += load_count.eq(load_count + 1)
                with m.If(load_count < cfg.rows):
                    m.d.sync += w_addr.eq(w_addr + 1)
                with m.If(load_count != 0):
                    m.d.comb += array.w_shift.eq(1)
                with m.If(load_count == 1):
                    m.d.sync += [bias.eq(par_rd.data.bias), rq_shift.eq(par_rd.data.shift)]
                with m.If(load_count == cfg.rows):
                    m.d.sync += [load_count.eq(0), j.eq(0), j_out.eq(0), out_m.eq(out_base)]
                    m.next = "STREAM"
            with m.State("STREAM"):
                m.d.comb += issue.eq(1)
                m.d.sync += j.eq(j + 1)
                with m.If(pos["ox"] == d.out_w - 1):
                    m.d.sync += [
                        pos["ox"].eq(0), pos["x0"].eq(-d.pad_x),
                        pos["y0"].eq(pos["y0"] + d.stride_y),
                        pos["pos"].eq(pos["pos"] + d.y_jump),
                    ]
                with m.Else():
                    m.d.sync += [
                        pos["ox"].eq(pos["ox"] + 1), pos["x0"].eq(pos["x0"] + d.stride_x),
                        pos["pos"].eq(pos["pos"] + d.x_step),
                    ]
                with m.If(j == t_len - 1):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(j_out == t_len):
                    # the pass is complete: step (kt, nb, M tile)
                    with m.If(~last_kt):
                        with m.If((kx == d.kw - 1) & (cb == d.cb_n - 1)):
                            m.d.sync += [kx.eq(0), cb.eq(0), ky.eq(ky + 1), tap.eq(tap + d.ky_jump)]
                        with m.Elif(cb == d.cb_n - 1):
                            m.d.sync += [cb.eq(0), kx.eq(kx + 1), tap.eq(tap + 1)]
                        with m.Else():
                            m.d.sync += [cb.eq(cb + 1), tap.eq(tap + 1)]
                    with m.Else():
                        m.d.sync += [ky.eq(0), kx.eq(0), cb.eq(0), tap.eq(d.tap0)]
                    tile_done = last_kt & last_nb
                    with m.If(last_kt):
                        m.d.sync += nb.eq(Mux(last_nb, 0, nb + 1))
                    with m.If(tile_done):
                        # the running position is the next tile's start
                        m.d.sync += [tile[k].eq(pos[k]) for k in tile]
                        m.d.sync += [m_left.eq(m_left - t_len), out_base.eq(out_m), w_addr.eq(0)]
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
        m.d.comb += array.w_in.eq(wgt_rd.data)
        return m
