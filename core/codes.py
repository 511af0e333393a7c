"""Bit-level encodings shared by the RTL and the host: weight codes and packed memory words.

A weight term is ``wbits`` bits: the sign in the top bit and a ``wbits - 1``-bit shift
field below it; the all-ones field means zero (the artifact's ``zero`` flag), so the
field *is* the shift and no decoder subtracts anything.  A PE holds ``terms`` such codes,
term 0 in the low bits.
"""

import numpy as np


def zero_field(wbits):
    """The shift-field value that encodes a zero term."""
    return (1 << (wbits - 1)) - 1


def encode_terms(sign, shift, zero, wbits):
    """Pack artifact term codes, stacked on axis 0 (``terms``), into one integer per weight."""
    sign = np.asarray(sign, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    zero = np.asarray(zero).astype(bool)
    field = np.where(zero, zero_field(wbits), shift)
    term = np.where(zero, 0, sign) << (wbits - 1) | field
    out = np.zeros(term.shape[1:], dtype=np.int64)
    for t in range(term.shape[0]):
        out |= term[t] << (t * wbits)
    return out


def decode_terms(code, wbits, terms):
    """Inverse of :func:`encode_terms`: ``(sign, shift, zero)`` arrays of shape ``(terms, ...)``."""
    code = np.asarray(code, dtype=np.int64)
    field_mask = zero_field(wbits)
    t = np.stack([(code >> (i * wbits)) & ((1 << wbits) - 1) for i in range(terms)])
    field = t & field_mask
    zero = field == field_mask
    return np.where(zero, 0, t >> (wbits - 1)), np.where(zero, 0, field), zero


def pack(values, width):
    """Pack the last axis of ``values`` into integers, element 0 in the low bits (two's complement)."""
    values = np.asarray(values, dtype=np.int64)
    mask = (1 << width) - 1
    out = [0] * int(np.prod(values.shape[:-1], dtype=np.int64))
    flat = values.reshape(len(out), values.shape[-1])
    for i, row in enumerate(flat):
        word = 0
        for j, v in enumerate(row.tolist()):
            word |= (v & mask) << (j * width)
        out[i] = word
    return out


def unpack(word, count, width, signed=False):
    """Split an integer into ``count`` fields of ``width`` bits, field 0 from the low bits."""
    mask = (1 << width) - 1
    fields = [(int(word) >> (j * width)) & mask for j in range(count)]
    if signed:
        fields = [f - (1 << width) if f >> (width - 1) else f for f in fields]
    return np.array(fields, dtype=np.int64)
