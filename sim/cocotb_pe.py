"""cocotb tests of the shift-accumulate PE (driven by tests/hw/test_pe.py)."""

import cocotb
import numpy as np

from core import arith
from sim.tb import Mismatches, PETestbench


def _signed_range(cfg):
    """Partial sums that leave room for one product of either sign: the accumulator's edges."""
    top = 2 ** (cfg.acc_bits - 1) - 1
    pmax = arith.product_bound(1, cfg.abits, cfg.wbits, cfg.terms)
    return -top + pmax, top - pmax


@cocotb.test()
async def every_code_at_the_corners(dut):
    """Every weight code (zero, largest shift, negative, each term) against zero, maximum
    and random activations, with partial sums at the accumulator's edges."""
    tb, case, rng = await PETestbench.start(dut)
    cfg = tb.cfg
    amax = arith.act_max(cfg.abits)
    lo, hi = _signed_range(cfg)
    all_codes = np.arange(2**cfg.code_bits)
    if len(all_codes) > case["max_codes"]:
        all_codes = rng.choice(all_codes, case["max_codes"], replace=False)
    checker = Mismatches("PE")
    for code in all_codes:
        a = [amax, 0, amax, amax, *rng.integers(0, amax + 1, 4)]
        s = [hi, lo, lo, 0, *rng.integers(lo, hi + 1, 4)]
        got = await tb.stream(int(code), a, s)
        expected, w = PETestbench.golden(int(code), a, s, cfg)
        for k, e in expected.items():
            checker.compare(e, got[k], f"code {int(code):#x} (weight {w}), cycle {k}: a {a[k - cfg.pipeline_stages]}, "
                                       f"s_in {s[k]}")
    checker.check()


@cocotb.test()
async def holds_while_disabled(dut):
    """With ``en`` low the PE keeps its sum whatever its inputs do."""
    tb, _, _ = await PETestbench.start(dut)
    code = 0  # +1 << 0 on every term: weight = terms
    amax = arith.act_max(tb.cfg.abits)
    got = await tb.stream(code, [amax] * 3, [100] * 3)
    before = got[-1]
    dut.en.value = 0
    dut.a_in.value = 0
    dut.s_in.value = 7  # enabled, the sum would become 7
    checker = Mismatches("PE with en low")
    for k in range(3):
        await tb.step()
        checker.compare(before, dut.s_out.value.to_signed(), f"stalled cycle {k}")
    checker.check()
