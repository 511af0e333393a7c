"""The analytic performance model of the network engine: what a model costs on an array
before anything is built or simulated.

:func:`performance` takes a network's program for a design (:class:`hw.program.NetworkProgram`,
whose ``cfg`` is the :class:`core.hwconfig.HwConfig`) and gives, from the same derived-number functions the
hardware and its testbenches read (:class:`hw.program.NetworkProgram`,
:class:`hw.plan.LayerPlan`, :class:`core.hwconfig.HwConfig`):

* the cycles of every step (a weighted layer with its fused max-pool) and of an image,
  which the cycle-accurate simulations measure exactly (``tests/sim/test_perf.py``);
* the array's use per step and over the convolutions;
* every on-chip memory of the design (width, depth, bits, ROM or RAM), and how yosys maps
  it on a board's FPGA family (:func:`map_memory`): block RAMs, SPRAMs or logic;
* the accumulator widths, the design's and each layer's own.

Nothing here runs a tool: the explorer (:mod:`sim.explore`) calls it for every point of a
sweep.
"""

import math
from dataclasses import dataclass, field

from hw.array import RAM_DELAY_DEPTH, skew_ram_groups
from hw.engine import par_layout
from hw.network import SPRAM_BITS, SPRAM_WORDS, spram_buffers, spram_layout
from hw.program import STEP_OVERHEAD, NetworkProgram


@dataclass(frozen=True)
class RamBlock:
    """A kind of FPGA memory block as yosys's ``memory_libmap`` sees it: the ``(width,
    depth)`` shapes one block takes, its cost, its write-enable granularity ``byte`` and
    whether it can be initialised (hold a ROM)."""

    name: str
    shapes: tuple
    cost: float
    byte: int = 1
    init: bool = True
    huge: bool = False  # single-port SPRAM: the design instantiates it (the activation buffers)


#: The block memories of each family, with yosys's costs and shapes (``share/ice40/brams.txt``,
#: ``share/ice40/spram.txt``, ``share/lattice/brams_16kd.txt``: the DP16KD and, 36 bits
#: wide, its pseudo-dual-port mode PDPW16KD, counted as the same block;
#: ``share/lattice/lutrams_trellis.txt``: the TRELLIS_DPR16X4 distributed RAM, RAMs only,
#: where a small buffer goes).
BLOCKS = {
    "ice40": (RamBlock("block RAM (4 kbit)", ((2, 2048), (4, 1024), (8, 512), (16, 256)), 64),
              RamBlock("SPRAM (256 kbit)", ((SPRAM_BITS, SPRAM_WORDS),), 2048, byte=4, init=False, huge=True)),
    "ecp5": (RamBlock("block RAM (DP16KD)", ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512)),
                      128, byte=9),
             RamBlock("distributed RAM", ((4, 16),), 4, byte=4, init=False)),
}
#: yosys's cost of a memory bit left to soft logic (``memory_libmap``'s defaults), and of the
#: read multiplexer and write-enable decoder it adds when a memory spans several blocks deep.
LOGIC_COST = {"rom": 1 / 16, "ram": 1.0}
FACTOR_MUX = FACTOR_DEMUX = 0.5


