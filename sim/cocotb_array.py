"""cocotb tests of the systolic array (driven by tests/hw/test_array.py)."""

import json
import pathlib
import time

import cocotb
import numpy as np

from core import arith
from core import codes
from hw.random_layers import random_codes
from sim.tb import ArrayTestbench, Mismatches


def random_problem(rng, cfg, n):
    """Weights (codes and values), activations with corners, and partial sums that keep
    every result inside the accumulator."""
    sign, shift, zero = random_codes(rng, (cfg.rows, cfg.cols), cfg.wbits, cfg.terms)
    if rng.random() < 0.2:  # worst case: every term the largest shift, one sign
        sign[:] = rng.integers(0, 2)
        shift[:] = cfg.shift_levels - 1
        zero[:] = False
    w = arith.weight_value(sign, shift, zero)  # (rows, cols)
    amax = arith.act_max(cfg.abits)
    a = rng.integers(0, amax + 1, (n, cfg.rows))
    a[rng.random(a.shape) < 0.2] = amax
    room = 2 ** (cfg.acc_bits - 1) - 1 - int(np.abs(w).sum(axis=0).max()) * amax
    s = rng.integers(-room, room + 1, (n, cfg.cols))
    return codes.encode_terms(sign, shift, zero, cfg.wbits), w, a, s


@cocotb.test()
async def random_streams(dut):
    """Random weights and vectors, crossed with idle cycles and stalls."""
    tb, case, rng = await ArrayTestbench.start(dut)
    cfg = tb.cfg
    checker = Mismatches(f"array {cfg.rows}x{cfg.cols}")
    for rep in range(case["reps"]):
        p_idle, p_stall = case["patterns"][rep % len(case["patterns"])]
        w_codes, w, a, s = random_problem(rng, cfg, case["vectors"])
        await tb.load_weights(w_codes)
        got, when = await tb.run(a, s, rng, p_idle=p_idle, p_stall=p_stall)
        expected = s + a @ w
        checker.compare(len(expected), len(got), f"input {rep}: result count")
        for i in range(min(len(got), len(expected))):
            for n in range(cfg.cols):
                checker.compare(expected[i, n], got[i, n], f"input {rep} (idle {p_idle}, stall {p_stall}), "
                                                           f"vector {i}, column {n}, cycle {when[i]}")
    checker.check()


@cocotb.test()
async def latency_is_documented(dut):
    """A lone vector's results appear exactly ``latency`` cycles after it entered."""
    tb, case, rng = await ArrayTestbench.start(dut)
    cfg = tb.cfg
    w_codes, w, a, s = random_problem(rng, cfg, 1)
    await tb.load_weights(w_codes)
    start = tb.cycle
    got, when = await tb.run(a, s, rng)
    checker = Mismatches("array latency")
    checker.compare(cfg.latency, when[0] - start, "cycles from the vector to its results (cfg.latency)")
    for n in range(cfg.cols):
        checker.compare((s + a @ w)[0, n], got[0, n], f"column {n}")
    checker.check()


@cocotb.test()
async def throughput(dut):
    """Stream vectors back to back and time it (bench/sim_speed.py); the results are checked too."""
    tb, case, rng = await ArrayTestbench.start(dut)
    cfg = tb.cfg
    w_codes, w, a, s = random_problem(rng, cfg, case["vectors"])
    await tb.load_weights(w_codes)
    start_cycle, start = tb.cycle, time.perf_counter()
    got, _ = await tb.run(a, s, rng)
    seconds = time.perf_counter() - start
    pathlib.Path(case["report"]).write_text(json.dumps({"cycles": tb.cycle - start_cycle, "seconds": seconds}))
    checker = Mismatches("array throughput run")
    for (i, n), e in np.ndenumerate(s + a @ w):
        checker.compare(e, got[i, n], f"vector {i}, column {n}")
    checker.check()
