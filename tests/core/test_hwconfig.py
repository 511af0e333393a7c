"""The hardware config derives its widths from the integer contract and refuses what cannot be built."""

import pytest

from core import arith
from core.errors import UserError
from core.hwconfig import HwConfig


def test_widths_come_from_the_foundation():
    cfg = HwConfig(rows=4, cols=3, abits=3, wbits=5, terms=2, max_fan_in=300, pipeline=True)
    assert cfg.acc_bits == arith.accumulator_bits(300, 3, 5, 2)
    assert cfg.shift_levels == arith.shift_levels(5) == 15
    assert cfg.code_bits == 10
    assert cfg.latency == 4 + 3 - 1 + 1
    assert set(cfg.derived()) >= {"acc_bits", "latency", "out_bits"}


def test_a_fan_in_that_would_overflow_is_refused():
    with pytest.raises(UserError, match=r"fan-in 100000 .* needs a 33-bit accumulator, more than the 32"):
        HwConfig(abits=8, wbits=4, max_fan_in=100_000)


@pytest.mark.parametrize("field, value, message", [
    ("rows", 0, "rows must be a positive integer, not 0"),
    ("cols", 2.5, "cols must be a positive integer, not 2.5"),
    ("wbits", 6, "weight bits 6 cannot be represented"),
    ("max_left", -1, "max_left must be a non-negative integer"),
])
def test_bad_values_name_themselves(field, value, message):
    with pytest.raises(UserError, match=message):
        HwConfig(**{field: value})


def test_round_trips_through_a_dict_and_refuses_unknown_keys():
    cfg = HwConfig(rows=2, pipeline=True)
    assert HwConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(UserError, match="unknown hardware config key"):
        HwConfig.from_dict({"rows": 2, "depth": 3})