def block_cost(block, width, depth, enables):
    """``(cost, blocks, mux bits)`` of the cheapest way ``memory_libmap`` builds a ``width x depth``
    memory from ``block``: for each shape, the address range splits into ``ceil(depth /
    shape depth)`` parts whose bits (padded at the ``enables`` write banks to whole
    ``byte``s) are packed into blocks, and the parts are multiplexed back together."""
    best = None
    for w, d in block.shapes:
        byte = min(block.byte, w) if enables else 1
        bank = width // max(1, enables)
        swizzled = sum(-(-bank // byte) * byte for _ in range(max(1, enables)))
        parts = -(-depth // d)
        blocks = -(-(parts * swizzled) // w)
        mux = (parts - 1) * width
        demux = parts * enables if enables and parts != 1 else 0
        cost = block.cost * blocks + FACTOR_MUX * mux + FACTOR_DEMUX * demux
        if best is None or cost < best[0]:
            best = (cost, blocks, mux)
    return best


@dataclass(frozen=True)
class MemoryUse:
    """One memory of the design and where it goes on a family."""

    name: str
    kind: str  # "rom" or "ram"
    width: int
    depth: int
    mapped_to: str = "logic"
    blocks: int = 0
    mux_bits: int = 0  # bits of the multiplexer joining the blocks of a memory split by depth

    @property
    def bits(self):
        return self.width * self.depth


def map_memory(name, kind, width, depth, family, *, enables=1, spram=None):
    """Where yosys puts a ``width x depth`` memory (a ROM, or a RAM with ``enables`` write
    banks) on ``family``: the cheapest block kind (:func:`block_cost`), or soft logic
    when that costs no more (a bit of logic costs :data:`LOGIC_COST`).  ``spram`` (the
    number of write banks) marks an activation buffer the iCE40 design instantiates as
    SPRAM cells (:class:`hw.network.ActBuffer`)."""
    if spram:
        n = spram_layout(width, spram)[1] * math.ceil(depth / SPRAM_WORDS)
        return MemoryUse(name, kind, width, depth, BLOCKS[family][-1].name, n)
    best = MemoryUse(name, kind, width, depth)
    best_cost = int(width * depth * LOGIC_COST[kind])
    for block in BLOCKS[family]:
        if block.huge or (kind == "rom" and not block.init):
            continue
        cost, n, mux = block_cost(block, width, depth, enables if kind == "ram" else 0)
        if cost < best_cost:
            best, best_cost = MemoryUse(name, kind, width, depth, block.name, n, mux), cost
    return best


@dataclass
class StepPerf:
    """One step of the program: its layers, tiling, cycles and array use."""

    names: tuple
    k_tiles: int
    n_blocks: int
    positions: int
    macs: int
    cycles: int  # the step's share of an image: the layer engine's count plus the sequencer's
    engine_cycles: int
    utilisation: float
    acc_bits: int  # the layer's own accumulator width (its fan-in)


@dataclass
class Performance:
    """What :func:`performance` computes for a network on a design."""

    config: dict
    steps: list
    cycles: int
    macs: int
    utilisation: float  # useful shift-accumulates over all PE-cycles of an image
    conv_utilisation: float  # the same over the convolutions (steps with more than one position)
    memories: list
    acc_bits: int  # the design's accumulator (the deepest fan-in)
    dot_bits: int  # the array's partial sums (one pass)
    out_bits: int
    family: str = None
    footprint: dict = field(default_factory=dict)  # block kind -> blocks; "logic" -> bits of memory in logic



def varying_bits(words, width):
    """Bit columns of ``width``-bit ``words`` that are not the same in every word."""
    ones = zeros = 0
    for w in words:
        ones |= w
        zeros |= ~w
    return sum(1 for b in range(width) if (ones >> b) & (zeros >> b) & 1)


def memory_list(program):
    """The design's memories (:class:`hw.network.NetworkCore`) as ``[name, kind, width,
    depth, write banks]`` (0 banks: a ROM); with ``skew_ram``, the array's delay RAMs too
    (:func:`hw.array.skew_ram_groups`).  A ROM is as wide as its bits that vary: yosys
    (``opt_mem``) drops the bit columns its contents hold constant (counting them, the
    ULX3S 32x32 MNIST build with weight words of 8 rows was modelled at 52 DP16KD; it took 47)."""
    cfg = program.cfg
    skew = [[f"skew rows {rows[0]}-{rows[-1]}", "ram", len(rows) * cfg.abits, RAM_DELAY_DEPTH, 1]
            for rows, base in (skew_ram_groups(cfg) if cfg.skew_ram else ()) if base]
    return [
        ["weights", "rom", varying_bits(program.wgt_rom(), cfg.code_bits * cfg.cols * cfg.wgt_lanes),
         program.wgt_words, 0],
        ["parameters", "rom", varying_bits(program.par_rom(), par_layout(cfg).size), program.par_words, 0],
        ["partial sums", "ram", cfg.acc_bits * cfg.cols, cfg.psum_depth, 1],
    ] + [[f"buffer {b.name}", "ram", cfg.rows * cfg.abits, b.words, b.banks] for b in program.buffers] + skew


def map_memories(listed, family, spram=None):
    """:func:`memory_list`'s memories mapped onto ``family`` (``None``: unmapped); on iCE40
    the activation buffers named in ``spram`` (:func:`hw.network.spram_buffers`; ``None``:
    every buffer, as in designs of two) are SPRAM cells."""
    if family is None:
        return [MemoryUse(n, k, w, d) for n, k, w, d, _ in listed]

    def in_spram(name):
        return name.startswith("buffer ") and (spram is None or name.removeprefix("buffer ") in spram)

    return [map_memory(n, k, w, d, family, enables=e, spram=e if family == "ice40" and in_spram(n) else None)
            for n, k, w, d, e in listed]


def network_memories(program, family=None):
    """The design's memories, mapped onto ``family`` (``"ice40"``, ``"ecp5"``; ``None``
    leaves them unmapped)."""
    return map_memories(memory_list(program), family, spram_buffers(program, family == "ice40"))


def block_counts(memories):
    """Block kind -> blocks, over mapped memories."""
    counts = {}
    for m in memories:
        if m.mapped_to != "logic":
            counts[m.mapped_to] = counts.get(m.mapped_to, 0) + m.blocks
    return counts


def spram_problem(program):
    """Why the iCE40 design's activation buffers cannot be SPRAM cells, or ``None``."""
    deepest = max(b.words for b in program.buffers)
    if deepest > SPRAM_WORDS:
        return f"an activation buffer needs {deepest} words, an SPRAM holds {SPRAM_WORDS}"
    return None


def performance(program, *, family=None):
    """The performance model of a network's :class:`NetworkProgram` (its design is
    ``program.cfg``).  ``family`` maps the memories onto an FPGA family."""
    cfg = program.cfg
    pes = cfg.rows * cfg.cols
    steps = [StepPerf(names=s.names, k_tiles=s.plan.kt, n_blocks=s.plan.nb, positions=s.plan.visited,
                      macs=s.plan.macs, cycles=s.plan.cycles() + STEP_OVERHEAD, engine_cycles=s.plan.cycles(),
                      utilisation=s.plan.utilisation(), acc_bits=s.plan.layer.arith.acc_bits)
             for s in program.steps]
    cycles = program.cycles()
    assert cycles == sum(s.cycles for s in steps)
    memories = network_memories(program, family)
    footprint = {}
    if family is not None:
        footprint = block_counts(memories)
        footprint["logic"] = sum(m.bits for m in memories if m.mapped_to == "logic")
    return Performance(config=cfg.to_dict(), steps=steps, cycles=cycles, macs=program.macs,
                       utilisation=program.macs / (cycles * pes), conv_utilisation=program.conv_utilisation(),
                       memories=memories, acc_bits=cfg.acc_bits, dot_bits=cfg.dot_bits, out_bits=cfg.out_bits,
                       family=family, footprint=footprint)
