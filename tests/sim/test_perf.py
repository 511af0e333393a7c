"""The analytic performance model against the cycle-accurate simulation (exact, step by
step), its memory mapping against real builds, and the resource model's fit."""

import json

import numpy as np
import pytest

from core.artifact import load_artifact
from core.boards import BOARDS
from core.hwconfig import HwConfig
from hw.program import NetworkProgram
from sim.amaranth_sim import run_network
from sim.perf import block_counts, map_memory, memory_list, network_memories, performance, varying_bits
from sim.resources import CALIBRATION_DIR, Calibration

# designs with every timing option: array shapes, one and several M tiles, the ECP5's
# registered memory reads and the pipelined PEs (tests/hw/test_program.py runs 8x4 and 4x4
# with 16-position M tiles)
DESIGNS = [
    dict(rows=8, cols=4),
    dict(rows=4, cols=2, psum_depth=32),
    dict(rows=8, cols=8, bram_reg=True, pipeline=True),
    dict(rows=16, cols=4, psum_depth=64),  # four write banks
]


@pytest.mark.parametrize("given", DESIGNS, ids=lambda g: "-".join(f"{k}{v}" for k, v in g.items()))
def test_cycles_per_step_equal_the_simulation(trained_runs, given):
    art = load_artifact(trained_runs.artifact)
    program = NetworkProgram(art.network, **given)
    model = performance(program)
    x = art.golden.inputs[:2]
    logits, cycles, step_cycles = run_network(program, x, per_step=True)
    assert np.array_equal(logits, art.golden.outputs[-1][:2])
    assert step_cycles.tolist() == [[s.cycles for s in model.steps]] * 2
    assert cycles.tolist() == [model.cycles] * 2


def test_model_reports_every_step_and_the_widths(trained_runs):
    art = load_artifact(trained_runs.artifact)
    model = performance(NetworkProgram.for_board(art.network, BOARDS["icebreaker"]), family="ice40")
    assert [s.names for s in model.steps] == [("conv0", "pool1"), ("conv2", "pool3"), ("flatten4", "fc5")]
    assert model.acc_bits == HwConfig(**model.config).acc_bits >= max(s.acc_bits for s in model.steps)
    assert 0 < model.utilisation < model.conv_utilisation < 1
    kinds = {m.name: m.mapped_to for m in model.memories}
    assert kinds["buffer A"] == kinds["buffer B"] == "SPRAM (256 kbit)"
    assert kinds["weights"] == "block RAM (4 kbit)"


def test_memory_mapping_follows_yosys_costs():
    # the MNIST CNN's weights at 8x4 W2 (measured: 12 blocks) and its parameters (in logic)
    assert map_memory("w", "rom", 8, 5952, "ice40").blocks == 12
    assert map_memory("p", "rom", 23, 60, "ice40").mapped_to == "logic"
    assert map_memory("s", "ram", 68, 256, "ice40").blocks == 5
    assert map_memory("w", "rom", 16, 3760, "ecp5").blocks == 4
    assert map_memory("b", "ram", 32, 784, "ecp5").blocks == 2
    assert map_memory("a", "ram", 24, 100, "ice40", spram=2).blocks == 2  # 12-bit banks: 24 bits, two cells


@pytest.mark.parametrize("family,block", [("ice40", "block RAM (4 kbit)"), ("ecp5", "block RAM (DP16KD)")])
def test_skew_ram_delays_are_counted_as_block_rams(trained_runs, family, block):
    """At 16 rows and 4-bit activations the rows go in groups of four; groups 1 to 3 are each
    delayed in a 16-bit, 256-word RAM, one block each (measured on the iCEBreaker's 16x4 MNIST
    design: 24 block RAMs, 21 without them)."""
    art = load_artifact(trained_runs.artifact)
    plain = NetworkProgram(art.network, rows=16, cols=4)
    ram = NetworkProgram(art.network, rows=16, cols=4, skew_ram=True)
    assert ram.cfg.abits == 4
    delays = [m for m in network_memories(ram, family) if m.name.startswith("skew")]
    assert [(m.name, m.width, m.depth, m.mapped_to, m.blocks) for m in delays] == [
        (f"skew rows {g}-{g + 3}", 16, 256, block, 1) for g in (4, 8, 12)]
    assert (block_counts(network_memories(ram, family))[block]
            == block_counts(network_memories(plain, family))[block] + 3)


def test_roms_are_as_wide_as_their_varying_bits(trained_runs):
    """yosys drops a ROM's constant bit columns (the ULX3S 32x32 MNIST build with weight
    words of 8 rows took 47 DP16KD, 52 with them counted); the model maps the varying bits.
    Here the bits are counted a second way, bit by bit over the words."""
    assert varying_bits([0b1010, 0b1000, 0b1110], 4) == 2
    assert varying_bits([0b11, 0b11], 2) == 0
    art = load_artifact(trained_runs.artifact)
    prog = NetworkProgram(art.network, rows=32, cols=32, wgt_lanes=8)
    cfg = prog.cfg
    full = cfg.code_bits * cfg.cols * cfg.wgt_lanes
    words = np.array([[(w >> b) & 1 for b in range(full)] for w in prog.wgt_rom()])
    varying = int((words.min(axis=0) != words.max(axis=0)).sum())
    listed = {m[0]: m for m in memory_list(prog)}
    assert listed["weights"][2] == varying < full  # conv0's padded columns hold zero weights


@pytest.mark.parametrize("family", ["ice40", "ecp5"])
def test_calibration_builds_agree_with_the_model(family):
    """Every measured build: memory blocks exactly as modelled; logic cells, with the build
    left out of the fit, within 5 % on average and 10 % but for at most one build (the
    ECP5 W2/A3 16x8 build has 9 % more LUTs than its A2 and A4 neighbours, which no count
    of the design explains: 13 %), which stays within 15 %."""
    path = CALIBRATION_DIR / f"{family}.json"
    cal = Calibration.load(family, path)
    assert len(cal.records) >= 12
    errors = cal.errors()
    assert all(e["blocks_equal"] for e in errors), errors
    logic = sorted(abs(e["logic"]) for e in errors)
    assert sum(logic) / len(logic) < 0.05 and logic[-2] < 0.10 and logic[-1] < 0.15, errors
    assert json.loads(path.read_text())["family"] == family
