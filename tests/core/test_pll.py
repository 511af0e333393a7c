"""PLL settings: every one stays inside the vendor's ranges, makes the frequency it claims,
and is the fastest at or below the one asked for."""

import pytest

from core.errors import UserError
from core.pll import pll_for


def ice40_out(p):
    return p.in_mhz / (p["DIVR"] + 1) * (p["DIVF"] + 1) / 2 ** p["DIVQ"]


def ecp5_out(p):
    return p.in_mhz * p["CLKFB_DIV"] / p["CLKI_DIV"]


class Params(dict):
    def __init__(self, pll):
        super().__init__(pll.params)
        self.in_mhz = pll.in_mhz


@pytest.mark.parametrize("want", [16.9, 20, 24.75, 27.45, 30, 33, 40, 48, 66.6, 100, 200, 275])
def test_ice40_settings_are_in_range_and_exact(want):
    pll = pll_for("ice40", 12.0, want)
    p = Params(pll)
    pfd = 12.0 / (p["DIVR"] + 1)
    assert 10 <= pfd <= 133 and 533 <= pfd * (p["DIVF"] + 1) <= 1066 and 1 <= p["DIVQ"] <= 6
    assert 0 <= p["DIVR"] <= 15 and 0 <= p["DIVF"] <= 127 and p["FEEDBACK_PATH"] == "SIMPLE"
    assert ice40_out(p) == pytest.approx(pll.out_mhz, abs=1e-9) and 16 <= pll.out_mhz <= want
    # nothing the PLL makes lies between its choice and the frequency asked for
    finer = [12.0 * (f + 1) / 2**q for f in range(128) for q in range(1, 7)
             if 533 <= 12.0 * (f + 1) <= 1066 and 16 <= 12.0 * (f + 1) / 2**q <= 275]
    assert max(f for f in finer if f <= want) == pytest.approx(pll.out_mhz)


@pytest.mark.parametrize("want", [30, 50, 78.86, 100, 133.3, 150, 200])
def test_ecp5_settings_are_in_range_and_exact(want):
    pll = pll_for("ecp5", 25.0, want)
    p = Params(pll)
    assert 3.125 <= 25.0 / p["CLKI_DIV"] <= 400 and 400 <= pll.out_mhz * p["CLKOP_DIV"] <= 800
    assert p["CLKOP_CPHASE"] == p["CLKOP_DIV"] - 1 and p["FEEDBK_PATH"] == "CLKOP"
    assert ecp5_out(p) == pytest.approx(pll.out_mhz, abs=1e-9) and pll.out_mhz <= want
    made = [25.0 * fb / ki for ki in range(1, 9) for fb in range(1, 81)  # 25 / ki >= 3.125 MHz
            if 3.125 <= 25.0 * fb / ki <= 400 and any(400 <= 25.0 * fb / ki * d <= 800 for d in range(1, 129))]
    assert max(f for f in made if f <= want) == pytest.approx(pll.out_mhz)


def test_the_filter_range_follows_the_phase_detector():
    # from 12 MHz the detector runs at 12 MHz: the lowest filter range
    assert Params(pll_for("ice40", 12.0, 30))["FILTER_RANGE"] == 1
    # from 100 MHz with DIVR 0 it runs at 100 MHz: range 5 (66..101 MHz)
    p = Params(pll_for("ice40", 100.0, 200))
    assert 100.0 / (p["DIVR"] + 1) > 66 or p["FILTER_RANGE"] < 5


def test_a_clock_below_the_pll_range_is_refused_in_one_line():
    with pytest.raises(UserError, match="no clock at or below 12 MHz") as e:
        pll_for("ice40", 12.0, 12)
    assert "\n" not in str(e.value) and "--clock board" in str(e.value)
