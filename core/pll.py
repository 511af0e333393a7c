"""PLL settings: the fastest clock at or below a wanted frequency that a board's PLL makes
from its oscillator, and the primitive's parameters for it.

The ranges are the vendors' (Lattice TN1251, "iCE40 sysCLOCK PLL Design and Usage Guide";
Lattice TN1263, "ECP5 and ECP5-5G sysCLOCK PLL/DLL Design and Usage Guide"):

- iCE40 ``SB_PLL40_PAD``, simple feedback: ``f_pfd = f_in / (DIVR + 1)`` in [10, 133] MHz,
  ``f_vco = f_pfd * (DIVF + 1)`` in [533, 1066] MHz, ``f_out = f_vco / 2**DIVQ`` in
  [16, 275] MHz; DIVR 0..15, DIVF 0..127, DIVQ 1..6; the loop filter range follows ``f_pfd``.
- ECP5 ``EHXPLLL``, feedback from CLKOP: ``f_out = f_in * CLKFB_DIV / CLKI_DIV``, with
  ``f_in / CLKI_DIV`` in [3.125, 400] MHz, ``f_vco = f_out * CLKOP_DIV`` in [400, 800] MHz,
  ``f_out`` in [3.125, 400] MHz; CLKI_DIV 1..128, CLKFB_DIV 1..80, CLKOP_DIV 1..128.
"""

from dataclasses import dataclass

from .errors import UserError

#: iCE40 loop filter range by the phase detector's frequency: (upper bound in MHz, FILTER_RANGE)
_ICE40_FILTER = ((17.0, 1), (26.0, 2), (44.0, 3), (66.0, 4), (101.0, 5), (133.0, 6))


@dataclass(frozen=True)
class Pll:
    """A PLL setting: the primitive (``SB_PLL40_PAD`` or ``EHXPLLL``), its output and parameters."""

    primitive: str
    in_mhz: float
    out_mhz: float
    #: the primitive's parameters, ``(name, value)``; a str value is a Verilog string
    params: tuple

    def describe(self):
        return f"{self.primitive} {self.out_mhz:.4g} MHz from the {self.in_mhz:g} MHz oscillator"


def _ice40(in_mhz, want_mhz):
    best = None
    for divr in range(16):
        pfd = in_mhz / (divr + 1)
        if not 10.0 <= pfd <= 133.0:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533.0 <= vco <= 1066.0:
                continue
            for divq in range(1, 7):
                out = vco / 2**divq
                if 16.0 <= out <= 275.0 and out <= want_mhz + 1e-9 and (best is None or out > best[0] + 1e-9):
                    best = (out, divr, divf, divq, pfd)
    if best is None:
        return None
    out, divr, divf, divq, pfd = best
    filt = next(r for top, r in _ICE40_FILTER if pfd <= top)
    return Pll("SB_PLL40_PAD", in_mhz, out, (("FEEDBACK_PATH", "SIMPLE"), ("DIVR", divr), ("DIVF", divf),
                                              ("DIVQ", divq), ("FILTER_RANGE", filt)))


def _ecp5(in_mhz, want_mhz):
    best = None
    for clki in range(1, 129):
        pfd = in_mhz / clki
        if not 3.125 <= pfd <= 400.0:
            continue
        for clkfb in range(1, 81):
            out = pfd * clkfb
            if not 3.125 <= out <= 400.0 or out > want_mhz + 1e-9:
                continue
            clkop = next((d for d in range(1, 129) if 400.0 <= out * d <= 800.0), None)
            if clkop is not None and (best is None or out > best[0] + 1e-9):
                best = (out, clki, clkfb, clkop)
    if best is None:
        return None
    out, clki, clkfb, clkop = best
    return Pll("EHXPLLL", in_mhz, out, (("CLKI_DIV", clki), ("CLKFB_DIV", clkfb), ("CLKOP_DIV", clkop),
                                         ("CLKOP_CPHASE", clkop - 1), ("CLKOP_FPHASE", 0),
                                         ("FEEDBK_PATH", "CLKOP"), ("CLKOP_ENABLE", "ENABLED"),
                                         ("OUTDIVIDER_MUXA", "DIVA"), ("PLLRST_ENA", "DISABLED"),
                                         ("INTFB_WAKE", "DISABLED"), ("STDBY_ENABLE", "DISABLED"),
                                         ("DPHASE_SOURCE", "DISABLED")))


def pll_for(family, in_mhz, want_mhz):
    """The fastest :class:`Pll` of ``family`` (``ice40``, ``ecp5``) at or below ``want_mhz``
    from an ``in_mhz`` oscillator; one line refusing a frequency the PLL cannot make."""
    pll = {"ice40": _ice40, "ecp5": _ecp5}[family](in_mhz, want_mhz)
    if pll is None:
        raise UserError(f"the {family} PLL makes no clock at or below {want_mhz:g} MHz from the {in_mhz:g} MHz "
                        "oscillator; ask for a faster clock, or run at the oscillator's (--clock board)")
    return pll
