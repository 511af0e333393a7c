"""A UART receiver and transmitter: 8 data bits, no parity, one stop bit (8N1), LSB first, idle high.

The bit rate is ``clocks_per_bit`` cycles of the design's clock, a parameter the caller
works out once (:func:`clocks_per_bit` does it from the clock and the baud rate).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from core.errors import UserError

#: The fewest clocks per bit the receiver samples reliably (mid-bit, with a glitch check).
MIN_CLOCKS_PER_BIT = 4
#: The largest baud-rate error :func:`clocks_per_bit` accepts: an 8N1 receiver sampling
#: mid-bit stays within the stop bit up to about 4% of mismatch between the two ends, and
#: the other end's clock needs its share.
MAX_RATE_ERROR = 0.02


def clocks_per_bit(clock_hz, baud):
    """``round(clock_hz / baud)``, refused with a :class:`UserError` if it is below
    :data:`MIN_CLOCKS_PER_BIT` or the rate it gives is off by more than :data:`MAX_RATE_ERROR`."""
    if baud <= 0 or clock_hz <= 0:
        raise UserError(f"baud rate {baud} and clock {clock_hz} Hz must be positive; pass --baud like 115200")
    cpb = round(clock_hz / baud)
    if cpb < MIN_CLOCKS_PER_BIT:
        raise UserError(f"baud rate {baud} is too fast for a {clock_hz / 1e6:g} MHz clock (needs at least "
                        f"{MIN_CLOCKS_PER_BIT} clocks per bit); use at most {clock_hz // MIN_CLOCKS_PER_BIT} baud")
    error = abs(clock_hz / cpb - baud) / baud
    if error > MAX_RATE_ERROR:
        raise UserError(f"baud rate {baud} is {error:.1%} off with a {clock_hz / 1e6:g} MHz clock "
                        f"({cpb} clocks per bit); choose a baud rate that divides the clock more evenly")
    return cpb


def check_clocks_per_bit(cpb):
    """``cpb``, if it is an int of at least :data:`MIN_CLOCKS_PER_BIT`; else a ValueError."""
    if not isinstance(cpb, int) or cpb < MIN_CLOCKS_PER_BIT:
        raise ValueError(f"clocks_per_bit must be an int >= {MIN_CLOCKS_PER_BIT}, not {cpb!r}")
    return cpb


class UartRx(wiring.Component):
    """Receives 8N1 bytes on ``rx``.

    ``rx`` is asynchronous: two flip-flops synchronise it (a fixed latency of 2 cycles,
    left out below).  A start bit is taken when the line is seen low after idle; the line is
    sampled ``(clocks_per_bit - 1) // 2`` cycles later, the middle of the start bit, and the
    start is dropped as a glitch if the line is high again there.  The 8 data bits and the
    stop bit are then sampled every ``clocks_per_bit`` cycles, at their middles.

    In the cycle after the stop bit's sample either ``valid`` (stop bit high) or ``error``
    (stop bit low: a framing error, the byte is dropped) is high for one cycle.  ``data``
    holds the byte from the ``valid`` cycle until the middle of the next start bit.  After a
    framing error the receiver waits for the line to go high (the end of a break) before it
    looks for the next start bit; after a good byte it looks from the middle of the stop bit on.

    Parameters
    ----------
    clocks_per_bit : int
        Clock cycles per bit, at least :data:`MIN_CLOCKS_PER_BIT`.
    """

    def __init__(self, clocks_per_bit):
        self.clocks_per_bit = check_clocks_per_bit(clocks_per_bit)
        super().__init__({
            "rx": In(1, init=1),
            "data": Out(8),
            "valid": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cpb = self.clocks_per_bit
        half = (cpb - 1) // 2  # from the first low sample to the middle of the start bit

        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)

        # ``timer`` counts down and the line is sampled when it is 0: from ``half - 1`` after
        # the first low sample, then from ``cpb - 1`` on
        timer = Signal(range(cpb))
        dec = Signal(len(timer) + 1)
        m.d.comb += dec.eq(timer - 1)
        tick = dec[-1]  # timer == 0, as the decrementer's borrow
        m.d.sync += [self.valid.eq(0), self.error.eq(0), timer.eq(Mux(tick, cpb - 1, dec))]
        # the data bits shift in from the top behind a marker 1: when the marker reaches
        # bit 0, 8 bits are in and the next sample is the stop bit
        shreg = Signal(9)
        m.d.comb += self.data.eq(shreg[1:])

        with m.FSM():
            with m.State("IDLE"):
                m.d.sync += timer.eq(half - 1)
                with m.If(~line):
                    m.next = "START"
            with m.State("START"):
                with m.If(tick):
                    with m.If(line):  # high again at mid-bit: a glitch
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += shreg.eq(1 << 8)
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(tick):
                    with m.If(~shreg[0]):
                        m.d.sync += shreg.eq(Cat(shreg[1:], line))
                    with m.Elif(line):  # the stop bit
                        m.d.sync += self.valid.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """Sends 8N1 bytes on ``tx`` (a register; high while idle).

    The bit clock runs free: ``ready`` is high for one cycle in every ``clocks_per_bit``
    while idle, and a byte is taken in a cycle with ``valid`` and ``ready`` both high (so a
    byte may wait up to ``clocks_per_bit - 1`` cycles).  From the next cycle ``tx`` carries
    its start bit, 8 data bits (LSB first) and the stop bit, each for ``clocks_per_bit``
    cycles; ``ready`` comes again in the last cycle of the stop bit, so bytes offered back
    to back leave exactly ``10 * clocks_per_bit`` cycles apart.

    Parameters
    ----------
    clocks_per_bit : int
        Clock cycles per bit, at least :data:`MIN_CLOCKS_PER_BIT`.
    """

    def __init__(self, clocks_per_bit):
        self.clocks_per_bit = check_clocks_per_bit(clocks_per_bit)
        super().__init__({
            "data": In(8),
            "valid": In(1),
            "ready": Out(1),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        cpb = self.clocks_per_bit

        timer = Signal(range(cpb))
        # timer == 0, a register set the cycle before (``ready`` and the link behind it start
        # at a flip-flop, not at the decrementer's borrow); both start at reset as if timer
        # had just reached 0
        tick = Signal(init=1)
        m.d.sync += [timer.eq(Mux(tick, cpb - 1, timer - 1)), tick.eq(timer == 1)]
        # the data bits and the stop bit still to send; zeros shift in behind the stop bit,
        # so the register is 0 once the stop bit is on the line
        shreg = Signal(9)
        m.d.comb += self.ready.eq(tick & (shreg == 0))
        with m.If(tick):
            with m.If(self.valid & (shreg == 0)):
                m.d.sync += [self.tx.eq(0), shreg.eq(Cat(self.data, 1))]
            with m.Elif(shreg != 0):
                m.d.sync += [self.tx.eq(shreg[0]), shreg.eq(shreg[1:])]
        return m
