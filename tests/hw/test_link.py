"""The host link on Amaranth's simulator: real UART bit streams in (built with core.protocol.encode),
the tx line decoded back into frames (core.protocol.FrameDecoder), and a fake network core in the
testbench that collects the codes, answers ``done`` a few cycles after ``start`` and serves logits."""

import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator

from core import protocol as P
from hw.link import HostLink
from tests.hw.test_uart import refused

CPB = 4  # clocks per bit: the smallest the UART takes, for quick simulations
SHAPE = (2, 2, 3)  # C, H, W: 12 codes
BITS = 4
CLASSES = 5
LOGIT_BITS = 12
MODEL_ID = 0xC0DE_1234


def make_link(shape=SHAPE, bits=BITS, classes=CLASSES, logit_bits=LOGIT_BITS, cpb=CPB):
    return HostLink(n_inputs=int(np.prod(shape)), input_bits=bits, num_classes=classes, logit_bits=logit_bits,
                    model_id=MODEL_ID, input_shape=shape, clocks_per_bit=cpb)


# --- the UART line, both ways -----------------------------------------------------------

def to_line(data, cpb=CPB, *, bad_stop=(), gap=1):
    """Line levels (one a cycle) sending ``data`` 8N1, ``gap`` idle bit times after each byte;
    the bytes at the indices in ``bad_stop`` get a low stop bit (a framing error)."""
    levels = []
    for i, b in enumerate(data):
        stop = 0 if i in bad_stop else 1
        for level in [0] + [(b >> k) & 1 for k in range(8)] + [stop] + [1] * gap:
            levels += [level] * cpb
    return levels


def idle(bit_times, cpb=CPB):
    return [1] * (bit_times * cpb)


class LineDecoder:
    """Samples the tx line each cycle and decodes 8N1 bytes (mid-bit), checking start and stop bits."""

    def __init__(self, cpb):
        self.cpb = cpb
        self.t = None  # cycles since the start bit began
        self.bits = []
        self.data = bytearray()

    def step(self, level):
        if self.t is None:
            if level == 0:
                self.t, self.bits = 0, []
            else:
                return
        if self.t % self.cpb == self.cpb // 2:
            self.bits.append(level)
            if len(self.bits) == 10:
                assert self.bits[0] == 0 and self.bits[9] == 1, f"bad tx framing {self.bits}"
                self.data.append(sum(b << k for k, b in enumerate(self.bits[1:9])))
                self.t = None
                return
        self.t += 1


# --- the fake core and the run ----------------------------------------------------------

@dataclasses.dataclass
class Run:
    frames: list  # decoded reply frames
    images: list  # the codes the core held at each start
    firsts: int  # in_first pulses
    cycles: int


def run_link(dut, requests, logits=(), *, ready=lambda cycle, firsts: 1, busy_until=0, run_cycles=6,
             max_cycles=60_000):
    """Send ``requests`` into ``dut.rx`` like a host: each is ``(levels, replies)``, line levels
    (one a cycle) sent once the replies to the requests before it have all come back; it asks
    for ``replies`` (0 or 1) frames.  Runs until the last reply (and a while longer, to catch
    anything extra).

    The fake core: its ``k``-th run serves ``logits[k]``; ``ready(cycle, firsts)`` (``firsts``:
    the ``in_first`` pulses so far) is its ``in_ready``; it is busy until cycle ``busy_until``
    and for ``run_cycles`` cycles after each ``start``, pulsing ``done`` in the last."""
    n = dut.num_classes
    line = LineDecoder(dut.clocks_per_bit)
    decoder = P.FrameDecoder()
    frames, images = [], []
    state = {"firsts": 0, "cycles": 0}
    expected = sum(r for _, r in requests)

    async def bench(ctx):
        codes = []
        run_left = 0
        served = None
        pending = list(requests)
        levels, asked = [], 0
        grace = 40 * dut.clocks_per_bit
        for cycle in range(max_cycles):
            if not levels and pending and len(frames) == asked:
                levels, replies = pending.pop(0)
                levels, asked = list(levels), asked + replies
            ctx.set(dut.rx, levels.pop(0) if levels else 1)
            # the core, as it looks during this cycle (the link's outputs are registers)
            busy = cycle < busy_until or run_left > 0
            ctx.set(dut.busy, busy)
            ctx.set(dut.done, run_left == 1)
            rdy = ready(cycle, state["firsts"])
            ctx.set(dut.in_ready, rdy)
            addr = ctx.get(dut.logit_addr)
            assert addr < n, f"logit_addr {addr} out of range"
            ctx.set(dut.logit_data, int(served[addr]) if served is not None else 0)
            if ctx.get(dut.in_first):
                assert not ctx.get(dut.in_valid), "in_first with in_valid high"
                state["firsts"] += 1
                codes = []
            if ctx.get(dut.in_valid) and rdy:
                codes.append(ctx.get(dut.in_data))
            if ctx.get(dut.start):
                assert not busy, "start while the core is busy"
                images.append(list(codes))
                served = logits[len(images) - 1]
                run_left = run_cycles + 1
            elif run_left:
                run_left -= 1
            await ctx.tick()
            line.step(ctx.get(dut.tx))
            if line.data:
                frames.extend(decoder.feed(bytes(line.data)))
                line.data.clear()
            if len(frames) >= expected and not pending and not levels:
                grace -= 1
                if grace == 0:
                    break
        state["cycles"] = cycle

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(frames) == expected, f"{len(frames)} reply frames, expected {expected}: {frames}"
    assert all(f.crc_ok for f in frames)
    assert decoder.skipped == 0 and decoder.pending == 0
    return Run(frames, images, state["firsts"], state["cycles"])


