"""The host link's frame protocol: the one definition used by the client, the tests and :mod:`hw.link`.

Every frame, in both directions::

    SYNC (0xA5) | TYPE (1) | LEN (2, little-endian) | PAYLOAD (LEN bytes) | CRC (1)

``CRC`` is CRC-8 (polynomial 0x07, initial value 0, no reflection, no final xor) over
``TYPE``, both ``LEN`` bytes and ``PAYLOAD``; ``SYNC`` is not covered.  A receiver skips
any byte outside a frame until the next ``SYNC``.

Host to board: ``CLASSIFY`` (the input codes, one byte each, (y, x, c) raster order,
channel fastest) and ``INFO`` (empty).  Board to host: ``RESULT`` (the class index, then
``num_classes`` logits of :data:`LOGIT_BYTES` little-endian two's-complement bytes each),
``INFO_REPLY`` (:meth:`ModelInfo.payload`) and ``ERROR`` (one error code byte).
"""

import dataclasses
import struct

SYNC = 0xA5

# host -> board
CLASSIFY = 0x01
INFO = 0x02
# board -> host
RESULT = 0x81
INFO_REPLY = 0x82
ERROR = 0xE1

# ERROR payloads
BAD_CHECKSUM = 1  # CRC mismatch, or the frame was garbled on the line (UART framing error)
BAD_LENGTH = 2  # CLASSIFY payload length != number of inputs, or INFO with a payload
UNKNOWN_TYPE = 3
BAD_CODE = 4  # an input byte above 2**input_bits - 1

ERROR_NAMES = {BAD_CHECKSUM: "bad checksum", BAD_LENGTH: "bad length", UNKNOWN_TYPE: "unknown type",
               BAD_CODE: "input code out of range"}
TYPE_NAMES = {CLASSIFY: "CLASSIFY", INFO: "INFO", RESULT: "RESULT", INFO_REPLY: "INFO_REPLY", ERROR: "ERROR"}

#: Bytes of one logit in a RESULT payload.
LOGIT_BYTES = 4
#: Bytes before the payload (SYNC, TYPE, LEN) and after it (CRC).
HEADER_BYTES = 4
TRAILER_BYTES = 1
MAX_PAYLOAD = 0xFFFF

CRC_POLY = 0x07


class ProtocolError(ValueError):
    """A payload that does not parse (wrong length or out-of-range field)."""


def _crc_table():
    table = []
    for v in range(256):
        crc = v
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


#: ``CRC_TABLE[crc ^ byte]`` is the CRC after one more byte.  The step is linear over
#: GF(2), so ``CRC_TABLE[1 << i]`` says which output bits input bit ``i`` flips.
CRC_TABLE = _crc_table()


def crc8(data, crc=0):
    """CRC-8/0x07 of ``data`` (bytes), continuing from ``crc``.  ``crc8(b"123456789") == 0xF4``;
    a frame's bytes after SYNC, its CRC included, give 0."""
    for b in data:
        crc = CRC_TABLE[crc ^ b]
    return crc


def encode(type_, payload=b""):
    """The frame of ``type_`` (0..255) carrying ``payload`` (at most 65535 bytes)."""
    payload = bytes(payload)
    if not 0 <= type_ <= 0xFF:
        raise ValueError(f"frame type {type_} is not a byte")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes is longer than {MAX_PAYLOAD}")
    body = bytes([type_]) + struct.pack("<H", len(payload)) + payload
    return bytes([SYNC]) + body + bytes([crc8(body)])


@dataclasses.dataclass(frozen=True)
class Frame:
    """A decoded frame; ``crc_ok`` is False when its CRC did not match (the payload is then
    whatever arrived, not to be trusted)."""

    type: int
    payload: bytes
    crc_ok: bool = True

    def __str__(self):
        name = TYPE_NAMES.get(self.type, f"type 0x{self.type:02X}")
        return f"{name} frame, {len(self.payload)} payload bytes{'' if self.crc_ok else ', bad CRC'}"


