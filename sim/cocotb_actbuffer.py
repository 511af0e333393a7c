"""cocotb test of :class:`hw.network.ActBuffer` (driven by tests/hw/test_actbuffer.py): random
bank-masked writes interleaved with reads, against a per-bank Python model.

The top holds two buffers of one shape on the same inputs: ``r_data`` from the SPRAM one
(``spram=True``, yosys's SB_SPRAM256KA models) and ``r_data_mem`` from a plain Amaranth
memory, so both see exactly the same stimulus.  The case holds ``width``, ``banks``,
``depth``, ``seed`` and ``ops``.  SPRAM cells start undefined, so a bank is only compared
once it has been written.
"""

import json
import os
import pathlib

import cocotb
import numpy as np

from sim.tb import CASE_ENV, Mismatches, Testbench

OUTPUTS = {"spram": "r_data", "memory": "r_data_mem"}


class ActBufferTestbench(Testbench):
    """One operation a cycle: a write (``w_en`` a non-zero bank subset) or a read (``r_addr``
    with ``w_en`` low, ``r_data`` sampled after the next edge).  The model keeps each word as a
    list of per-bank values (``None``: never written)."""

    INPUTS = ("r_addr", "w_addr", "w_data", "w_en")

    def __init__(self, dut, case):
        super().__init__(dut, None)
        self.width, self.banks, self.depth = case["width"], case["banks"], case["depth"]
        self.bank_bits = self.width // self.banks
        self.model = [[None] * self.banks for _ in range(self.depth)]
        # (address, bank) -> whether a later write to the address left the bank alone
        self.survived = {}
        what = f"ActBuffer width {self.width}, {self.banks} banks, depth {self.depth}"
        self.checkers = {k: Mismatches(f"{what} ({k})") for k in OUTPUTS}
        self.preserved_checks = 0  # bank values compared after a write to other banks of the word

    @classmethod
    async def start(cls, dut):
        case = json.loads(pathlib.Path(os.environ[CASE_ENV]).read_text())  # no HwConfig here
        tb = cls(dut, case)
        await tb.reset(cls.INPUTS)
        return tb, case, np.random.default_rng(case["seed"])

    def bank(self, word, b):
        return (word >> (b * self.bank_bits)) & ((1 << self.bank_bits) - 1)

    async def write(self, addr, data, en):
        self.dut.w_addr.value, self.dut.w_data.value, self.dut.w_en.value = addr, data, en
        for b in range(self.banks):
            if en >> b & 1:
                self.model[addr][b] = self.bank(data, b)
                self.survived[addr, b] = False
            elif self.model[addr][b] is not None:
                self.survived[addr, b] = True
        await self.step()
        self.dut.w_en.value = 0

    async def read(self, addr, what):
        self.dut.r_addr.value = addr
        # scramble the write port: with w_en low, neither w_addr nor w_data may matter
        self.dut.w_addr.value = (addr + 1) % self.depth
        self.dut.w_data.value = (1 << self.width) - 1
        await self.step()
        got = {k: int(getattr(self.dut, port).value) for k, port in OUTPUTS.items()}
        for b, expected in enumerate(self.model[addr]):
            if expected is None:
                continue
            self.preserved_checks += self.survived[addr, b]
            for k, word in got.items():
                self.checkers[k].compare(expected, self.bank(word, b),
                                         f"{what}: read of address {addr}, bank {b} (r_data {word:#x})")

    def check(self):
        errors = []
        for checker in self.checkers.values():
            try:
                checker.check()
            except AssertionError as exc:
                errors.append(str(exc))
        if errors:
            raise AssertionError("\n".join(errors))


@cocotb.test()
async def random_masked_writes_and_reads(dut):
    """Random writes (address, data, non-zero bank subset: single banks, partial and full
    words) mixed with reads, a read sometimes right after a write to the same address;
    finally every address read back."""
    tb, case, rng = await ActBufferTestbench.start(dut)
    full, top = (1 << tb.banks) - 1, (1 << tb.width) - 1
    last = None
    for i in range(case["ops"]):
        if rng.random() < 0.5:
            addr = int(rng.integers(tb.depth))
            en = int(rng.integers(1, full + 1))
            kind = rng.random()  # all ones / zeros / random data, so stray bits show either way
            data = int.from_bytes(rng.bytes(tb.width // 8 + 1), "little") & top
            data = top if kind < 0.15 else 0 if kind < 0.3 else data
            await tb.write(addr, data, en)
            last = addr
        else:
            addr = last if last is not None and rng.random() < 0.3 else int(rng.integers(tb.depth))
            await tb.read(addr, f"op {i}")
    for addr in range(tb.depth):
        await tb.read(addr, "final sweep")
    tb.check()
    if tb.banks > 1:  # else every write rewrites the whole word
        assert tb.preserved_checks >= 50, f"only {tb.preserved_checks} reads checked a bank kept across a partial write"
