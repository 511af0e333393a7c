"""Formal proof of the host link's frame check: no engine start on a frame whose CRC, length, type or codes are wrong.

:class:`ProtocolProof` wraps :class:`hw.link.HostLink` as Amaranth elaborates it, with one
part swapped: its UART receiver (:class:`hw.uart.UartRx`) becomes :class:`FreeBytes`, whose
``data``, ``valid`` and ``error`` are free every cycle.  So the link's byte interface sees
every byte stream at every timing (a byte every cycle, framing errors anywhere, both at
once), which includes everything the real receiver can deliver; the UART's bit level is
covered by simulation (``tests/hw/test_uart.py``), not here.  The core's side (``in_ready``,
``busy``, ``done``, ``logit_data``) is free every cycle too.

Beside the link runs a shadow of the frame it is receiving, written from
:mod:`core.protocol` alone: it takes the first ``SYNC`` that arrives while the link
listens (its FSM in ``R_SYNC``: the one fact taken from the link, which drops bytes while it
is busy with a frame), then counts the fields, keeps ``TYPE`` and ``LEN``, checks each
payload code against ``2**input_bits - 1`` and runs the CRC as :func:`crc8_spec`, a bitwise
division by :data:`core.protocol.CRC_POLY` (the link uses a table-derived XOR network
instead), to the CRC byte, the one after the ``HEADER_BYTES - 1 + LEN`` bytes of ``TYPE``,
``LEN`` and payload.  The property: ``start`` is high only once a frame has ended whose CRC
is right (the CRC over ``TYPE``, ``LEN``, payload and CRC byte is 0), whose ``TYPE`` is
CLASSIFY, whose ``LEN`` is the design's ``n_inputs``, whose codes are in range and which had
no framing error; and at most once per frame.

It is proven by k-induction, for any number of cycles and so for frames of every length
(``LEN`` up to 65535, any payload, any byte timing).  The induction closes with
invariants tying the link's receive registers to the shadow: its field counter, CRC
register, type flags, remaining length and length and code verdicts equal what the shadow
derives from the bytes so far, and the link waits to start the core only on a good frame.
"""

from unittest import mock

import numpy as np
from amaranth.asserts import AnySeq
from amaranth.hdl import Assert, Cat, Const, Cover, Fragment, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from core import protocol as P
from hw import link as link_module
from hw.link import HostLink
from hw.uart import MIN_CLOCKS_PER_BIT

from . import proofs


def crc8_spec(crc, byte, poly=P.CRC_POLY):
    """The CRC-8 after ``byte`` from ``crc`` as logic, straight from the polynomial: the
    register XOR the byte, then eight steps of shift left, XOR ``poly`` when the bit shifted
    out was 1 (MSB first, no reflection, as :func:`core.protocol.crc8`)."""
    c = (crc ^ byte)[:8]
    for _ in range(8):
        shifted = Cat(Const(0, 1), c[:7])
        c = Mux(c[7], shifted ^ poly, shifted)
    return c


def build_link(info, link_class=HostLink):
    """A :class:`~hw.link.HostLink` (or ``link_class``, a test's broken one) for the network
    :class:`core.protocol.ModelInfo` ``info`` describes.  The receiver is free bytes here, so
    the bit time is the transmitter's only: the shortest."""
    return link_class(n_inputs=info.n_inputs, input_bits=info.input_bits, num_classes=info.num_classes,
                      logit_bits=info.logit_bits, model_id=info.model_id, input_shape=info.input_shape,
                      clocks_per_bit=MIN_CLOCKS_PER_BIT)


def label(lc):
    """A short name of a link config for the table: ``link 1x8x8 A4 10 classes L18``."""
    return f"link {'x'.join(map(str, lc.input_shape))} A{lc.input_bits} {lc.num_classes} classes L{lc.logit_bits}"


