"""The UART on Amaranth's simulator: Tx->Rx loopback, exact Tx bit timing, the receiver against
bit streams from Python (baud error, framing errors, glitches), and the baud-rate helper."""

import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import Module, UnusedElaboratable
from amaranth.sim import Simulator

from core.errors import UserError
from hw.uart import UartRx, UartTx, clocks_per_bit


def uart_bits(data, cpb, *, stop=1, rate=1.0, idle=2):
    """Line levels, one a cycle, of the bytes ``data`` sent 8N1: ``idle`` bit times high first,
    then each byte's start bit, 8 data bits LSB first and a stop bit of level ``stop``.  The
    bit time is ``cpb * rate`` cycles (``rate != 1``: a sender with a baud-rate error)."""
    levels = [1] * (idle * cpb)
    t = 0.0  # the end of the current bit, in cycles after the idle time
    for b in data:
        for level in [0] + [(b >> i) & 1 for i in range(8)] + [stop]:
            t += cpb * rate
            levels += [level] * (idle * cpb + round(t) - len(levels))
    return levels + [1] * (2 * cpb)


def _run_rx(levels, cpb):
    """Drive ``levels`` into a UartRx; returns the bytes (``valid``) and the cycles of ``error`` pulses."""
    dut = UartRx(cpb)
    got, errors = [], []

    async def bench(ctx):
        for cycle, level in enumerate(levels):
            ctx.set(dut.rx, level)
            await ctx.tick()
            if ctx.get(dut.valid):
                got.append(ctx.get(dut.data))
            if ctx.get(dut.error):
                errors.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got, errors


@pytest.mark.parametrize("cpb", [8, 11])
def test_loopback_random_bytes(cpb):
    data = [int(v) for v in np.random.default_rng(cpb).integers(0, 256, 40)] + [0x00, 0xFF, 0xA5, 0x5A]
    m = Module()
    m.submodules.tx = tx = UartTx(cpb)
    m.submodules.rx = rx = UartRx(cpb)
    m.d.comb += rx.rx.eq(tx.tx)
    got = []

    async def send(ctx):
        for i, b in enumerate(data):
            ctx.set(tx.data, b)
            ctx.set(tx.valid, 1)
            await ctx.tick().until(tx.ready)  # the byte is taken at this edge
            ctx.set(tx.valid, 0)
            if i == 5:  # a pause: the line idles between bytes too
                await ctx.tick().repeat(3 * cpb + 1)

    async def receive(ctx):
        cycle = 0
        while len(got) < len(data):
            await ctx.tick()
            cycle += 1
            assert cycle < 12 * cpb * (len(data) + 5), "receiver stalled"
            assert not ctx.get(rx.error)
            if ctx.get(rx.valid):
                got.append((cycle, ctx.get(rx.data)))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(send)
    sim.add_testbench(receive)
    sim.run()
    assert [b for _, b in got] == data
    gaps = np.diff([c for c, _ in got])
    assert all(gaps[i] == 10 * cpb for i in range(len(gaps)) if i != 5)  # back to back: 10 bit times


@pytest.mark.parametrize("cpb", [4, 9])
def test_tx_waveform(cpb):
    """After the byte is taken, tx is the start bit, the data LSB first and the stop bit, each exactly cpb cycles."""
    dut = UartTx(cpb)
    levels = []

    async def bench(ctx):
        assert ctx.get(dut.tx) == 1
        ctx.set(dut.data, 0b1011_0010)
        ctx.set(dut.valid, 1)
        await ctx.tick().until(dut.ready)
        ctx.set(dut.valid, 0)
        for _ in range(12 * cpb):
            levels.append(ctx.get(dut.tx))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    want = [0] + [(0b1011_0010 >> i) & 1 for i in range(8)] + [1, 1]
    assert levels[: 11 * cpb] == [v for v in want for _ in range(cpb)]


@pytest.mark.parametrize("cpb,rate", [(8, 1.0), (11, 1.0), (16, 0.97), (16, 1.03), (5, 1.0)])
def test_rx_bytes_and_baud_error(cpb, rate):
    data = [0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80, 0xA5, 0x3C]
    got, errors = _run_rx(uart_bits(data, cpb, rate=rate), cpb)
    assert got == data and errors == []


@pytest.mark.parametrize("cpb", [8, 11])
def test_framing_error_flagged_then_recovers(cpb):
    levels = uart_bits([0x42], cpb, stop=0, idle=2)[: -2 * cpb]  # stop bit low ...
    levels += [0] * (3 * cpb)  # ... and the line held low (a break) for a while
    levels += uart_bits([0x37], cpb)  # then a good byte
    got, errors = _run_rx(levels, cpb)
    assert len(errors) == 1
    assert got == [0x37]


@pytest.mark.parametrize("cpb", [8, 11])
def test_glitch_is_not_a_start_bit(cpb):
    half = (cpb - 1) // 2  # a low pulse no longer than this is high again at the start bit's middle
    levels = [1] * (2 * cpb) + [0] * half + [1] * (2 * cpb)
    levels += [1] * cpb + [0] * 1 + [1] * (3 * cpb)  # a one-cycle spike as well
    levels += uart_bits([0xC3], cpb)
    got, errors = _run_rx(levels, cpb)
    assert got == [0xC3] and errors == []


def test_clocks_per_bit():
    assert clocks_per_bit(12_000_000, 115_200) == 104
    assert clocks_per_bit(48_000_000, 1_000_000) == 48
    with pytest.raises(UserError, match="too fast"):
        clocks_per_bit(12_000_000, 6_000_000)
    with pytest.raises(UserError, match="off"):
        clocks_per_bit(12_000_000, 2_600_000)  # 4.6 clocks a bit, rounded to 5: 7.7% off


def refused(make):
    """The message of the ValueError ``make()`` raises, without the half-built component's
    "never used" warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError) as info:
            make()
        message = str(info.value)
        del info
        gc.collect()
    return message


def test_clocks_per_bit_checked():
    assert "clocks_per_bit" in refused(lambda: UartRx(3))
    assert "clocks_per_bit" in refused(lambda: UartTx(4.5))