class FrameDecoder:
    """Streaming decoder: :meth:`feed` it bytes as they arrive, it returns the frames completed.

    Bytes outside a frame are skipped until ``SYNC`` (counted in :attr:`skipped`).  A frame
    whose CRC fails comes back with ``crc_ok=False``; decoding goes on after its CRC byte.
    A header announcing more than ``max_payload`` bytes is taken for garbage: its SYNC is
    skipped and the search for the next one starts at the byte after it.
    """

    def __init__(self, max_payload=MAX_PAYLOAD):
        self.max_payload = max_payload
        self.skipped = 0
        self._buf = bytearray()

    def feed(self, data):
        """Add ``data``; returns the list of frames it completed (possibly empty)."""
        self._buf += data
        frames = []
        buf = self._buf
        while buf:
            if buf[0] != SYNC:
                start = buf.find(SYNC)
                drop = len(buf) if start < 0 else start
                self.skipped += drop
                del buf[:drop]
                continue
            if len(buf) < HEADER_BYTES:
                break
            length = buf[2] | buf[3] << 8
            if length > self.max_payload:
                self.skipped += 1
                del buf[:1]
                continue
            end = HEADER_BYTES + length + TRAILER_BYTES
            if len(buf) < end:
                break
            frames.append(Frame(buf[1], bytes(buf[HEADER_BYTES:end - 1]), crc8(buf[1:end]) == 0))
            del buf[:end]
        return frames

    @property
    def pending(self):
        """Bytes held of a frame not yet complete."""
        return len(self._buf)

    def wanted(self):
        """How many more bytes complete the frame under way (the shortest frame when none is),
        so a reader that asks for this many never reads past a frame's end."""
        buf = self._buf
        if len(buf) < HEADER_BYTES:
            return HEADER_BYTES + TRAILER_BYTES - len(buf)
        return HEADER_BYTES + (buf[2] | buf[3] << 8) + TRAILER_BYTES - len(buf)


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the board's INFO_REPLY says about the network it runs."""

    input_shape: tuple  # (C, H, W)
    input_bits: int
    num_classes: int
    logit_bits: int
    model_id: int

    #: ``<`` C, H, W (uint16), input bits, classes, logit bits (uint8), model id (uint32)
    FORMAT = "<HHHBBBI"

    @property
    def n_inputs(self):
        c, h, w = self.input_shape
        return c * h * w

    def payload(self):
        """The INFO_REPLY payload (:data:`INFO_BYTES`, 13 bytes)."""
        try:
            return struct.pack(self.FORMAT, *self.input_shape, self.input_bits, self.num_classes,
                               self.logit_bits, self.model_id)
        except struct.error as exc:
            raise ValueError(f"{self} does not fit the INFO_REPLY fields ({exc})") from None


INFO_BYTES = struct.calcsize(ModelInfo.FORMAT)


def parse_info(payload):
    """The :class:`ModelInfo` of an INFO_REPLY payload."""
    if len(payload) != INFO_BYTES:
        raise ProtocolError(f"INFO_REPLY payload has {len(payload)} bytes, expected {INFO_BYTES}")
    c, h, w, bits, classes, logit_bits, model_id = struct.unpack(ModelInfo.FORMAT, bytes(payload))
    return ModelInfo((c, h, w), bits, classes, logit_bits, model_id)


def classify_frame(codes, input_bits):
    """The CLASSIFY frame of input ``codes`` (integers in ``0 .. 2**input_bits - 1``, raster order)."""
    codes = [int(c) for c in codes]
    top = 2**input_bits - 1
    bad = [c for c in codes if not 0 <= c <= top]
    if bad:
        raise ValueError(f"input code {bad[0]} is outside 0..{top} for {input_bits}-bit inputs")
    return encode(CLASSIFY, bytes(codes))


def result_payload(class_index, logits):
    """A RESULT payload (what the board sends): the class, then each logit as LOGIT_BYTES bytes."""
    return bytes([class_index]) + b"".join(int(v).to_bytes(LOGIT_BYTES, "little", signed=True) for v in logits)


def parse_result(payload, num_classes):
    """``(class_index, logits)`` of a RESULT payload with ``num_classes`` logits."""
    want = 1 + LOGIT_BYTES * num_classes
    if len(payload) != want:
        raise ProtocolError(f"RESULT payload has {len(payload)} bytes, expected {want} for {num_classes} classes")
    logits = [int.from_bytes(payload[i:i + LOGIT_BYTES], "little", signed=True)
              for i in range(1, want, LOGIT_BYTES)]
    if payload[0] >= num_classes:
        raise ProtocolError(f"RESULT names class {payload[0]}, but there are {num_classes} classes")
    return payload[0], logits


def parse_error(payload):
    """The error code of an ERROR payload."""
    if len(payload) != 1:
        raise ProtocolError(f"ERROR payload has {len(payload)} bytes, expected 1")
    return payload[0]


def error_name(code):
    return ERROR_NAMES.get(code, f"unknown error code {code}")
