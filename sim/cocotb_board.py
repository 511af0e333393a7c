"""cocotb test of a generated board top (templates.board): the self-test lights its pass LED."""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from .tb import load_case


@cocotb.test()
async def selftest_result(dut):
    """Release the reset button and wait for an LED; it must be the one the case expects."""
    case = load_case()
    Clock(dut.clk_in, 10, unit="ns").start()
    button = getattr(dut, case["button"]["port"])
    button.value = 1 if case["button"]["invert"] else 0  # released
    leds = {led["signal"]: (getattr(dut, led["port"]), led["invert"]) for led in case["leds"]}

    def lit(signal):
        handle, invert = leds[signal]
        return bool(int(handle.value)) != invert

    for cycle in range(case["limit"]):
        await FallingEdge(dut.clk_in)
        if lit("passed") or lit("failed"):
            break
    else:
        raise AssertionError(f"no LED after {case['limit']} cycles")
    result = "passed" if lit("passed") else "failed"
    assert not (lit("passed") and lit("failed")), "both LEDs lit"
    assert result == case["expect"], f"the self-test {result} after {cycle} cycles; expected it to {case['expect']}"
    dut._log.info("self-test %s after %d cycles", result, cycle)