def classify(codes, bits=BITS):
    return P.classify_frame(codes, bits)


def first_argmax(logits):
    return int(np.argmax(logits))  # numpy: the first of equal maxima


def check_result(frame, logits, classes=CLASSES):
    assert frame.type == P.RESULT, frame
    cls, got = P.parse_result(frame.payload, classes)
    assert got == [int(v) for v in logits]
    assert cls == first_argmax(logits)


def error_code(frame):
    assert frame.type == P.ERROR, frame
    return P.parse_error(frame.payload)


# --- tests ------------------------------------------------------------------------------

def ask(data, **kwargs):
    """A request expecting one reply: the frame ``data`` on the line."""
    return to_line(data, **kwargs), 1


def test_classify_gives_result_and_the_core_gets_the_codes():
    rng = np.random.default_rng(1)
    images = [[int(v) for v in rng.integers(0, 2**BITS, 12)] for _ in range(2)]
    images[0][:3] = [0, 15, 15]
    logits = [[-5, 7, -100, 7, 3],  # a tie for the maximum: the first wins
              [-2048, -2048, -3, -2047, -3]]  # all negative, the extreme code, a tie again
    # the first frame's bytes back to back, the second's with an idle bit time after each
    run = run_link(make_link(), [(idle(3), 0), ask(classify(images[0]), gap=0), ask(classify(images[1]))], logits)
    for frame, lg in zip(run.frames, logits):
        check_result(frame, lg)
    assert run.images == images
    assert run.firsts == 2


def test_first_maximum_and_sign_extension():
    """Many logit vectors through one link: ties, all equal, extremes of the 12-bit range."""
    lo, hi = -2**(LOGIT_BITS - 1), 2**(LOGIT_BITS - 1) - 1
    rng = np.random.default_rng(2)
    vectors = [
        [0, 0, 0, 0, 0],
        [lo, lo, lo, lo, lo],
        [hi, hi, lo, hi, 0],
        [lo, lo, lo, lo, lo + 1],
        [-1, -2, -1, -3, -1],
        [1, -1, 256, 255, 256],
        [lo, hi, -1, 0, hi - 1],
        [-256, -255, -257, -255, -1000],
    ] + [list(rng.integers(-3, 3, CLASSES)) for _ in range(2)] + [list(rng.integers(lo, hi + 1, CLASSES))]
    run = run_link(make_link(), [ask(classify([1] * 12))] * len(vectors), vectors)
    for f, lg in zip(run.frames, vectors):
        check_result(f, lg)


def test_bad_frames_get_errors_and_never_start_the_core():
    good = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]
    bad_crc = bytearray(classify(good))
    bad_crc[7] ^= 0x04
    frames = [
        (bytes(bad_crc), P.BAD_CHECKSUM),
        (classify(good[:-1]), P.BAD_LENGTH),  # short
        (classify(good + [0, 0, 0]), P.BAD_LENGTH),  # long: LEN bytes are still consumed
        (P.encode(P.CLASSIFY, b""), P.BAD_LENGTH),
        (P.encode(P.INFO, b"\x00"), P.BAD_LENGTH),  # INFO takes no payload
        (P.encode(0x7E, bytes(12)), P.UNKNOWN_TYPE),
        (P.encode(P.RESULT, b""), P.UNKNOWN_TYPE),
        (P.encode(P.CLASSIFY, bytes(good[:4] + [16] + good[5:])), P.BAD_CODE),  # 16 > 2**4 - 1
        (P.encode(P.CLASSIFY, bytes(good[:11] + [0xFF])), P.BAD_CODE),
    ]
    requests = [ask(data) for data, _ in frames] + [ask(classify(good))]  # and the link is still in step
    logits = [[1, 2, 3, 4, 5]]
    run = run_link(make_link(), requests, logits)
    assert [error_code(f) for f in run.frames[:-1]] == [code for _, code in frames]
    check_result(run.frames[-1], logits[0])
    assert run.images == [good]  # only the good frame ran the core


