"""The host link: the frame protocol of :mod:`core.protocol` in hardware, between a UART and the network core.

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
sign-extended to :data:`core.protocol.LOGIT_BYTES` bytes), an error code; the CRC is
computed on the fly, by the same CRC-8 step the receiver uses.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from core import protocol as P

from .uart import UartRx, UartTx, check_clocks_per_bit

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


def crc_matches(crc_after):
    """The receiver's CRC check: the CRC-8 run over a frame's bytes after ``SYNC``, its CRC
    byte included, is 0 (:func:`core.protocol.crc8`)."""
    return crc_after == 0


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
    Ports: ``rx`` (UART in, asynchronous), ``tx`` (UART out), and towards the core (times
    in cycles; a byte "arrives" in the cycle the receiver's ``valid`` is high, see
    :class:`hw.uart.UartRx`; a byte time is ``10 * clocks_per_bit``):

    * ``in_first`` (register): a one-cycle pulse in the cycle after the second ``LEN`` byte
      of a CLASSIFY with ``LEN == n_inputs`` arrives; ``in_valid`` is low then (a code a bad
      frame left behind is dropped).  The first code follows a byte time later.
    * ``in_valid``/``in_data`` (registers), ``in_ready``: each payload code is offered from
      the cycle after its byte arrives until a clock edge with ``in_valid & in_ready``.
      Codes come a byte time apart; one still not taken when the next arrives fails the
      frame (ERROR ``BAD_CHECKSUM``).
    * ``start`` (register): a one-cycle pulse once a good CLASSIFY's CRC byte has arrived,
      in the cycle after the first cycle (from the one after the CRC byte on) in which
      ``busy`` and ``in_valid`` are both low, so the core has every code before it starts.
      Never while ``busy`` was high in the cycle before.
    * ``done``: a one-cycle pulse; watched from the cycle ``start`` is high.
    * ``logit_addr`` (a multiplexer of two registers), ``logit_data``: a combinational read
      in the core, registered here: sampled at the end of the cycle ``logit_addr`` names the
      logit.  From the cycle after ``done`` the link compares the logits a byte at a time:
      for each candidate ``k = 1 .. num_classes - 1``, one cycle reads the class so far, then
      per each of its 4 bytes one cycle reads ``k`` and one the class so far (``9 *
      (num_classes - 1)`` cycles in all).  Then the RESULT goes out, with
      ``logit_addr = k`` while logit ``k``'s bytes are sent (4 byte times each).  The core
      must keep its logits unchanged from ``done`` until the reply is sent (the next
      ``start`` comes after that).
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
        self.clocks_per_bit = check_clocks_per_bit(clocks_per_bit)
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

    def const_bytes(self):
        """``{(kind, pos): byte}``: the reply bytes that are constants, by reply kind and position
        in the frame (header at 0..3, then the INFO_REPLY payload).  Position 4 of a RESULT
        is the class, of an ERROR the error code; the CRC follows the payload."""
        length = {_RESULT: 1 + P.LOGIT_BYTES * self.num_classes, _INFO: P.INFO_BYTES, _ERROR: 1}
        table = {}
        for kind, type_ in _REPLY_TYPE.items():
            head = P.encode(type_, bytes(length[kind]))[:P.HEADER_BYTES]
            table.update({(kind, i): b for i, b in enumerate(head)})
        table.update({(_INFO, P.HEADER_BYTES + i): b for i, b in enumerate(self.info.payload())})
        return table

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rx = UartRx(self.clocks_per_bit)
        m.submodules.uart_tx = tx = UartTx(self.clocks_per_bit)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
        last_class = self.num_classes - 1
        body = P.HEADER_BYTES  # position of the first payload byte

        # One CRC register for both directions, and a CRC-8 step for each: ``crc_rx`` takes the
        # received byte, ``crc_next`` the byte being sent.  (With one step shared through a
        # multiplexer, the paths from the reply's byte selection through the CRC into the
        # frame's verdict made the ULX3S-85F 32x32 build's critical path, 10.7 ns.)
        crc = Signal(8)
        byte = Signal(8)
        crc_next = Signal(8)
        crc_rx = Signal(8)
        m.d.comb += [crc_next.eq(crc8_step(crc, byte)), crc_rx.eq(crc8_step(crc, rx.data)), tx.data.eq(byte)]
        sent = tx.valid & tx.ready

        # receive: ``pos`` counts the fields (TYPE, LEN low, LEN high, then payload and CRC)
        pos = Signal(range(P.HEADER_BYTES + P.INFO_BYTES))
        is_classify = Signal()
        is_info = Signal()
        length = Signal(16)  # LEN, then the payload bytes still to come
        len_ok = Signal()  # LEN == n_inputs (CLASSIFY), no payload byte yet (INFO)
        bad_code = Signal()
        overrun = Signal()
        stream = is_classify & len_ok  # the codes go to the core
        full_len = Cat(length[:8], rx.data)
        dec = Signal(17)
        m.d.comb += dec.eq(length - 1)
        none_left = dec[16]  # the borrow: length == 0, from the decrementer's carry chain

        # transmit: ``failed`` and ``is_info`` say which reply; ``cls`` is the class of a
        # RESULT or the error code of an ERROR, the byte after the header either way
        failed = Signal()
        cls = Signal(range(max(self.num_classes, 8)))
        kind = Signal(2)
        m.d.comb += kind.eq(Mux(failed, _ERROR, Mux(is_info, _INFO, _RESULT)))
        nib = Signal(range(P.LOGIT_BYTES))  # byte of the logit being sent
        # the logit read is registered (sign-extended): the core's multiplexer of logits stays
        # out of the paths through the comparison, so ``wide`` is the logit ``logit_addr``
        # named a cycle before
        wide = Signal(signed(8 * P.LOGIT_BYTES))
        m.d.sync += wide.eq(self.logit_data)

        # the class, the first maximum, found a byte at a time through the byte selector the
        # RESULT needs anyway: a candidate is compared with the class so far as the 32-bit
        # sum ``candidate + ~best`` (``candidate - best - 1``), least significant byte first,
        # each byte biased (sign bit flipped) into an unsigned compare: its last carry out
        # says ``candidate > best``.  The reads alternate, best (logit_addr = cls) then
        # candidate (logit_addr = addr), and each is used a cycle later: ``keep = ~byte`` of
        # the best, then the candidate's byte is added.  After a candidate's last byte the
        # class may change, so the reads start again (``primed`` low) from the new best.
        addr = Signal(range(self.num_classes))  # candidate; the logit being sent
        reading_best = Signal()
        primed = Signal()  # ``wide`` holds a read of this scan
        keep = Signal(8)
        carry = Signal()
        biased = Signal(8)
        m.d.comb += biased.eq(wide.word_select(nib, 8) ^ Mux(nib == P.LOGIT_BYTES - 1, 0x80, 0))
        total = Signal(9)
        m.d.comb += [total.eq(biased + keep + carry),
                     self.logit_addr.eq(Mux(reading_best, cls, addr))]

        m.d.sync += [self.in_first.eq(0), self.start.eq(0)]
        with m.If(self.in_valid & self.in_ready):
            m.d.sync += self.in_valid.eq(0)

        with m.FSM(name="link"):
            with m.State("R_SYNC"):
                m.d.sync += [crc.eq(0), pos.eq(0), failed.eq(0), bad_code.eq(0), overrun.eq(0)]
                with m.If(rx.valid & (rx.data == P.SYNC)):
                    m.next = "R_FRAME"
            with m.State("R_FRAME"):
                with m.If(rx.valid):
                    m.d.sync += crc.eq(crc_rx)
                    with m.Switch(pos):
                        with m.Case(0):  # TYPE
                            m.d.sync += [is_classify.eq(rx.data == P.CLASSIFY), is_info.eq(rx.data == P.INFO),
                                         pos.eq(1)]
                        with m.Case(1):  # LEN, low byte
                            m.d.sync += [length[:8].eq(rx.data), pos.eq(2)]
                        with m.Case(2):  # LEN, high byte
                            good = Mux(is_classify, full_len == self.n_inputs, 1)
                            m.d.sync += [length[8:].eq(rx.data), len_ok.eq(good), pos.eq(3)]
                            with m.If(is_classify & good):
                                m.d.sync += [self.in_first.eq(1), self.in_valid.eq(0)]
                        with m.Default():  # payload, then the CRC
                            with m.If(~none_left):
                                m.d.sync += length.eq(dec)
                                with m.If(is_info):
                                    m.d.sync += len_ok.eq(0)
                                with m.If(stream):
                                    m.d.sync += [self.in_data.eq(rx.data), self.in_valid.eq(1)]
                                    with m.If(rx.data[self.input_bits:].any()):
                                        m.d.sync += bad_code.eq(1)
                                    with m.If(self.in_valid & ~self.in_ready):
                                        m.d.sync += overrun.eq(1)
                            with m.Else():  # the verdict, first failure wins
                                code = Signal(3)
                                with m.If(~crc_matches(crc_rx)):
                                    m.d.comb += code.eq(P.BAD_CHECKSUM)
                                with m.Elif(~is_classify & ~is_info):
                                    m.d.comb += code.eq(P.UNKNOWN_TYPE)
                                with m.Elif(~len_ok):
                                    m.d.comb += code.eq(P.BAD_LENGTH)
                                with m.Elif(bad_code):
                                    m.d.comb += code.eq(P.BAD_CODE)
                                with m.Elif(overrun):
                                    m.d.comb += code.eq(P.BAD_CHECKSUM)
                                m.d.sync += [failed.eq(code != 0), cls.eq(code), pos.eq(0)]
                                m.next = "T_CONST"
                                with m.If((code == 0) & is_classify):
                                    m.next = "C_START"
                with m.If(rx.error):  # garbled on the line: abandon the frame
                    m.d.sync += [failed.eq(1), cls.eq(P.BAD_CHECKSUM), pos.eq(0)]
                    m.next = "T_CONST"

            # --- the core -------------------------------------------------------------
            with m.State("C_START"):
                with m.If(~self.busy & ~self.in_valid):
                    m.d.sync += self.start.eq(1)
                    m.next = "C_RUN"
            with m.State("C_RUN"):
                m.d.sync += [addr.eq(1), cls.eq(0)]
                with m.If(self.done):
                    if self.num_classes > 1:
                        m.d.sync += [reading_best.eq(1), primed.eq(0)]
                        m.next = "C_SCAN"
                    else:
                        m.next = "T_CONST"
            with m.State("C_SCAN"):  # only a strictly larger logit replaces the first maximum
                m.d.sync += [reading_best.eq(~reading_best), primed.eq(1)]
                with m.If(primed & ~reading_best):  # ``wide`` is the best, read last cycle
                    m.d.sync += keep.eq(~biased)
                with m.Elif(primed):  # ``wide`` is the candidate
                    m.d.sync += [carry.eq(total[8]), nib.eq(nib + 1)]
                    with m.If(nib == P.LOGIT_BYTES - 1):
                        m.d.sync += [carry.eq(0), addr.eq(addr + 1), reading_best.eq(1), primed.eq(0)]
                        with m.If(total[8]):
                            m.d.sync += cls.eq(addr)
                        with m.If(addr == last_class):
                            m.d.sync += [addr.eq(0), reading_best.eq(0)]
                            m.next = "T_CONST"

            # --- the reply ------------------------------------------------------------
            with m.State("T_CONST"):  # header; INFO_REPLY payload; class; error code
                m.d.comb += tx.valid.eq(1)
                with m.Switch(Cat(pos, kind)):
                    for (k, i), v in self.const_bytes().items():
                        with m.Case(i | k << len(pos)):
                            m.d.comb += byte.eq(v)
                    with m.Case(body | _RESULT << len(pos), body | _ERROR << len(pos)):
                        m.d.comb += byte.eq(cls)
                with m.If(sent):
                    m.d.sync += [pos.eq(pos + 1), crc.eq(Mux(pos == 0, 0, crc_next))]  # not over SYNC
                    with m.If((kind == _RESULT) & (pos == body)):
                        m.next = "T_LOGIT"
                    with m.If((kind == _ERROR) & (pos == body) | (pos == body + P.INFO_BYTES - 1)):
                        m.next = "T_CRC"
            with m.State("T_LOGIT"):
                m.d.comb += [tx.valid.eq(1), byte.eq(wide.word_select(nib, 8))]
                with m.If(sent):
                    m.d.sync += [nib.eq(nib + 1), crc.eq(crc_next)]
                    with m.If(nib == P.LOGIT_BYTES - 1):
                        m.d.sync += addr.eq(addr + 1)
                        with m.If(addr == last_class):
                            m.d.sync += addr.eq(0)
                            m.next = "T_CRC"
            with m.State("T_CRC"):
                m.d.comb += [tx.valid.eq(1), byte.eq(crc)]
                with m.If(sent):
                    m.next = "R_SYNC"
        return m
