"""The host-link frame protocol: CRC-8, framing, the streaming decoder and the payload helpers."""

import numpy as np
import pytest

from core import protocol as P


def test_crc8_check_value():
    assert P.crc8(b"123456789") == 0xF4  # CRC-8 (poly 0x07, init 0, no reflection, no xor out)
    assert P.crc8(b"") == 0
    assert P.crc8(b"6789", P.crc8(b"12345")) == 0xF4  # continues from a previous value


def test_encode_layout():
    frame = P.encode(P.CLASSIFY, b"\x01\x02\x03")
    assert frame[:4] == bytes([0xA5, 0x01, 0x03, 0x00])
    assert frame[4:7] == b"\x01\x02\x03"
    assert frame[7] == P.crc8(frame[1:7])
    assert P.crc8(frame[1:]) == 0  # the CRC byte closes the check
    assert P.encode(P.INFO) == bytes([0xA5, 0x02, 0x00, 0x00, P.crc8(b"\x02\x00\x00")])
    long = P.encode(P.RESULT, bytes(300))
    assert long[2:4] == (300).to_bytes(2, "little")
    with pytest.raises(ValueError):
        P.encode(0x100)
    with pytest.raises(ValueError):
        P.encode(P.CLASSIFY, bytes(P.MAX_PAYLOAD + 1))


def test_round_trip_whole_and_byte_by_byte():
    rng = np.random.default_rng(0)
    frames = [(P.CLASSIFY, bytes(rng.integers(0, 256, 784, dtype=np.uint8))), (P.INFO, b""),
              (P.RESULT, P.result_payload(3, [-1, 2**31 - 1, -2**31, 0])), (P.ERROR, b"\x02"),
              (P.CLASSIFY, bytes([P.SYNC] * 7))]  # SYNC bytes inside a payload are data
    stream = b"".join(P.encode(t, p) for t, p in frames)
    want = [P.Frame(t, p, True) for t, p in frames]
    assert P.FrameDecoder().feed(stream) == want
    decoder = P.FrameDecoder()
    got = [f for i in range(len(stream)) for f in decoder.feed(stream[i:i + 1])]
    assert got == want and decoder.pending == 0 and decoder.skipped == 0


def test_every_flipped_bit_is_detected():
    frame = P.encode(P.CLASSIFY, bytes(range(10)))
    for bit in range(8, 8 * len(frame)):  # every bit after SYNC
        bad = bytearray(frame)
        bad[bit // 8] ^= 1 << (bit % 8)
        assert P.crc8(bad[1:]) != 0
        if not 2 <= bit // 8 <= 3:  # not in LEN: the frame keeps its size and fails its CRC
            (got,) = P.FrameDecoder().feed(bytes(bad))
            assert not got.crc_ok
    decoder = P.FrameDecoder()
    bad = bytearray(frame)
    bad[6] ^= 0x10
    frames = decoder.feed(bytes(bad) + frame)  # reported, and decoding goes on after it
    assert [f.crc_ok for f in frames] == [False, True]
    assert "bad CRC" in str(frames[0])


def test_decoder_resynchronises_after_garbage():
    good = P.encode(P.INFO_REPLY, P.ModelInfo((1, 28, 28), 4, 10, 21, 7).payload())
    decoder = P.FrameDecoder()
    assert decoder.feed(b"\x00\x13\xff") == []
    assert decoder.skipped == 3 and decoder.pending == 0
    assert decoder.feed(b"\x42" + good + b"\x99") == [P.Frame(P.INFO_REPLY, good[4:-1])]
    assert decoder.skipped == 5
    # a stray SYNC whose "header" announces more than the decoder accepts is skipped too
    decoder = P.FrameDecoder(max_payload=64)
    assert decoder.feed(bytes([P.SYNC, 0x81, 0xFF, 0xFF]) + good) == [P.Frame(P.INFO_REPLY, good[4:-1])]
    # a frame cut short waits for the rest
    decoder = P.FrameDecoder()
    assert decoder.feed(good[:7]) == [] and decoder.pending == 7
    assert decoder.feed(good[7:]) == [P.Frame(P.INFO_REPLY, good[4:-1])]


def test_wanted_never_overreads():
    """``wanted()`` bytes always complete a frame or its header without reaching past the frame."""
    frame = P.encode(P.RESULT, P.result_payload(0, [5, -5]))
    decoder = P.FrameDecoder()
    fed = 0
    frames = []
    while not frames:
        n = decoder.wanted()
        assert 1 <= n <= len(frame) - fed
        frames = decoder.feed(frame[fed:fed + n])
        fed += n
    assert fed == len(frame)


def test_payload_helpers():
    assert P.classify_frame([0, 15, 7], 4) == P.encode(P.CLASSIFY, b"\x00\x0f\x07")
    with pytest.raises(ValueError, match="16"):
        P.classify_frame([0, 16], 4)
    logits = [-(2**31), -1, 0, 1, 2**31 - 1]
    payload = P.result_payload(4, logits)
    assert len(payload) == 1 + 4 * len(logits)
    assert payload[1:5] == b"\x00\x00\x00\x80"  # little-endian two's complement
    assert P.parse_result(payload, 5) == (4, logits)
    with pytest.raises(P.ProtocolError, match="expected 17"):
        P.parse_result(payload[:-1], 4)
    with pytest.raises(P.ProtocolError, match="class 4"):
        P.parse_result(P.result_payload(4, logits[:4]), 4)
    info = P.ModelInfo((3, 32, 30), 8, 10, 24, 0xDEADBEEF)
    assert len(info.payload()) == P.INFO_BYTES == 13
    assert info.payload()[:6] == bytes([3, 0, 32, 0, 30, 0])
    assert P.parse_info(info.payload()) == info and info.n_inputs == 3 * 32 * 30
    with pytest.raises(P.ProtocolError):
        P.parse_info(info.payload() + b"\x00")
    with pytest.raises(ValueError):
        P.ModelInfo((1, 1, 1), 4, 300, 8, 0).payload()
    assert P.parse_error(b"\x04") == P.BAD_CODE and P.error_name(P.BAD_CODE) == "input code out of range"
