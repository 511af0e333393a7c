"""On-board self-test: run one exported layer from memories and check its outputs' checksum.

The board top (:mod:`templates.board`) wraps :class:`SelfTest` with a reset synchroniser,
memories initialised from memory files and LEDs.  The ``act`` and ``wgt`` memories are the
engine's input memories (one golden sample's activations, the layer's weights).  The
``ctl`` memory, 16 bits wide, holds the layer descriptor and the channel parameters
(:func:`control_words`); after reset the self-test copies them into a descriptor register
and the engine's own parameter memory, so synthesis sees a general engine, not one folded
round a constant layer.  It then starts the engine once, reads the whole output memory
back, folds every word with its address into a 32-bit checksum (:func:`checksum`) and
compares that with the checksum of the golden outputs, computed in Python from the same
artifact.  ``passed`` or ``failed`` then stays high until the next reset.
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out

from core import codes

from .engine import LayerEngine, _abits, descriptor_layout, par_layout

#: Bits of the checksum.
CHECK_BITS = 32
#: Checksum chunks XORed before the first register of the fold.
FOLD_GROUP = 4
#: Bits of a control-memory word.
CTL_BITS = 16


def chunks(bits):
    """Control-ROM words one ``bits``-bit value takes."""
    return -(-bits // CTL_BITS)


def control_words(cfg, descriptor, par_words):
    """The control memory's contents: the descriptor (field values, see
    :func:`hw.engine.descriptor_layout`), then each parameter word (integers), each value
    split into ``CTL_BITS``-bit words, least significant first."""
    layout = descriptor_layout(cfg)
    values = [(layout.const(descriptor).as_value().value, layout.size)]
    values += [(int(w), par_layout(cfg).size) for w in par_words]
    out = []
    for value, bits in values:
        value &= 2**bits - 1
        out += [(value >> (CTL_BITS * i)) & (2**CTL_BITS - 1) for i in range(chunks(bits))]
    return out


def fold(word, bits):
    """XOR of the ``CHECK_BITS``-bit chunks of a ``bits``-bit integer ``word``."""
    out = 0
    for lo in range(0, bits, CHECK_BITS):
        out ^= (word >> lo) & (2**CHECK_BITS - 1)
    return out


def checksum(cfg, words):
    """Checksum of output-memory words (integers, address order), as :class:`SelfTest`
    computes it: ``sum over addresses a of fold(word_a | a << word_bits)`` modulo ``2**32``."""
    word_bits = cfg.cols * cfg.out_bits
    total_bits = word_bits + _abits(cfg.out_depth)
    return sum(fold(w | (a << word_bits), total_bits) for a, w in enumerate(words)) % 2**CHECK_BITS


def expected_checksum(plan, y):
    """Checksum of the output memory after ``plan``'s layer produced ``y``."""
    cfg = plan.cfg
    return checksum(cfg, codes.pack(plan.out_image(y), cfg.out_bits))


def for_plan(plan, par_words, y):
    """``(SelfTest, control words)`` that run ``plan``'s layer with parameter words
    ``par_words`` (:meth:`hw.plan.LayerPlan.memory_words`) and expect outputs ``y``."""
    dut = SelfTest(plan.cfg, par_count=len(par_words), out_words=plan.out_words,
                   expected=expected_checksum(plan, y))
    return dut, control_words(plan.cfg, plan.descriptor(), par_words)


