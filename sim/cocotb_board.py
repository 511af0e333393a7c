"""cocotb test of a generated board top (templates.board): the self-test lights the LED the
case expects; then, if the case says so, words written through the two-wire loader and a
press of the reset button give a second run and a second expected LED."""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from .tb import load_case


class BoardBench:
    def __init__(self, dut, case):
        self.dut, self.case = dut, case
        self.button = getattr(dut, case["button"]["port"])
        self.sclk = getattr(dut, case["load_clock"]["port"])
        self.sdi = getattr(dut, case["load_data"]["port"])
        self.leds = {led["signal"]: (getattr(dut, led["port"]), led["invert"]) for led in case["leds"]}
        Clock(dut.clk_in, 10, unit="ns").start()
        self.press(False)
        self.sclk.value = 1  # the loader's pins idle high (pull-ups)
        self.sdi.value = 1

    def press(self, down):
        self.button.value = int(down) ^ int(self.case["button"]["invert"])

    def lit(self, signal):
        handle, invert = self.leds[signal]
        return bool(int(handle.value)) != invert

    async def clocks(self, n):
        for _ in range(n):
            await FallingEdge(self.dut.clk_in)

    async def result(self):
        """Wait for an LED; returns ``("passed"|"failed", cycles)``."""
        for cycle in range(self.case["limit"]):
            await self.clocks(1)
            if self.lit("passed") or self.lit("failed"):
                assert not (self.lit("passed") and self.lit("failed")), "both LEDs lit"
                return ("passed" if self.lit("passed") else "failed"), cycle
        raise AssertionError(f"no LED after {self.case['limit']} cycles")

    async def load(self, bits):
        """Shift a frame in, most significant bit first, a few clocks per edge."""
        for bit in bits:
            self.sdi.value = int(bit)
            self.sclk.value = 0
            await self.clocks(4)
            self.sclk.value = 1
            await self.clocks(4)
        self.sdi.value = 1
        await self.clocks(8)


@cocotb.test()
async def selftest_result(dut):
    case = load_case()
    bench = BoardBench(dut, case)
    result, cycle = await bench.result()
    assert result == case["expect"], f"the self-test {result} after {cycle} cycles; expected it to {case['expect']}"
    dut._log.info("self-test %s after %d cycles", result, cycle)
    if case.get("frames"):
        for frame in case["frames"]:
            await bench.load(frame)
        bench.press(True)
        await bench.clocks(8)
        bench.press(False)
        result, cycle = await bench.result()
        assert result == case["expect_after"], (
            f"after loading {len(case['frames'])} frame(s) and a reset the self-test {result}; "
            f"expected it to {case['expect_after']}")