def network_link(name):
    """The link of network ``name`` of :data:`sim.proofs.NETWORKS`: its image, activation bits
    and 10 classes, the logit width of the design the planner fits to it."""
    net = proofs.NETWORKS[name]
    cfg = proofs.network_config(name)
    return P.ModelInfo(input_shape=tuple(net["image"]), input_bits=net["abits"], num_classes=10,
                       logit_bits=cfg.out_bits, model_id=0)


def random_links(count=4, seed=0):
    """``count`` small random link configs (seeded): images up to 3x3x3, 1 to 8 input bits,
    1 to 12 classes, logits of 1 to 32 bits."""
    rng = np.random.default_rng(seed)
    return [P.ModelInfo(input_shape=tuple(int(v) for v in rng.integers(1, 4, 3)), input_bits=int(rng.integers(1, 9)),
                        num_classes=int(rng.integers(1, 13)), logit_bits=int(rng.integers(1, 33)),
                        model_id=int(rng.integers(0, 2**32)))
            for _ in range(count)]


def first_start(lc):
    """The cycles from reset to the first ``start`` (inclusive) with the bytes back to back:
    ``SYNC``, ``TYPE``, ``LEN``, ``n_inputs`` codes and the CRC byte, a cycle each, then
    ``C_START`` and the cycle ``start`` is high in.  A base case this deep holds every run
    from reset to a start, good frame or bad."""
    return P.HEADER_BYTES + lc.n_inputs + P.TRAILER_BYTES + 2


class FreeBytes(wiring.Component):
    """Stands in for :class:`hw.uart.UartRx` (same ports): ``data``, ``valid`` and ``error``
    free every cycle, ``rx`` ignored."""

    rx: In(1, init=1)
    data: Out(8)
    valid: Out(1)
    error: Out(1)

    def __init__(self, clocks_per_bit=None):
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.data.eq(AnySeq(8)), self.valid.eq(AnySeq(1)), self.error.eq(AnySeq(1))]
        return m


def fsm_states(state):
    """``{name: value}`` of an Amaranth FSM's state signal, from its decoder."""
    return {state.decoder(v).split("/")[0]: v for v in range(2 ** len(state))}


