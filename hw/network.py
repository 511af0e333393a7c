"""The network engine: the layer engine run step after step over a whole exported network.

:class:`NetworkCore` holds

* the layer engine (:class:`hw.engine.LayerEngine`), its results streamed out rather than
  kept in an output memory;
* read-only memories initialised from the program (:class:`hw.program.NetworkProgram`):
  every layer's weights one after another, their channel parameters, and the descriptors,
  one per step, which a sequencer hands to the engine in turn;
* the activation buffers the program allocates (A, B in turn for a chain, a third for a
  residual block's shortcut), each ``rows`` codes a word in ``rows // cols`` write banks
  (the layer's output vectors are ``cols`` wide), the residual add's skip read from one
  while the step's source is read from another;
* the input packer (:class:`InputPacker`), which writes the codes of an image into A as
  they arrive, and the logit registers the last step writes.

Nothing here depends on the model: the program is data.  The cycle count of a run is
:meth:`hw.program.NetworkProgram.cycles`, asserted by every simulated run.
"""

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from core.errors import UserError

from .engine import NO_RW_CHECK, LayerEngine, _abits, descriptor_layout
from .program import NetworkProgram


class InputPacker(wiring.Component):
    """Writes an image's input codes into activation words as they arrive.

    Codes come in ``(y, x, c)`` order (channel fastest), one per transfer
    (``in_valid & in_ready``).  A shift register holds the last ``window`` pixels; once a
    pixel is complete and at least ``lead`` pixels of the row have come, the register is
    written as one word (lane ``kx * C + c``, oldest pixel lowest), and after each row
    ``pad`` zero pixels are shifted in and written, during which ``in_ready`` is low.  Those
    zeros are also the next row's left padding.  ``in_first`` (a pulse) starts an image.

    The write is registered: ``w_en``/``w_addr``/``w_data`` come one cycle after the pixel
    completes.  ``busy`` is high while a write or padding is pending.  ``w_en`` has a bit a
    lane (code) of the word; a whole word sets them all.  ``w_any`` is high with any of them,
    a flip-flop of its own (the buffers' address multiplexers read it, not an OR of ``w_en``).

    In ``"window"`` mode (:class:`hw.program.PackerGeometry`) each code is written into
    every lane that holds it, one lane a cycle (:meth:`_window`).
    """

    def __init__(self, geometry, *, rows, abits, addr_width):
        self.g = geometry
        self.rows, self.abits = rows, abits
        super().__init__({
            "in_first": In(1),
            "in_valid": In(1),
            "in_data": In(abits),
            "in_ready": Out(1),
            "busy": Out(1),
            "w_en": Out(rows),
            "w_any": Out(1),
            "w_addr": Out(addr_width),
            "w_data": Out(rows * abits),
        })

    def elaborate(self, platform):
        if self.g.mode == "blocked":
            return self._blocked()
        if self.g.mode == "window":
            return self._window()
        m = Module()
        g, ab = self.g, self.abits
        lanes = g.window * g.channels
        reg = Signal(lanes * ab, name="window")
        chan = Signal(range(max(2, g.channels)), name="chan")
        x = Signal(range(max(2, g.width)), name="x")
        tail = Signal(range(g.pad + 1), name="tail")
        padding = Signal(name="padding")  # shifting in the zero pixels after a row
        write = Signal(name="write")
        m.d.comb += [self.in_ready.eq(~padding), self.busy.eq(padding | write),
                     self.w_en.eq(write.replicate(self.rows)), self.w_any.eq(write), self.w_data.eq(reg)]
        m.d.sync += write.eq(0)
        with m.If(write):
            m.d.sync += self.w_addr.eq(self.w_addr + 1)

        shift_in = Signal(ab)
        take = Signal()
        m.d.comb += [take.eq(Mux(padding, 1, self.in_valid)), shift_in.eq(Mux(padding, 0, self.in_data))]
        with m.If(self.in_first):
            m.d.sync += [reg.eq(0), chan.eq(0), x.eq(0), tail.eq(0), padding.eq(0), self.w_addr.eq(0)]
        with m.Elif(take):
            m.d.sync += reg.eq(Cat(reg[ab:], shift_in) if lanes > 1 else shift_in)
            with m.If(chan == g.channels - 1):
                m.d.sync += chan.eq(0)
                with m.If(padding):
                    m.d.sync += write.eq(1)
                    with m.If(tail == g.pad - 1):
                        m.d.sync += [tail.eq(0), padding.eq(0)]
                    with m.Else():
                        m.d.sync += tail.eq(tail + 1)
                with m.Else():
                    m.d.sync += write.eq(x >= g.lead)
                    with m.If(x == g.width - 1):
                        m.d.sync += [x.eq(0), padding.eq(g.pad > 0)]
                    with m.Else():
                        m.d.sync += x.eq(x + 1)
            with m.Else():
                m.d.sync += chan.eq(chan + 1)
        return m


    def _blocked(self):
        """A pixel of more channels than a word has lanes: codes fill lanes ``0 .. rows - 1``
        in turn and every ``rows`` codes, or at the pixel's last channel, make a word (its
        lanes past the last channel keep codes of the block before; their weights are 0)."""
        m = Module()
        g, ab, rows = self.g, self.abits, self.rows
        reg = Signal(rows * ab, name="block")
        lane = Signal(range(rows), name="lane")
        chan = Signal(range(g.channels), name="chan")
        write = Signal(name="write")
        m.d.comb += [self.in_ready.eq(1), self.busy.eq(write), self.w_en.eq(write.replicate(rows)),
                     self.w_any.eq(write), self.w_data.eq(reg)]
        m.d.sync += write.eq(0)
        with m.If(write):
            m.d.sync += self.w_addr.eq(self.w_addr + 1)
        last_chan = chan == g.channels - 1
        block_end = (lane == rows - 1) | last_chan
        with m.If(self.in_first):
            m.d.sync += [lane.eq(0), chan.eq(0), self.w_addr.eq(0)]
        with m.Elif(self.in_valid):
            m.d.sync += [reg.word_select(lane, ab).eq(self.in_data), write.eq(block_end),
                         lane.eq(Mux(block_end, 0, lane + 1)), chan.eq(Mux(last_chan, 0, chan + 1))]
        return m


    def _window(self):
        """Whole windows (im2col): the image is walked padded, ``(Y, X, c)`` over ``(height +
        2 * pad_y) x (width + 2 * pad)`` pixels, taking a code from ``in_data`` inside the
        image and a zero outside it.  Each code is then written, one cycle a tap ``(ky, kx)``,
        into lane ``(ky * kw + kx) * C + c`` of the words of output position ``(Y - ky, X -
        kx)`` where that is one, stopping at the first kernel row above the map (the top
        padding's codes go to few taps).  Every lane of every word is written once, so
        nothing is cleared first.  Addresses are sums (no multiplier): ``pix = (Y * out_w +
        X) * CB`` steps by constants from pixel to pixel, and the write address from ``pix``
        by constants from tap to tap (one more where the lane passes a word's last)."""
        m = Module()
        g, ab, rows = self.g, self.abits, self.rows
        c_n, kh, kw, cb = g.channels, g.kernel_rows, g.window, g.blocks
        out_h, out_w = g.out_h, g.words_per_row
        hp, wp = g.height + 2 * g.pad_y, g.width + 2 * g.pad
        y = Signal(range(hp + 1), name="y")
        x = Signal(range(wp), name="x")
        chan = Signal(range(max(2, c_n)), name="chan")
        pix = Signal(len(self.w_addr), name="pix")
        code = Signal(ab, name="code")
        ky = Signal(range(kh), name="ky")
        kx = Signal(range(kw), name="kx")
        oy = Signal(range(-kh, hp + 1), name="oy")  # the tap's output position
        ox = Signal(range(-kw, wp + 1), name="ox")
        lane = Signal(range(rows), name="lane")  # of lane index (ky * kw + kx) * C + c
        addr = Signal.like(self.w_addr, name="tap_addr")  # the tap's word
        inside = (y >= g.pad_y) & (y < g.pad_y + g.height) & (x >= g.pad) & (x < g.pad + g.width)
        valid = Signal(name="valid")  # the tap's position is on the map (below its top)
        m.d.comb += [valid.eq((oy < out_h) & (ox >= 0) & (ox < out_w)), self.w_data.eq(code.replicate(rows))]

        m.d.sync += [self.w_en.eq(0), self.w_any.eq(0)]
        with m.FSM(name="packer"):
            with m.State("IDLE"):
                with m.If(self.in_first):
                    m.d.sync += [y.eq(0), x.eq(0), chan.eq(0), pix.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):  # the next code: from the link inside the image, else 0
                m.d.comb += [self.busy.eq(1), self.in_ready.eq(inside & (y < hp))]
                start = [ky.eq(0), kx.eq(0), oy.eq(y), ox.eq(x), lane.eq(chan), addr.eq(pix)]
                with m.If(y == hp):
                    m.next = "IDLE"
                with m.Elif(~inside):
                    m.d.sync += [code.eq(0)] + start
                    m.next = "SCATTER"
                with m.Elif(self.in_valid):
                    m.d.sync += [code.eq(self.in_data)] + start
                    m.next = "SCATTER"
            with m.State("SCATTER"):  # one tap a cycle: write it, then step to the next
                m.d.comb += self.busy.eq(1)

                def next_code():  # the code is placed: on to the next
                    m.next = "FETCH"
                    with m.If(chan < c_n - 1):
                        m.d.sync += chan.eq(chan + 1)
                    with m.Else():
                        m.d.sync += chan.eq(0)
                        with m.If(x < wp - 1):
                            m.d.sync += [x.eq(x + 1), pix.eq(pix + cb)]
                        with m.Else():  # the next row's first pixel: X back by wp - 1
                            m.d.sync += [x.eq(0), y.eq(y + 1), pix.eq(pix + (2 - kw) * cb)]

                w_en = Signal.like(self.w_en, name="tap_en")
                m.d.comb += w_en.eq(Const(1, rows) << lane)
                with m.If((kx == 0) & (oy < 0)):  # this kernel row and the rest lie above the map
                    next_code()
                with m.Else():
                    with m.If(valid):  # the write is registered
                        m.d.sync += [self.w_en.eq(w_en), self.w_any.eq(1), self.w_addr.eq(addr)]
                    # the next tap's lane, and its word: one on where the lane wraps
                    if cb == 1:  # every lane of the window in one word: no wrap
                        wrap = Const(0, 1)
                        m.d.sync += lane.eq(lane + c_n)
                    else:
                        wrap = lane + c_n >= rows
                        m.d.sync += lane.eq(Mux(wrap, lane + c_n - rows, lane + c_n))
                    with m.If(kx < kw - 1):
                        m.d.sync += [kx.eq(kx + 1), ox.eq(ox - 1), addr.eq(addr - cb + wrap)]
                    with m.Else():
                        m.d.sync += [kx.eq(0), ky.eq(ky + 1), ox.eq(x), oy.eq(oy - 1),
                                     addr.eq(addr + ((kw - 1) - out_w) * cb + wrap)]
                        with m.If(ky == kh - 1):
                            next_code()
        with m.If(self.w_any):
            m.d.comb += self.busy.eq(1)
        return m


