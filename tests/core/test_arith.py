"""The integer contract: rounding shifts, widths, code encodings."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import arith
from core.errors import UserError


@given(acc=st.integers(-(2**40), 2**40), shift=st.integers(-8, 30))
def test_round_shift_is_round_half_up_of_exact_quotient(acc, shift):
    # exact rational rounding: floor(acc / 2**shift + 1/2)
    if shift >= 0:
        want = (2 * acc + 2**shift) // (2 ** (shift + 1))
    else:
        want = acc * 2 ** (-shift)
    assert int(arith.round_shift(acc, shift)) == want


def test_round_shift_per_channel_broadcast():
    acc = np.array([[5, -5, 7], [6, -6, -1]])
    shift = np.array([1, 2, -1])
    assert arith.round_shift(acc, shift).tolist() == [[3, -1, 14], [3, -1, -2]]


def test_requantize_clamps_to_relu_range():
    acc = np.array([-100, -1, 0, 17, 1000])
    assert arith.requantize(acc, 1, True, 4).tolist() == [0, 0, 0, 9, 15]
    assert arith.requantize(acc, 0, False, None).tolist() == acc.tolist()


@pytest.mark.parametrize("wbits, levels", [(2, 1), (3, 3), (4, 7), (5, 15)])
def test_shift_levels(wbits, levels):
    assert arith.shift_levels(wbits) == levels


@given(fan_in=st.integers(1, 4096), in_bits=st.integers(1, 8), wbits=st.integers(2, 5), terms=st.integers(1, 3))
@settings(max_examples=200)
def test_accumulator_holds_worst_case_and_no_less(fan_in, in_bits, wbits, terms):
    bits = arith.accumulator_bits(fan_in, in_bits, wbits, terms)
    worst = 2 * arith.product_bound(fan_in, in_bits, wbits, terms)  # products plus largest bias, one sign
    assert -(2 ** (bits - 1)) <= -worst and worst <= 2 ** (bits - 1) - 1
    assert worst > 2 ** (bits - 2) - 1  # one bit fewer would overflow


def test_worst_case_accumulation_matches_bound():
    fan_in, in_bits, wbits, terms = 144, 4, 4, 2
    levels = arith.shift_levels(wbits)
    w = np.full(fan_in, terms * 2 ** (levels - 1))
    x = np.full(fan_in, arith.act_max(in_bits))
    assert int(w @ x) == arith.product_bound(fan_in, in_bits, wbits, terms)


@pytest.mark.parametrize("kw", [{"wbits": 1}, {"wbits": 6}, {"abits": 0}, {"abits": 9}, {"terms": 0}, {"terms": 4},
                                {"wbits": 4.0}, {"abits": True}])
def test_check_bits_refuses_unrepresentable(kw):
    with pytest.raises(UserError) as e:
        arith.check_bits(**kw)
    assert "\n" not in str(e.value) and "--" in str(e.value)


def test_accumulator_limit_is_refused():
    with pytest.raises(UserError, match="accumulator"):
        arith.check_accumulator("fc", arith.MAX_ACC_BITS + 1)


@given(st.lists(st.integers(-7, 7), min_size=1, max_size=50))
def test_csd_codes_round_trip_uniform_4bit(values):
    sign, shift, zero = arith.csd_codes(np.array(values), terms=2, levels=7)
    assert arith.weight_value(sign, shift, zero).tolist() == values
    assert np.all(shift[~zero.astype(bool)] <= 3)


def test_csd_codes_refuses_values_needing_more_terms():
    with pytest.raises(UserError, match="--terms"):
        arith.csd_codes(np.array([0b10101]), terms=2, levels=7)


def test_weight_value_of_codes():
    sign = np.array([[0, 1, 0]])
    shift = np.array([[3, 2, 5]])
    zero = np.array([[0, 0, 1]])
    assert arith.weight_value(sign, shift, zero).tolist() == [8, -4, 0]
