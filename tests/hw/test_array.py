"""The systolic array on Verilator (cocotb): randomised shapes and widths, idle cycles and stalls.

``make test`` runs a few seeded configurations; ``make test-all`` runs 200 more, each with
its own random weights and input streams, crossed with idle and stall patterns.
"""

import numpy as np
import pytest

from core import arith
from core.hwconfig import HwConfig
from sim.simulate import simulate

TESTS = "random_streams,latency_is_documented"
PATTERNS = [[0.0, 0.0], [0.3, 0.0], [0.0, 0.3], [0.25, 0.25]]  # (idle, stall) probabilities


def random_config(seed):
    """A seeded random array: shape 1..8 x 1..8, every width in range, pipelined or not,
    weight words of any number of rows that divides them."""
    rng = np.random.default_rng(seed)
    rows, cols = (int(v) for v in rng.integers(1, 9, 2))
    lanes = [d for d in range(1, rows + 1) if rows % d == 0]
    return HwConfig(rows=rows, cols=cols, abits=int(rng.integers(arith.ABITS_RANGE[0], arith.ABITS_RANGE[1] + 1)),
                    wbits=int(rng.integers(arith.WBITS_RANGE[0], arith.WBITS_RANGE[1] + 1)),
                    terms=int(rng.integers(arith.TERMS_RANGE[0], arith.TERMS_RANGE[1] + 1)),
                    max_fan_in=rows, pipeline=bool(rng.integers(0, 2)), wgt_lanes=int(rng.choice(lanes)))


def check_array(seed, reps):
    cfg = random_config(seed)
    simulate(cfg, "array", "sim.cocotb_array", TESTS,
             {"seed": seed, "reps": reps, "vectors": 24, "patterns": PATTERNS})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_arrays(seed):
    check_array(seed, reps=len(PATTERNS))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 300))
def test_random_arrays_many(seed):
    check_array(seed, reps=2)


def test_an_8x8_array_of_the_mnist_widths():
    cfg = HwConfig(rows=8, cols=8, abits=4, wbits=4, terms=1, max_fan_in=8)
    simulate(cfg, "array", "sim.cocotb_array", TESTS, {"seed": 0, "reps": 4, "vectors": 40, "patterns": PATTERNS})


@pytest.mark.parametrize("rows,abits", [(16, 4), (13, 3)])
def test_the_skew_in_block_ram(rows, abits):
    """skew_ram (rows delayed in groups through block RAM, the rest in flip-flops): the same
    sums in the same latency, through idle and stall cycles."""
    cfg = HwConfig(rows=rows, cols=3, abits=abits, wbits=3, terms=1, max_fan_in=rows, skew_ram=True)
    simulate(cfg, "array", "sim.cocotb_array", TESTS, {"seed": rows, "reps": 4, "vectors": 40, "patterns": PATTERNS})
