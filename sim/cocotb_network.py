"""cocotb tests of the board's design (:class:`hw.network.NetworkBoard`): frames over the
simulated UART lines, answers checked against the golden vectors; and the host client
(``python -m fpga.run``) talking to the simulated board through a pseudo-terminal."""

import os
import pty
import subprocess
import sys
import termios
import tty

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge

from core import protocol as P

from .tb import load_case


class UartBench:
    """Clock, reset, a UART driver on ``rx`` and a monitor on ``tx`` (8N1, ``cpb`` clocks a bit)."""

    def __init__(self, dut, case):
        self.dut, self.case, self.cpb = dut, case, case["clocks_per_bit"]
        self.received = bytearray()
        Clock(dut.clk, 10, unit="ns").start()
        dut.rx.value = 1
        cocotb.start_soon(self._monitor())

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 4)

    async def send(self, data):
        for byte in data:
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                self.dut.rx.value = bit
                await ClockCycles(self.dut.clk, self.cpb)

    async def _monitor(self):
        while True:
            await FallingEdge(self.dut.tx)
            await ClockCycles(self.dut.clk, self.cpb // 2)
            if int(self.dut.tx.value):
                continue  # a glitch, not a start bit
            byte = 0
            for i in range(8):
                await ClockCycles(self.dut.clk, self.cpb)
                byte |= int(self.dut.tx.value) << i
            await ClockCycles(self.dut.clk, self.cpb)
            assert int(self.dut.tx.value) == 1, "the board sent a byte without its stop bit"
            self.received.append(byte)

    async def reply(self, limit):
        """The next frame the board sends, within ``limit`` cycles."""
        decoder = P.FrameDecoder()
        for _ in range(limit // 64):
            frames = decoder.feed(bytes(self.received))
            self.received.clear()
            if frames:
                assert len(frames) == 1, f"{len(frames)} frames in one reply"
                return frames[0]
            await ClockCycles(self.dut.clk, 64)
        raise AssertionError(f"no reply within {limit} cycles")


@cocotb.test()
async def classify_over_uart(dut):
    """Each golden image as a CLASSIFY frame gives the golden class and logits; a garbled
    frame and a frame of the wrong length get ERROR replies; INFO gets the model's shape."""
    case = load_case()
    bench = UartBench(dut, case)
    await bench.reset()
    limit = case["limit"]

    await bench.send(P.encode(P.INFO))
    frame = await bench.reply(limit)
    assert frame.crc_ok and frame.type == P.INFO_REPLY, f"INFO got {frame}"
    info = P.parse_info(frame.payload)
    assert tuple(info.input_shape) == tuple(case["input_shape"]) and info.num_classes == len(case["logits"][0])

    for i, (codes, logits) in enumerate(zip(case["inputs"], case["logits"])):
        good = P.classify_frame(codes, case["input_bits"])
        if i == 1:  # a garbled copy first: one payload bit flipped on the line
            bad = bytearray(good)
            bad[P.HEADER_BYTES + 3] ^= 0x01
            await bench.send(bytes(bad))
            frame = await bench.reply(limit)
            assert frame.type == P.ERROR and P.parse_error(frame.payload) == P.BAD_CHECKSUM, f"garbled frame got {frame}"
        if i == 2:  # one code short
            await bench.send(P.encode(P.CLASSIFY, bytes(codes[:-1])))
            frame = await bench.reply(limit)
            assert frame.type == P.ERROR and P.parse_error(frame.payload) == P.BAD_LENGTH, f"short frame got {frame}"
        await bench.send(good)
        frame = await bench.reply(limit)
        assert frame.crc_ok and frame.type == P.RESULT, f"image {i} got {frame}"
        cls, got = P.parse_result(frame.payload, len(logits))
        assert got == logits, f"image {i}: logits {got}, golden {logits}"
        assert cls == logits.index(max(logits)), f"image {i}: class {cls}, golden logits {logits}"
        dut._log.info("image %d: class %d, logits as golden", i, cls)


@cocotb.test()
async def host_client_over_pty(dut):
    """``python -m fpga.run`` on a pseudo-terminal whose other end is the simulated UART."""
    case = load_case()
    bench = UartBench(dut, case)
    await bench.reset()
    master, slave = pty.openpty()
    tty.setraw(slave)
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    os.set_blocking(master, False)
    port = os.ttyname(slave)
    client = subprocess.Popen([sys.executable, "-m", "fpga.run", "--port", port, "--timeout", "120",
                               *case["client_args"]], cwd=case["repo"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        sent = 0
        while client.poll() is None:
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                data = b""
            if data:
                await bench.send(data)
            else:
                await ClockCycles(dut.clk, 200)
            if len(bench.received) > sent:
                os.write(master, bytes(bench.received[sent:]))
                sent = len(bench.received)
            await RisingEdge(dut.clk)
        out = client.stdout.read()
    finally:
        if client.poll() is None:
            client.kill()
        os.close(master)
        os.close(slave)
    dut._log.info("client output:\n%s", out)
    assert client.returncode == 0, f"the client exited {client.returncode}:\n{out}"
    for line in case["expect_lines"]:
        assert line in out, f"the client's output lacks {line!r}:\n{out}"
