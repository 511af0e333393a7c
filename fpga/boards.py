"""The boards ``python -m fpga.build`` targets: device, tools, target clock and pins.

Pins, I/O standards and the board clock come from amaranth-boards' resource definitions
(:func:`pins`), never from tables typed in here.
"""

from dataclasses import dataclass

from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_25F_Platform, ULX3S_85F_Platform


@dataclass(frozen=True)
class Board:
    """One board.

    ``leds`` maps self-test signals (``passed``, ``failed``, ``busy``) to amaranth-boards
    LED resources ``(name, number)``; ``button`` is the reset button resource.
    """

    name: str
    family: str  # "ice40" or "ecp5"
    platform: type
    pnr_device: tuple  # nextpnr's device and package flags
    target_mhz: float
    leds: tuple
    button: tuple
    bitstream_suffix: str

    @property
    def pnr(self):
        return f"nextpnr-{self.family}"

    @property
    def pack(self):
        return {"ice40": "icepack", "ecp5": "ecppack"}[self.family]

    @property
    def constraint_suffix(self):
        return {"ice40": ".pcf", "ecp5": ".lpf"}[self.family]

    @property
    def board_clock_mhz(self):
        return self.platform().default_clk_frequency / 1e6


_ULX3S_LEDS = (("passed", ("led", 0)), ("failed", ("led", 1)), ("busy", ("led", 7)))

BOARDS = {
    "icebreaker": Board(
        name="icebreaker", family="ice40", platform=ICEBreakerPlatform,
        pnr_device=("--up5k", "--package", "sg48"), target_mhz=40.0,
        # led 1 is the green LED beside the button, led 0 the red one
        leds=(("passed", ("led", 1)), ("failed", ("led", 0))), button=("button", 0),
        bitstream_suffix=".bin"),
    "ulx3s-85f": Board(
        name="ulx3s-85f", family="ecp5", platform=ULX3S_85F_Platform,
        pnr_device=("--85k", "--package", "CABGA381", "--speed", "6"), target_mhz=100.0,
        leds=_ULX3S_LEDS, button=("button", 1), bitstream_suffix=".bit"),
    "ulx3s-25f": Board(
        name="ulx3s-25f", family="ecp5", platform=ULX3S_25F_Platform,
        pnr_device=("--25k", "--package", "CABGA381", "--speed", "6"), target_mhz=100.0,
        leds=_ULX3S_LEDS, button=("button", 1), bitstream_suffix=".bit"),
}


def board(name):
    """The :class:`Board` called ``name``; a one-line refusal for an unknown one."""
    from quant.errors import UserError

    if name not in BOARDS:
        raise UserError(f"unknown board {name!r}; choose one of {', '.join(BOARDS)}")
    return BOARDS[name]


def pins(b):
    """``{"clock": pin, "button": pin, "leds": [pin, ...]}`` for board ``b``, each pin a dict
    with ``port`` (the top-level port name), ``pin``, ``invert`` and ``attrs`` (I/O
    standard etc.), read from the board's amaranth-boards resources."""
    platform = b.platform()

    def one(port, resource):
        r = platform.lookup(*resource)
        io = r.ios[0]
        if len(io.names) != 1:
            raise ValueError(f"{b.name}: resource {resource} has {len(io.names)} pins, expected one")
        attrs = tuple((k, str(v)) for k, v in dict(r.attrs).items() if k not in ("GLOBAL",))
        return {"port": port, "pin": io.names[0], "invert": bool(io.invert), "attrs": attrs}

    return {
        "clock": one("clk_in", (platform.default_clk, 0)),
        "button": one("btn_rst", b.button),
        "leds": [dict(one(f"led_{signal}", resource), signal=signal) for signal, resource in b.leds],
    }
