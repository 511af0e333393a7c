"""The requantiser computes core.arith.requantize exactly, for every accumulator value and shift."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from core import arith
from core.hwconfig import HwConfig
from hw.requant import Requantizer


@pytest.mark.parametrize("max_left", [3, 0])
@pytest.mark.parametrize("relu", [True, False])
def test_every_accumulator_and_shift(relu, max_left):
    cfg = HwConfig(rows=1, cols=1, abits=3, wbits=2, terms=1, max_fan_in=20, max_left=max_left)  # 9-bit acc
    dut = Requantizer(cfg)
    half = 2 ** (cfg.acc_bits - 1)
    accs = np.arange(-half, half, 3)
    # layers without ReLU (the logits) only shift left; hw.plan refuses anything else
    shifts = np.arange(-cfg.max_left, cfg.acc_bits + 1 if relu else 1)
    amax = 5  # a narrower output than the engine's activations: out_bits < abits
    got = np.zeros((len(shifts), len(accs)), dtype=np.int64)

    async def bench(ctx):
        ctx.set(dut.relu, relu)
        ctx.set(dut.amax, amax)
        lag = cfg.requant_stages
        for i, s in enumerate(shifts):
            ctx.set(dut.shift, int(s))
            await ctx.tick()  # the shift is registered
            # a new acc every cycle; each result comes out requant_stages cycles later
            for j in range(len(accs) + lag - 1):
                if j < len(accs):
                    ctx.set(dut.acc, int(accs[j]))
                await ctx.tick()
                if j + 1 >= lag:
                    got[i, j + 1 - lag] = ctx.get(dut.out)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    expected = arith.round_shift(accs[None, :], shifts[:, None])
    if relu:
        expected = np.clip(expected, 0, amax)
    np.testing.assert_array_equal(got, expected)