def test_info_reply_after_leading_garbage():
    garbage = bytes([0x00, 0xFF, 0x13, 0x5A, 0x81, 0xE1, 0x01])  # no SYNC among them
    requests = [(to_line(garbage), 0), ask(P.encode(P.INFO)), (to_line(b"\x42\x43"), 0), ask(classify([15] * 12))]
    run = run_link(make_link(), requests, [[0, 0, 9, 0, 0]])
    assert run.frames[0].type == P.INFO_REPLY
    assert P.parse_info(run.frames[0].payload) == P.ModelInfo(SHAPE, BITS, CLASSES, LOGIT_BITS, MODEL_ID)
    check_result(run.frames[1], [0, 0, 9, 0, 0])


def test_framing_error_abandons_the_frame():
    codes = [2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5]
    data = classify(codes)
    assert P.SYNC not in data[1:]  # the rest of the broken frame is skipped as garbage
    run = run_link(make_link(), [ask(data, bad_stop={6}), ask(data)], [[0, 1, 2, 3, 4]])
    assert error_code(run.frames[0]) == P.BAD_CHECKSUM
    check_result(run.frames[1], [0, 1, 2, 3, 4])
    assert run.images == [codes]


def test_waits_for_busy_and_honours_in_ready():
    rng = np.random.default_rng(3)
    codes = [int(v) for v in rng.integers(0, 16, 12)]
    stalls = rng.random(100_000) < 0.5  # in_ready low about half the cycles, never for long
    stalls[2::3] = False
    request = ask(classify(codes))
    run = run_link(make_link(), [request], [[5, 4, 3, 2, 1]], ready=lambda c, _: int(not stalls[c]),
                   busy_until=len(request[0]) + 500, run_cycles=40)
    check_result(run.frames[0], [5, 4, 3, 2, 1])
    assert run.images == [codes]


def test_a_code_not_taken_in_time_fails_the_frame():
    # in_ready goes low once the 4th payload code is offered (frame byte 7; a byte and its
    # gap take 11 bit times) and stays low until the next frame's in_first, which drops the
    # code left over
    t0 = (7 * 11 + 10) * CPB
    codes = [int(v) for v in np.arange(12) % 16]
    run = run_link(make_link(), [ask(classify(range(12))), ask(classify(codes[::-1]))], [[0, 0, 0, 1, 0]],
                   ready=lambda c, firsts: int(c < t0 or firsts > 1))
    assert error_code(run.frames[0]) == P.BAD_CHECKSUM
    check_result(run.frames[1], [0, 0, 0, 1, 0])
    assert run.images == [codes[::-1]]


@pytest.mark.parametrize("shape,bits,classes,logit_bits", [((1, 1, 3), 8, 1, 32), ((3, 1, 1), 1, 3, 1)])
def test_other_sizes(shape, bits, classes, logit_bits):
    top = 2**bits - 1
    codes = [top, 0, top]
    lo, hi = -2**(logit_bits - 1), 2**(logit_bits - 1) - 1
    logits = [[lo, hi, hi][:classes], [hi, lo, lo][:classes]]
    bad = P.encode(P.CLASSIFY, bytes([top + 1] * 3)) if bits < 8 else P.encode(0x03)
    requests = [ask(P.encode(P.INFO)), ask(P.classify_frame(codes, bits)), ask(bad), ask(P.classify_frame(codes, bits))]
    run = run_link(make_link(shape, bits, classes, logit_bits), requests, logits)
    assert P.parse_info(run.frames[0].payload) == P.ModelInfo(shape, bits, classes, logit_bits, MODEL_ID)
    check_result(run.frames[1], logits[0], classes)
    assert error_code(run.frames[2]) == (P.BAD_CODE if bits < 8 else P.UNKNOWN_TYPE)
    check_result(run.frames[3], logits[1], classes)
    assert run.images == [codes, codes]


def test_parameters_checked():
    assert "input_shape" in refused(lambda: HostLink(n_inputs=12, input_bits=4, num_classes=5, logit_bits=12,
                                                     model_id=0, input_shape=(2, 2, 2), clocks_per_bit=CPB))
    assert "input_bits" in refused(lambda: make_link(bits=9))
    assert "num_classes" in refused(lambda: make_link(classes=256))
    assert "logit_bits" in refused(lambda: make_link(logit_bits=33))
    assert "clocks_per_bit" in refused(lambda: make_link(cpb=3))