#: iCE40 UP5K single-port RAM: 16384 words of 16 bits with a write mask per 4-bit nibble.
SPRAM_WORDS, SPRAM_BITS, SPRAM_NIBBLE = 16384, 16, 4
#: SPRAM cells on the UP5K.
SPRAM_CELLS = 4


class ActBuffer(wiring.Component):
    """An activation buffer: one read port (data a cycle after the address) and one write
    port with a write enable per bank of ``bank_bits``.  It is never read and written in
    one cycle (a buffer is either a step's source or its destination), so it can be the
    UP5K's single-port SPRAM (``spram=True``: SB_SPRAM256KA cells side by side, the banks'
    enables mapped onto their nibble write masks) or any block RAM.  In SPRAM each bank is
    padded to whole 4-bit nibbles and the word to whole 16-bit cells (:func:`spram_layout`).
    ``w_any`` must be high exactly when some bit of ``w_en`` is: SPRAM's shared address
    port takes ``w_addr`` then (the writer gives it from a flip-flop rather than an OR).
    """

    def __init__(self, *, width, depth, banks, spram=False):
        self.width, self.depth, self.banks, self.spram = width, depth, banks, spram
        self.bank_bits = width // banks
        if spram and depth > SPRAM_WORDS:
            raise ValueError(f"a {depth}-word buffer does not fit an SPRAM of {SPRAM_WORDS} words")
        aw = _abits(depth)
        super().__init__({
            "r_addr": In(aw),
            "r_data": Out(width),
            "w_addr": In(aw),
            "w_data": In(width),
            "w_en": In(banks),
            "w_any": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        if not self.spram:
            mem = Memory(shape=unsigned(self.width), depth=self.depth, init=[], attrs=NO_RW_CHECK)
            m.submodules.mem = mem
            wr, rd = mem.write_port(granularity=self.bank_bits), mem.read_port()
            m.d.comb += [wr.addr.eq(self.w_addr), wr.data.eq(self.w_data), wr.en.eq(self.w_en),
                         rd.addr.eq(self.r_addr), self.r_data.eq(rd.data)]
            return m
        writing = self.w_any
        addr = Signal(14, name="spram_addr")
        m.d.comb += addr.eq(Mux(writing, self.w_addr, self.r_addr))
        pbank, cells = spram_layout(self.width, self.banks)
        bb, total = self.bank_bits, cells * SPRAM_BITS
        # bank b's bits sit at b * pbank of the padded word; the padding is written as zeros
        w_pad = Cat(Cat(self.w_data[b * bb:(b + 1) * bb], Const(0, pbank - bb)) for b in range(self.banks))
        w_pad = Cat(w_pad, Const(0, total - len(w_pad)))
        r_pad = Signal(total, name="spram_rdata")
        m.d.comb += self.r_data.eq(Cat(r_pad[b * pbank:b * pbank + bb] for b in range(self.banks)))

        def nibble_en(bit):  # the write enable of the nibble at padded bit ``bit``
            return self.w_en[bit // pbank] if bit // pbank < self.banks else Const(0, 1)

        for i in range(cells):
            lo = i * SPRAM_BITS
            mask = Cat(nibble_en(lo + SPRAM_NIBBLE * j) for j in range(SPRAM_BITS // SPRAM_NIBBLE))
            m.submodules[f"spram_{i}"] = Instance(
                "SB_SPRAM256KA",
                i_ADDRESS=addr, i_DATAIN=w_pad[lo:lo + SPRAM_BITS], i_MASKWREN=mask, i_WREN=writing,
                i_CHIPSELECT=1, i_CLOCK=ClockSignal(), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                o_DATAOUT=r_pad[lo:lo + SPRAM_BITS])
        return m


def spram_layout(width, banks):
    """How a ``width``-bit buffer word of ``banks`` write banks sits in SPRAM cells: each
    bank padded to whole nibbles (``pbank`` bits), the word to whole cells.  Returns
    ``(pbank, cells)``."""
    pbank = -(-(width // banks) // SPRAM_NIBBLE) * SPRAM_NIBBLE
    return pbank, -(-(pbank * banks) // SPRAM_BITS)


def core_layout(program):
    """The per-step fields the network adds to the engine's descriptor."""
    n = len(program.buffers)
    fields = {
        "wgt_base": unsigned(_abits(program.wgt_words) + 1),
        "par_base": unsigned(_abits(program.par_words) + 1),
        "src": unsigned(_abits(n)),  # the buffer the step reads
        "dst_mask": unsigned(n),  # the buffers it writes (two for a tensor read twice at once)
        "dst_logits": unsigned(1),
    }
    if program.cfg.skip:
        fields["skip_buf"] = unsigned(_abits(n))  # the buffer its residual add reads
    return data.StructLayout(fields)


def spram_buffers(program, spram):
    """The buffers held in the UP5K's SPRAM (``spram``: the family has it): in order, while
    their cells fit the device's :data:`SPRAM_CELLS`; the rest are block RAM."""
    if not spram:
        return ()
    cells, chosen = 0, []
    for b in program.buffers:
        need = spram_layout(program.cfg.rows * program.cfg.abits, b.banks)[1]
        if b.words <= SPRAM_WORDS and cells + need <= SPRAM_CELLS:
            cells += need
            chosen.append(b.name)
    return tuple(chosen)


class NetworkCore(wiring.Component):
    """A whole network on the layer engine, from input codes to logits.

    Ports (all synchronous):

    * ``in_first`` (a pulse before an image), ``in_valid``/``in_data``/``in_ready``: the
      image's input codes in ``(y, x, c)`` order, one per transfer, only while not ``busy``;
    * ``start``: a one-cycle pulse, while ``busy`` is low, runs every step;
    * ``busy``; ``done``: a one-cycle pulse in the run's last cycle;
    * ``step_done``: high in the last cycle of each step (the cycle in which the engine's
      ``done`` is high), one pulse per step of :attr:`hw.program.NetworkProgram.steps`; the
      last coincides with ``done``.  With the ``start`` cycle as cycle 0, step ``i``'s pulse
      comes ``steps[i].plan.cycles() + STEP_OVERHEAD`` cycles after step ``i - 1``'s (after
      the ``start`` cycle for step 0);
    * ``logit_addr``/``logit_data``: a combinational read of the last run's logits.

    Parameters
    ----------
    program : NetworkProgram
    spram : bool
        Hold the activation buffers in the iCE40 UP5K's SPRAM (see :class:`ActBuffer`).
    """

    def __init__(self, program, *, spram=False):
        if not isinstance(program, NetworkProgram):
            raise TypeError(f"program must be a NetworkProgram, not {program!r}")
        self.program = program
        self.spram = bool(spram)
        cfg = program.cfg
        self.cfg = cfg
        self.engine = LayerEngine(cfg, external=("act", "wgt", "par") + (("skip",) if cfg.skip else ()),
                                  out_memory=False)
        super().__init__({
            "in_first": In(1),
            "in_valid": In(1),
            "in_data": In(cfg.abits),
            "in_ready": Out(1),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "step_done": Out(1),
            "logit_addr": In(range(program.num_classes)),
            "logit_data": Out(signed(program.logit_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        prog, cfg = self.program, self.cfg
        banks, cols, ab = prog.banks, cfg.cols, cfg.abits

        m.submodules.engine = engine = self.engine

        # --- the program: descriptors by step, weights and parameters ---------------------
        steps = prog.descriptors()
        step = Signal(range(max(2, len(steps))), name="step")
        layout, extra = descriptor_layout(cfg), core_layout(prog)
        desc = Signal(extra, name="core_desc")
        with m.Switch(step):
            for i, fields in enumerate(steps):
                with m.Case(i):
                    m.d.comb += [
                        engine.desc.eq(layout.const({k: fields[k] for k in layout.members})),
                        desc.eq(extra.const({k: fields[k] for k in extra.members})),
                    ]

        wgt_rom = Memory(shape=unsigned(cfg.code_bits * cols * cfg.wgt_lanes), depth=prog.wgt_words, init=prog.wgt_rom())
        par_rom = Memory(shape=unsigned(engine.par_shape.size), depth=prog.par_words, init=prog.par_rom())
        m.submodules.wgt_rom, m.submodules.par_rom = wgt_rom, par_rom
        for name, rom, port, base in (("wgt", wgt_rom, engine.wgt_r, desc.wgt_base),
                                      ("par", par_rom, engine.par_r, desc.par_base)):
            # the step's base address, registered: the engine reads a ROM two cycles after its
            # start at the earliest, and the step's decode then stays off the path to the ROM
            base_r = Signal.like(base, name=f"{name}_base_r")
            m.d.sync += base_r.eq(base)
            rd = rom.read_port()
            m.d.comb += [rd.addr.eq(port.addr + base_r), port.data.eq(rd.data)]

        # --- activation buffers ----------------------------------------------------------
        m.submodules.packer = packer = InputPacker(prog.packer, rows=cfg.rows, abits=ab,
                                                   addr_width=_abits(prog.buffer_words(prog.input_buffers[0])))
        lb = banks.bit_length() - 1
        # the engine's results reach the buffers and the logits a cycle after it shows them,
        # through registers: the paths from its pooling and requantisers to the RAM's address
        # and data and to the logits' enables start at flip-flops.  The last write lands by
        # the cycle of the engine's ``done``, before the next step reads (SET and GO come
        # first) and in time for the logits to be read from ``done`` on.
        res_valid = Signal(name="res_valid")
        res_logit = Signal(name="res_logit")
        res_mask = Signal(len(prog.buffers), name="res_mask")
        res_addr = Signal.like(engine.res_addr, name="res_addr")
        res_values = Signal.like(engine.res_data, name="res_values")
        m.d.sync += [res_valid.eq(engine.res_valid & ~desc.dst_logits), res_logit.eq(engine.res_valid & desc.dst_logits),
                     res_mask.eq(desc.dst_mask), res_addr.eq(engine.res_addr), res_values.eq(engine.res_data)]
        res_codes = Cat(res_values[n][:ab] for n in range(cols))
        res_word, res_bank = res_addr[lb:], res_addr[:lb]
        if cfg.skip:  # the skip codes of result address a: bank a % banks of word a // banks
            skip_bank = Signal(max(1, lb), name="skip_bank")
            m.d.sync += skip_bank.eq(engine.skip_r.addr[:lb])
        read = {}
        in_spram = spram_buffers(prog, self.spram)
        for k, b in enumerate(prog.buffers):
            buf = ActBuffer(width=cfg.rows * ab, depth=b.words, banks=b.banks, spram=b.name in in_spram)
            m.submodules[f"buf_{b.name}"] = buf
            r_addr = engine.act_r.addr
            if cfg.skip:  # a step's source and skip are different buffers: one read port each
                r_addr = Mux(engine.desc.skip & (desc.skip_buf == k), engine.skip_r.addr[lb:], r_addr)
            mine = res_valid & res_mask[k]  # a result for this buffer
            m.d.comb += [
                buf.w_addr.eq(res_word),
                buf.w_data.eq(res_codes.replicate(banks)),
                buf.w_any.eq(mine),
                buf.r_addr.eq(r_addr),
            ]
            per = b.banks // banks  # write enables a result bank (b.banks: one a lane for the packer's)
            for e in range(b.banks):
                m.d.comb += buf.w_en[e].eq(mine & (res_bank == e // per))
            if b.name in prog.input_buffers:  # the packer writes the input while the engine is idle
                with m.If(packer.w_any):
                    lanes = cfg.rows // b.banks
                    m.d.comb += [buf.w_addr.eq(packer.w_addr), buf.w_data.eq(packer.w_data), buf.w_any.eq(1),
                                 buf.w_en.eq(Cat(packer.w_en[e * lanes] for e in range(b.banks)))]
            read[k] = buf.r_data
        with m.Switch(desc.src):
            for k, data_k in read.items():
                with m.Case(k):
                    m.d.comb += engine.act_r.data.eq(data_k)
        if cfg.skip:
            skip_word = Signal(cfg.rows * ab, name="skip_word")
            with m.Switch(desc.skip_buf):
                for k, data_k in read.items():
                    with m.Case(k):
                        m.d.comb += skip_word.eq(data_k)
            m.d.comb += engine.skip_r.data.eq(skip_word.word_select(skip_bank, cols * ab) if banks > 1 else skip_word)

        # --- logits ----------------------------------------------------------------------
        logits = [Signal(signed(prog.logit_bits), name=f"logit_{i}") for i in range(prog.num_classes)]
        for i, reg in enumerate(logits):
            with m.If(res_logit & (res_addr == i // cols)):
                m.d.sync += reg.eq(res_values[i % cols])
        with m.Switch(self.logit_addr):
            for i, reg in enumerate(logits):
                with m.Case(i):
                    m.d.comb += self.logit_data.eq(reg)

        # --- the sequencer -----------------------------------------------------------------
        m.d.comb += [
            packer.in_first.eq(self.in_first),
            packer.in_valid.eq(self.in_valid),
            packer.in_data.eq(self.in_data),
            self.in_ready.eq(packer.in_ready),
        ]
        running = Signal(name="running")
        m.d.comb += self.busy.eq(running | packer.busy)
        with m.FSM(name="seq"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [step.eq(0), running.eq(1)]
                    m.next = "SET"
            with m.State("SET"):  # the engine's registers take the step's descriptor
                m.next = "GO"
            with m.State("GO"):
                m.d.comb += engine.start.eq(1)
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.step_done.eq(engine.done)
                with m.If(engine.done):
                    with m.If(step == len(steps) - 1):
                        m.d.comb += self.done.eq(1)
                        m.d.sync += running.eq(0)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += step.eq(step + 1)
                        m.next = "SET"
        return m


class NetworkBoard(wiring.Component):
    """What goes on the board: the host link (:class:`hw.link.HostLink`, UART frames in and
    out) driving a :class:`NetworkCore`.

    Ports: ``rx``, ``tx`` (the UART lines) and ``busy`` (for an LED).

    Parameters
    ----------
    program : NetworkProgram
    clocks_per_bit : int
        The UART's bit time in clock cycles (:func:`hw.uart.clocks_per_bit`).
    model_id : int
        32 bits the link reports in its INFO reply, so a host can tell which model it talks to.
    spram : bool
        Activation buffers in SPRAM (iCE40 UP5K).
    """

    def __init__(self, program, *, clocks_per_bit, model_id=0, spram=False):
        from .link import HostLink

        self.program = program
        self.core = NetworkCore(program, spram=spram)
        p = program.packer
        # the link offers each code from a cycle after its byte until the next byte comes,
        # a byte time later, the first a byte time after in_first: a slower packer fails the frame
        first, between = p.stall_cycles()
        byte = 10 * clocks_per_bit
        if between > byte - 2 or first + between > 2 * byte - 2:
            raise UserError(f"the input packer needs up to {between} cycles between two input codes and {first} before "
                            f"the first, more than the UART's {byte}-cycle byte time allows; use a lower baud rate "
                            "or a faster clock")
        self.link = HostLink(n_inputs=program.n_inputs, input_bits=program.network.input_bits,
                             num_classes=program.num_classes, logit_bits=program.logit_bits, model_id=model_id,
                             input_shape=(p.channels, p.height, p.width), clocks_per_bit=clocks_per_bit)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.link, m.submodules.core = link, core = self.link, self.core
        m.d.comb += [link.rx.eq(self.rx), self.tx.eq(link.tx), self.busy.eq(core.busy)]
        # the link drives the core's inputs and reads its outputs, port for port
        m.d.comb += [getattr(core, name).eq(getattr(link, name))
                     for name in ("in_first", "in_valid", "in_data", "start", "logit_addr")]
        m.d.comb += [getattr(link, name).eq(getattr(core, name)) for name in ("in_ready", "busy", "done", "logit_data")]
        return m
