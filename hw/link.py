"""The host link: the frame protocol of :mod:`fpga.protocol` in hardware, between a UART and the network core.

One frame is handled at a time: the link receives a frame, checks it, runs the core if it
is a good CLASSIFY, sends the reply, and only then looks for the next ``SYNC`` (bytes that
arrive while it is busy are dropped; the host waits for each reply, as :mod:`fpga.run` does).

Receive: outside a frame every byte but ``SYNC`` is skipped.  The header's type and length
are checked as they arrive; the codes of a CLASSIFY whose ``LEN`` is right stream straight
on to the core (a one-byte holding register), each checked against ``2**input_bits - 1``.
Any frame, whatever its ``LEN``, is consumed to its CRC byte before it is answered, so the
link stays in step.  The verdict, first failure wins: CRC (``BAD_CHECKSUM``), type
(``UNKNOWN_TYPE``), length (``BAD_LENGTH``), codes (``BAD_CODE``), then a code the core
did not take before the next one arrived (``BAD_CHECKSUM``: the frame was not received
intact).  A UART framing error inside a frame abandons it at once with ``BAD_CHECKSUM``;
the rest of that frame is skipped as garbage.  So a garbled frame never gets a RESULT.

Transmit: a byte sequencer walks the reply: 4 header bytes and the INFO_REPLY payload
from small constant tables, the class and the logits (each read from the core and
sign-extended to :data:`fpga.protocol.LOGIT_BYTES` bytes), an error code; the CRC is
computed on the fly, by the same CRC-8 step the receiver uses.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fpga import protocol as P

from .uart import UartRx, UartTx

# what the sequencer sends
_RESULT, _INFO, _ERROR = 0, 1, 2
_REPLY_TYPE = {_RESULT: P.RESULT, _INFO: P.INFO_REPLY, _ERROR: P.ERROR}


def crc8_step(crc, byte):
    """The CRC-8 after ``byte`` (an 8-bit value) from ``crc``: ``CRC_TABLE[crc ^ byte]`` as
    XORs, since the table is linear (each output bit is the parity of some bits of ``crc ^ byte``)."""
    x = crc ^ byte
    bits = []
    for k in range(8):
        taps = [x[i] for i in range(8) if P.CRC_TABLE[1 << i] >> k & 1]
        bits.append(Cat(*taps).xor())
    return Cat(*bits)


def _rom(m, index, table, out):
    """``out = table[index]`` (combinational), entries past the table 0."""
    with m.Switch(index):
        for i, v in enumerate(table):
            with m.Case(i):
                m.d.comb += out.eq(v)


class HostLink(wiring.Component):
    """UART frames in, the network core run, UART frames out.

    Parameters
    ----------
    n_inputs : int
        Codes per image (the CLASSIFY payload length), ``C * H * W``.
    input_bits : int
        Bits of an input code (1..8).
    num_classes : int
        Logits the core has (1..255).
    logit_bits : int
        Signed width of a logit in the core (1..32).
    model_id : int
        32-bit id sent in INFO_REPLY.
    input_shape : tuple of int
        ``(C, H, W)``, sent in INFO_REPLY.
    clocks_per_bit : int
        UART bit time in clock cycles (:func:`hw.uart.clocks_per_bit`).

    Notes
    -----
    Ports: ``rx`` (UART in, asynchronous), ``tx`` (UART out), and towards the core, all
    registered outputs (times in cycles; a byte "arrives" in the cycle the receiver's
    ``valid`` is high):

    * ``in_first``: one-cycle pulse, the cycle after a CLASSIFY's second ``LEN`` byte arrives
      when ``LEN == n_inputs``; ``in_valid`` is low then (a code a bad frame left behind is
      dropped).  The first code follows a byte time (``10 * clocks_per_bit``) later.
    * ``in_valid``/``in_data``/``in_ready``: each payload code is offered from the cycle
      after its byte arrives, until a clock edge with ``in_valid & in_ready``.  Codes come
      a byte time apart; one still not taken when the next arrives fails the frame.
    * ``start``: one-cycle pulse after the CRC byte of a good CLASSIFY arrived, in the
      cycle after the first cycle (from the CRC byte's on) in which ``busy`` and
      ``in_valid`` were both low; so the core has every code before it starts.
    * ``done``: watched from the cycle ``start`` is high; a one-cycle pulse.
    * ``logit_addr``/``logit_data``: ``logit_data`` is read in the cycle ``logit_addr``
      names it (combinational).  From the cycle after ``done`` the link scans addresses 0 to
      ``num_classes - 1``, one a cycle, for the first maximum, then holds each address
      while that logit is sent (``4 * 10 * clocks_per_bit`` cycles each).  The core must
      keep its logits until the reply is sent, i.e. until the next ``start``.
    """

    def __init__(self, *, n_inputs, input_bits, num_classes, logit_bits, model_id, input_shape, clocks_per_bit):
        self.info = P.ModelInfo(tuple(int(v) for v in input_shape), input_bits, num_classes, logit_bits, model_id)
        if len(self.info.input_shape) != 3 or self.info.n_inputs != n_inputs:
            raise ValueError(f"input_shape {input_shape} must be (C, H, W) with C * H * W == n_inputs ({n_inputs})")
        if not 1 <= n_inputs <= P.MAX_PAYLOAD:
            raise ValueError(f"n_inputs must be in 1..{P.MAX_PAYLOAD}, not {n_inputs}")
        if not 1 <= input_bits <= 8:
            raise ValueError(f"input_bits must be in 1..8 (one byte a code), not {input_bits}")
        if not 1 <= num_classes <= 255:
            raise ValueError(f"num_classes must be in 1..255 (the class is one byte), not {num_classes}")
        if not 1 <= logit_bits <= 8 * P.LOGIT_BYTES:
            raise ValueError(f"logit_bits must be in 1..{8 * P.LOGIT_BYTES}, not {logit_bits}")
        self.info.payload()  # the fields fit their bytes
        self.n_inputs, self.input_bits, self.num_classes, self.logit_bits = n_inputs, input_bits, num_classes, logit_bits
        self.clocks_per_bit = clocks_per_bit
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "in_first": Out(1),
            "in_valid": Out(1),
            "in_data": Out(input_bits),
            "in_ready": In(1),
            "start": Out(1),
            "busy": In(1),
            "done": In(1),
            "logit_addr": Out(range(num_classes)),
            "logit_data": In(signed(logit_bits)),
        })

    def headers(self):
        """The 4 header bytes of each reply the sequencer sends, by its reply number."""
        length = {_RESULT: 1 + P.LOGIT_BYTES * self.num_classes, _INFO: P.INFO_BYTES, _ERROR: 1}
        return {k: P.encode(_REPLY_TYPE[k], bytes(length[k]))[:P.HEADER_BYTES] for k in _REPLY_TYPE}

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rx = UartRx(self.clocks_per_bit)
        m.submodules.uart_tx = tx = UartTx(self.clocks_per_bit)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
        last_class = self.num_classes - 1

        # the CRC register, shared: the receiver's while a frame comes in, the sequencer's after
        crc = Signal(8)
        crc_in = Signal(8)
        crc_next = Signal(8)
        m.d.comb += crc_next.eq(crc8_step(crc, crc_in))

        # --- receive state ------------------------------------------------------------
        is_classify = Signal()
        is_info = Signal()
        length = Signal(16)  # LEN, then the payload bytes still to come
        len_ok = Signal()
        bad_code = Signal()
        overrun = Signal()
        stream = is_classify & len_ok  # codes go to the core
        full_len = Cat(length[:8], rx.data)

        # --- transmit state -----------------------------------------------------------
        reply = Signal(2)
        err = Signal(3)
        pos = Signal(range(max(P.HEADER_BYTES, P.INFO_BYTES)))
        nib = Signal(2)  # byte of the logit being sent
        best = Signal(signed(self.logit_bits))
        diff = Signal(signed(self.logit_bits + 1))
        m.d.comb += diff.eq(best - self.logit_data)  # cheaper than a comparator on iCE40
        below = diff[-1]  # best < logit_data
        cls = Signal(range(self.num_classes))
        wide = Signal(signed(8 * P.LOGIT_BYTES))
        m.d.comb += wide.eq(self.logit_data)  # sign-extended
        tx_byte = Signal(8)
        sent = tx.valid & tx.ready
        m.d.comb += tx.data.eq(tx_byte)

        m.d.sync += [self.in_first.eq(0), self.start.eq(0)]
        with m.If(self.in_valid & self.in_ready):
            m.d.sync += self.in_valid.eq(0)

        def answer(kind, code=0):
            m.d.sync += [reply.eq(kind), err.eq(code), pos.eq(0)]
            m.next = "T_HEAD"

        def receive(next_state=None):
            """Common to the states inside a frame: the CRC takes the byte; a framing error abandons the frame."""
            m.d.comb += crc_in.eq(rx.data)
            with m.If(rx.valid):
                m.d.sync += crc.eq(crc_next)
                if next_state:
                    m.next = next_state
            with m.If(rx.error):
                answer(_ERROR, P.BAD_CHECKSUM)

        with m.FSM(name="link"):
            with m.State("R_SYNC"):
                m.d.sync += crc.eq(0)
                with m.If(rx.valid & (rx.data == P.SYNC)):
                    m.next = "R_TYPE"
            with m.State("R_TYPE"):
                receive("R_LEN0")
                with m.If(rx.valid):
                    m.d.sync += [is_classify.eq(rx.data == P.CLASSIFY), is_info.eq(rx.data == P.INFO)]
            with m.State("R_LEN0"):
                receive("R_LEN1")
                with m.If(rx.valid):
                    m.d.sync += length[:8].eq(rx.data)
            with m.State("R_LEN1"):
                receive()
                with m.If(rx.valid):
                    good = Mux(is_classify, full_len == self.n_inputs, full_len == 0)
                    m.d.sync += [length[8:].eq(rx.data), len_ok.eq(good), bad_code.eq(0), overrun.eq(0)]
                    with m.If(is_classify & good):
                        m.d.sync += [self.in_first.eq(1), self.in_valid.eq(0)]
                    m.next = "R_PAYLOAD"
                    with m.If(full_len == 0):
                        m.next = "R_CRC"
            with m.State("R_PAYLOAD"):
                receive()
                with m.If(rx.valid):
                    m.d.sync += length.eq(length - 1)
                    with m.If(stream):
                        m.d.sync += [self.in_data.eq(rx.data), self.in_valid.eq(1)]
                        with m.If(rx.data[self.input_bits:].any()):
                            m.d.sync += bad_code.eq(1)
                        with m.If(self.in_valid & ~self.in_ready):
                            m.d.sync += overrun.eq(1)
                    with m.If(length == 1):
                        m.next = "R_CRC"
            with m.State("R_CRC"):
                receive()
                with m.If(rx.valid):
                    with m.If(crc_next != 0):
                        answer(_ERROR, P.BAD_CHECKSUM)
                    with m.Elif(~is_classify & ~is_info):
                        answer(_ERROR, P.UNKNOWN_TYPE)
                    with m.Elif(~len_ok):
                        answer(_ERROR, P.BAD_LENGTH)
                    with m.Elif(is_info):
                        answer(_INFO)
                    with m.Elif(bad_code):
                        answer(_ERROR, P.BAD_CODE)
                    with m.Elif(overrun):
                        answer(_ERROR, P.BAD_CHECKSUM)
                    with m.Else():
                        m.next = "C_START"

            # --- the core -------------------------------------------------------------
            with m.State("C_START"):
                with m.If(~self.busy & ~self.in_valid):
                    m.d.sync += self.start.eq(1)
                    m.next = "C_RUN"
            with m.State("C_RUN"):
                m.d.sync += self.logit_addr.eq(0)
                with m.If(self.done):
                    m.next = "C_SCAN"
            with m.State("C_SCAN"):  # first maximum: only a strictly larger logit replaces it
                with m.If((self.logit_addr == 0) | below):
                    m.d.sync += [best.eq(self.logit_data), cls.eq(self.logit_addr)]
                m.d.sync += self.logit_addr.eq(self.logit_addr + 1)
                with m.If(self.logit_addr == last_class):
                    m.d.sync += self.logit_addr.eq(0)
                    answer(_RESULT)

            # --- the reply ------------------------------------------------------------
            with m.State("T_HEAD"):
                m.d.comb += [tx.valid.eq(1), crc_in.eq(tx_byte)]
                heads = self.headers()
                with m.Switch(reply):
                    for kind, head in heads.items():
                        with m.Case(kind):
                            _rom(m, pos, head, tx_byte)
                with m.If(sent):
                    m.d.sync += [pos.eq(pos + 1), crc.eq(Mux(pos == 0, 0, crc_next))]
                    with m.If(pos == P.HEADER_BYTES - 1):
                        m.d.sync += pos.eq(0)
                        m.next = "T_BODY"
            with m.State("T_BODY"):
                m.d.comb += [tx.valid.eq(1), crc_in.eq(tx_byte)]
                with m.Switch(reply):
                    with m.Case(_RESULT):
                        m.d.comb += tx_byte.eq(cls)
                    with m.Case(_INFO):
                        _rom(m, pos, self.info.payload(), tx_byte)
                    with m.Case(_ERROR):
                        m.d.comb += tx_byte.eq(err)
                with m.If(sent):
                    m.d.sync += [pos.eq(pos + 1), crc.eq(crc_next)]
                    with m.If(reply == _RESULT):
                        m.next = "T_LOGIT"
                    with m.Elif((reply == _ERROR) | (pos == P.INFO_BYTES - 1)):
                        m.next = "T_CRC"
            with m.State("T_LOGIT"):
                m.d.comb += [tx.valid.eq(1), crc_in.eq(tx_byte), tx_byte.eq(wide.word_select(nib, 8))]
                with m.If(sent):
                    m.d.sync += [nib.eq(nib + 1), crc.eq(crc_next)]
                    with m.If(nib == P.LOGIT_BYTES - 1):
                        m.d.sync += self.logit_addr.eq(self.logit_addr + 1)
                        with m.If(self.logit_addr == last_class):
                            m.d.sync += self.logit_addr.eq(0)
                            m.next = "T_CRC"
            with m.State("T_CRC"):
                m.d.comb += [tx.valid.eq(1), tx_byte.eq(crc)]
                with m.If(sent):
                    m.next = "R_SYNC"
        return m