class SelfTest(wiring.Component):
    """Loads a layer's descriptor and ``par_count`` parameter words from the control memory
    (``ctl_r``), runs it on a :class:`LayerEngine` whose ``act`` and ``wgt`` memories (and
    ``skip``, in a design with the skip path) are outside (``act_r``, ``wgt_r``, ``skip_r``:
    memories in the board top) and checks the output memory
    against ``expected`` (:func:`expected_checksum`).

    Ports: the three memory read ports, ``passed``, ``failed`` (each stays high once decided),
    ``busy`` (loading, running or reading back) and ``checksum`` (the value computed, for
    a testbench).
    """

    def __init__(self, cfg, *, par_count, out_words, expected):
        self.cfg = cfg
        # the board's memories: activations, weights and, with the skip path, the skip codes
        self.external = ("act", "wgt") + (("skip",) if cfg.skip else ())
        self.engine = LayerEngine(cfg, external=self.external)
        self.par_count = int(par_count)
        self.out_words = int(out_words)
        self.expected = int(expected)
        if not 0 < self.out_words <= cfg.out_depth:
            raise ValueError(f"out_words {out_words} must be in 1..{cfg.out_depth}")
        if not 0 < self.par_count <= self.engine.depth("par"):
            raise ValueError(f"par_count {par_count} must be in 1..{self.engine.depth('par')}")
        self.ctl_words = chunks(descriptor_layout(cfg).size) + self.par_count * chunks(par_layout(cfg).size)
        members = {f"{name}_r": In(ReadPort.Signature(addr_width=_abits(self.engine.depth(name)),
                                                       shape=self.engine.shape(name)))
                   for name in self.external}
        members["ctl_r"] = In(ReadPort.Signature(addr_width=_abits(self.ctl_words), shape=CTL_BITS))
        super().__init__(members | {
            "passed": Out(1),
            "failed": Out(1),
            "busy": Out(1),
            "checksum": Out(CHECK_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.engine = engine = self.engine
        for name in self.external:
            outer, inner = getattr(self, f"{name}_r"), getattr(engine, f"{name}_r")
            m.d.comb += [outer.addr.eq(inner.addr), outer.en.eq(inner.en), inner.data.eq(outer.data)]

        # --- load: control memory -> descriptor register and parameter memory -----------
        desc_bits, par_bits = descriptor_layout(cfg).size, par_layout(cfg).size
        k_desc, k_par = chunks(desc_bits), chunks(par_bits)
        # both shift registers take words at the top, so after k words the value is whole
        desc = Signal(CTL_BITS * k_desc, name="desc")
        gather = Signal(CTL_BITS * k_par, name="gather")  # a parameter word
        m.d.comb += engine.desc.as_value().eq(desc[:desc_bits])
        ctl_addr = Signal(range(self.ctl_words + 2), name="ctl_addr")
        arrived = Signal(name="arrived")  # ctl_r.data holds a word read last cycle
        chunk = Signal(range(max(k_desc, k_par) + 1), name="chunk")  # words of this value gathered
        in_desc = Signal(init=1, name="in_desc")
        par_addr = Signal(range(self.par_count + 1), name="par_addr")
        m.d.comb += [self.ctl_r.addr.eq(ctl_addr), self.ctl_r.en.eq(1)]
        word = Cat(gather[CTL_BITS:], self.ctl_r.data)  # `gather` after taking this word

        abits = _abits(cfg.out_depth)
        addr = Signal(abits + 1, name="read_addr")  # next address to present
        last = Signal(abits + 1, name="last_addr")  # address of the word on out_r.data
        reading = Signal(name="reading")  # out_r.data holds the word at `last`
        total = Signal(CHECK_BITS, name="total")
        out_word = Cat(engine.out_r.data.as_value(), last[:abits])
        # the fold in registered groups of FOLD_GROUP chunks (one LUT4 level each), so the
        # memory's slow output meets a single XOR before a register
        pieces = [out_word[lo:lo + CHECK_BITS] for lo in range(0, len(out_word), CHECK_BITS)]
        groups = [pieces[i:i + FOLD_GROUP] for i in range(0, len(pieces), FOLD_GROUP)]
        parts = [Signal(CHECK_BITS, name=f"fold_{i}") for i in range(len(groups))]
        held = Signal(name="held")  # the parts hold a word's
        for part, group in zip(parts, groups):
            value = Const(0, CHECK_BITS)
            for piece in group:
                value = value ^ piece
            m.d.sync += part.eq(value)
        folded = Const(0, CHECK_BITS)
        for part in parts:
            folded = folded ^ part
        m.d.comb += [engine.out_r.addr.eq(addr), self.checksum.eq(total)]
        folded_r = Signal(CHECK_BITS, name="folded_r")  # registered between the fold and the sum
        adding = Signal(name="adding")  # folded_r holds a word's fold

        with m.FSM(name="selftest"):
            with m.State("LOAD"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [ctl_addr.eq(ctl_addr + 1), arrived.eq(ctl_addr < self.ctl_words)]
                with m.If(arrived):
                    m.d.sync += chunk.eq(chunk + 1)
                    with m.If(in_desc):
                        m.d.sync += desc.eq(Cat(desc[CTL_BITS:], self.ctl_r.data))
                        with m.If(chunk == k_desc - 1):
                            m.d.sync += [chunk.eq(0), in_desc.eq(0)]
                    with m.Else():
                        m.d.sync += gather.eq(word)
                        with m.If(chunk == k_par - 1):
                            m.d.comb += [engine.par_w.en.eq(1), engine.par_w.addr.eq(par_addr),
                                         engine.par_w.data.as_value().eq(word[:par_bits])]
                            m.d.sync += [par_addr.eq(par_addr + 1), chunk.eq(0)]
                with m.If(~arrived & (ctl_addr > self.ctl_words)):
                    m.next = "START"
            with m.State("START"):
                m.d.comb += [engine.start.eq(1), self.busy.eq(1)]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                with m.If(engine.done):
                    m.d.sync += [addr.eq(0), reading.eq(0), held.eq(0), adding.eq(0), total.eq(0)]
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [addr.eq(addr + 1), last.eq(addr), reading.eq(addr < self.out_words),
                             held.eq(reading), folded_r.eq(folded), adding.eq(held)]
                with m.If(adding):
                    m.d.sync += total.eq(total + folded_r)
                with m.If(~reading & ~held & ~adding & (addr > self.out_words)):
                    m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(total == self.expected):
                    m.d.sync += self.passed.eq(1)
                with m.Else():
                    m.d.sync += self.failed.eq(1)
                m.next = "HOLD"
            with m.State("HOLD"):
                pass
        return m