class ProtocolProof(proofs.Proof):
    """:class:`~hw.link.HostLink`: ``start`` only after a good CLASSIFY frame, once (see the module docstring).

    ``make_link`` builds the link from the :class:`core.protocol.ModelInfo` (default
    :func:`build_link`; a test swaps in a broken one).
    ``reach``: a ``cover`` job instead, :func:`first_start` cycles deep, that finds a run in
    which ``start`` does rise (the assertions hold along it), so the property is not true
    merely because ``start`` never comes.
    """

    block = "protocol"

    def __init__(self, lc, *, make_link=None, depth=3, reach=False):
        super().__init__(lc)
        self.make_link = make_link or build_link
        self.reach = reach
        #: 3 closes the induction; a base case as deep as :func:`first_start` reaches a start
        self.depth = first_start(lc) if reach else depth
        self.mode = "cover" if reach else "prove"

    @property
    def name(self):
        return f"{self.block}-reach" if self.reach else self.block

    def elaborate(self, platform):
        m = Module()
        lc = self.cfg
        link = self.make_link(lc)
        made = []

        def free_bytes(clocks_per_bit):
            made.append(FreeBytes())
            return made[-1]

        with mock.patch.object(link_module, "UartRx", free_bytes):
            fragment = Fragment.get(link, platform)
        m.submodules.link = fragment
        [rx] = made
        inside = proofs.internal_signals(fragment)
        m.d.comb += [link.rx.eq(1), link.in_ready.eq(AnySeq(1)), link.busy.eq(AnySeq(1)), link.done.eq(AnySeq(1)),
                     link.logit_data.eq(AnySeq(len(link.logit_data)))]

        # what the trace is read from: the byte interface and the start pulse, at the top
        valid = self.probe(Signal(name="byte_valid"))
        data = self.probe(Signal(8, name="byte_data"))
        error = self.probe(Signal(name="byte_error"))
        start = self.probe(Signal(name="start"))
        state = inside["link_state"]
        states = fsm_states(state)
        listening = self.probe(Signal(name="listening"))
        starting = self.probe(Signal(name="starting"))  # the link waits to start the core
        m.d.comb += [valid.eq(rx.valid), data.eq(rx.data), error.eq(rx.error), start.eq(link.start),
                     listening.eq(state == states["R_SYNC"]), starting.eq(state == states["C_START"])]

        # --- the shadow frame, from core.protocol ---------------------------------------------
        head = P.HEADER_BYTES - 1  # TYPE and LEN: the bytes after SYNC before the payload
        in_frame = Signal(name="spec_in_frame")  # a SYNC taken, the frame not ended
        ended = Signal(name="spec_ended")  # the frame ended: its CRC byte or a framing error
        count = Signal(range(head + P.MAX_PAYLOAD + 2), name="spec_count")  # bytes after SYNC so far
        type_ = Signal(8, name="spec_type")
        length = Signal(16, name="spec_len")
        crc = Signal(8, name="spec_crc")  # over every byte after SYNC so far
        codes_ok = Signal(name="spec_codes_ok")
        broken = Signal(name="spec_broken")  # a framing error inside the frame
        started = Signal(name="spec_started")  # start has been high since the frame began
        is_last = Signal(name="spec_is_last")  # this byte is the CRC byte
        paid = Signal(range(P.MAX_PAYLOAD + 2), name="spec_paid")  # payload bytes so far
        m.d.comb += [paid.eq(count - head), is_last.eq((count >= head) & (paid == length))]

        with m.If(listening & valid & (data == P.SYNC)):
            m.d.sync += [in_frame.eq(1), ended.eq(0), count.eq(0), crc.eq(0), codes_ok.eq(1), broken.eq(0),
                         started.eq(0)]
        with m.Elif(in_frame & error):
            m.d.sync += [broken.eq(1), ended.eq(1), in_frame.eq(0)]
        with m.Elif(in_frame & valid):
            m.d.sync += [count.eq(count + 1), crc.eq(crc8_spec(crc, data))]
            with m.If(count == 0):
                m.d.sync += type_.eq(data)
            with m.If(count == 1):
                m.d.sync += length[:8].eq(data)
            with m.If(count == 2):
                m.d.sync += length[8:].eq(data)
            with m.If((count >= head) & ~is_last & (data > (1 << lc.input_bits) - 1)):
                m.d.sync += codes_ok.eq(0)
            with m.If(is_last):
                m.d.sync += [ended.eq(1), in_frame.eq(0)]
        with m.If(start):
            m.d.sync += started.eq(1)

        good = Signal(name="spec_good")
        m.d.comb += good.eq(ended & ~broken & (crc == 0) & (type_ == P.CLASSIFY) & (length == lc.n_inputs) & codes_ok)
        for sig in (ended, broken, crc, type_, length, codes_ok, started, good):
            self.probe(sig)

        # --- the property ---------------------------------------------------------------------
        m.d.comb += Assert(~start | (good & ~started),
                           "start only after a CLASSIFY frame with the right CRC, LEN and codes, once")
        if self.reach:
            m.d.comb += Cover(start)

        # --- the invariants the induction needs -----------------------------------------------
        m.d.comb += [Assert(~in_frame | ~(ended | broken | started)), Assert(listening | in_frame | ended),
                     Assert(~start | (state == states["C_RUN"]))]
        with m.If(state == states["R_FRAME"]):
            m.d.comb += [Assert(in_frame), Assert(inside["failed"] == 0), Assert(inside["crc"] == crc),
                         Assert(inside["pos"] == Mux(count < head, count, head)),
                         Assert((count < head) | (paid <= length))]
            classify = type_ == P.CLASSIFY
            info = type_ == P.INFO
            with m.If(count >= 1):
                m.d.comb += [Assert(inside["is_classify"] == classify), Assert(inside["is_info"] == info)]
            with m.If(count == 2):  # then it counts the payload down
                m.d.comb += Assert(inside["length"][:8] == length[:8])
            with m.If(count < head):
                m.d.comb += [Assert(inside["bad_code"] == 0), Assert(codes_ok)]
            with m.If(count >= head):
                m.d.comb += [Assert(inside["length"] == (length - paid)[:16]),
                             Assert(inside["len_ok"] == Mux(classify, length == lc.n_inputs, Mux(info, paid == 0, 1))),
                             Assert(inside["bad_code"] == (classify & (length == lc.n_inputs) & ~codes_ok))]
        with m.If(state == states["C_START"]):
            m.d.comb += Assert(good & ~started)
        with m.If(~listening & (state != states["R_FRAME"])):
            m.d.comb += Assert(~in_frame)
        return m

    def explain_trace(self, steps):
        """The counterexample in the protocol's terms, from the trace's ``steps`` (one
        ``{probe: value}`` a cycle): the frame the link took, its fields and CRC, and what
        the link did with it."""
        frame, frames, taking = None, [], False
        for v in steps[:-1]:
            if v["listening"] and v["byte_valid"] and v["byte_data"] == P.SYNC:
                frame, taking = [P.SYNC], True
                frames.append(frame)
            elif taking and v["byte_error"]:
                frame.append(-1)
                taking = False
            elif taking and v["byte_valid"]:
                frame.append(v["byte_data"])
                if len(frame) >= P.HEADER_BYTES and len(frame) == P.HEADER_BYTES + (frame[2] | frame[3] << 8) + 1:
                    taking = False
        last = steps[-1]
        did = ("the link started the engine" if last["start"] else
               "the link set out to start the engine (C_START)" if last["starting"] else
               "the link's state left the frame's")
        if frame is None:
            return f"{did} with no frame received ({len(steps)} cycles)"
        if -1 in frame:
            return f"{did} on a frame broken by a framing error: {bytes(frame[:-1]).hex(' ')} then the error"
        body, received = bytes(frame[1:-1]), frame[-1]
        want = P.crc8(body)
        length = body[1] | body[2] << 8 if len(body) >= 3 else None
        type_name = P.TYPE_NAMES.get(body[0], f"type 0x{body[0]:02X}") if body else "?"
        verdict = []
        if want != received:
            verdict.append(f"expected CRC 0x{want:02X} (core.protocol.crc8 of the bytes after SYNC), "
                           f"received 0x{received:02X}")
        else:
            verdict.append(f"CRC 0x{received:02X} right")
        verdict.append(f"{type_name}, LEN {length} ({'right' if length == self.cfg.n_inputs else 'wrong'}: "
                       f"n_inputs is {self.cfg.n_inputs})")
        top = (1 << self.cfg.input_bits) - 1
        bad = [b for b in body[3:] if b > top]
        if bad:
            verdict.append(f"code {bad[0]} above {top}")
        return f"{did} on frame {bytes(frame).hex(' ')}: " + "; ".join(verdict)


#: Links with at most this many codes also get a ``reach`` job (a cover run as deep as a
#: whole frame; the demo's 64 codes take about 3 minutes, MNIST's 784 far longer).
REACH_MAX_INPUTS = 32


def protocol_jobs(names, *, random_count, seed):
    """``[(label, ProtocolProof)]`` for the networks named (``demo``, ``mnist``) and
    ``random_count`` random links if ``random`` is named: the proof of each, and a ``reach``
    job for those with at most :data:`REACH_MAX_INPUTS` codes."""
    links = []
    for name in names:
        if name == "random":
            links += [(f"random {i}: {label(lc)}", lc) for i, lc in enumerate(random_links(random_count, seed))]
        else:
            lc = network_link(name)
            links.append((f"{name}: {label(lc)}", lc))
    jobs = []
    for name, lc in links:
        jobs.append((name, ProtocolProof(lc)))
        if lc.n_inputs <= REACH_MAX_INPUTS:
            jobs.append((name, ProtocolProof(lc, reach=True)))
    return jobs
