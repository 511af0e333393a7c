"""Weight-code and memory-word encodings round-trip and agree with the integer contract."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core import arith
from core import codes
from hw.random_layers import random_codes


@settings(max_examples=50, deadline=None)
@given(wbits=st.integers(*arith.WBITS_RANGE), terms=st.integers(*arith.TERMS_RANGE), seed=st.integers(0, 2**32 - 1))
def test_weight_codes_round_trip(wbits, terms, seed):
    rng = np.random.default_rng(seed)
    sign, shift, zero = random_codes(rng, (5, 3), wbits, terms)
    packed = codes.encode_terms(sign, shift, zero, wbits)
    assert packed.max() < 2 ** (terms * wbits)
    back = codes.decode_terms(packed, wbits, terms)
    np.testing.assert_array_equal(arith.weight_value(*back), arith.weight_value(sign, shift, zero))
    np.testing.assert_array_equal(back[2], zero)


def test_zero_is_the_all_ones_field_and_shifts_are_the_field():
    # wbits 3: sign bit 2, field bits 1..0; field 3 is zero, fields 0..2 are shifts 0..2
    assert codes.zero_field(3) == 3
    assert codes.encode_terms([[1]], [[2]], [[False]], 3).tolist() == [0b110]
    assert codes.encode_terms([[1]], [[2]], [[True]], 3).tolist() == [0b011]
    assert codes.encode_terms([[0, 0]], [[0, 1]], [[False, False]], 2).tolist() == [0b00, 0b01]


@given(st.lists(st.integers(-(2**9), 2**9 - 1), min_size=1, max_size=8))
def test_pack_unpack_signed(values):
    word = codes.pack(np.array([values]), 10)[0]
    np.testing.assert_array_equal(codes.unpack(word, len(values), 10, signed=True), values)
