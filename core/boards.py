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
    #: the loader's two pins (clock, data): a connector ``(name, number)`` and its pin names
    loader: tuple = ()
    #: HwConfig values this board's builds use unless a flag says otherwise
    defaults: tuple = ()
    #: the device's resources as the build report names them, logic first: ``(name, count)``
    capacity: tuple = ()
    #: nextpnr options of this board's builds, beside the device and the clock
    pnr_options: tuple = ()
    #: the global buffer primitive the network design's reset takes ("" for none: nextpnr-ice40
    #: promotes a reset of high fanout to a global by itself, nextpnr-ecp5 only clocks)
    reset_buffer: str = ""

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


# ECP5 block RAM is slow to read (about 5 ns to its output): register its data before use
_ECP5_DEFAULTS = (("bram_reg", True),)
# nextpnr-ecp5's router2: the ULX3S-85F 32x32 network design (127,676 arcs) with its PLL at
# 100 MHz routed in 52 s, where router1 had left 117,000 arcs after 73 min (issue 17)
_ECP5_PNR = ("--router", "router2")
# its reset, from one flip-flop to the control registers all over the die, was next (9.3 ns)
_ECP5_RESET = "DCCA"
_ULX3S_LEDS = (("passed", ("led", 0)), ("failed", ("led", 1)), ("busy", ("led", 7)))

BOARDS = {
    "icebreaker": Board(
        name="icebreaker", family="ice40", platform=ICEBreakerPlatform,
        pnr_device=("--up5k", "--package", "sg48"), target_mhz=40.0,
        # led 1 is the green LED beside the button, led 0 the red one
        leds=(("passed", ("led", 1)), ("failed", ("led", 0))), button=("button", 0),
        bitstream_suffix=".bin", loader=(("pmod", 0), "1", "2"),
        # an 8x8 engine needs about 7,100 logic cells, 134 % of the UP5K (docs/fpga.md)
        defaults=(("cols", 4),),
        capacity=(("logic cells", 5280), ("block RAM (4 kbit)", 30), ("SPRAM (256 kbit)", 4))),
    "ulx3s-85f": Board(
        name="ulx3s-85f", family="ecp5", platform=ULX3S_85F_Platform,
        pnr_device=("--85k", "--package", "CABGA381", "--speed", "6"), target_mhz=100.0,
        leds=_ULX3S_LEDS, button=("button", 1), bitstream_suffix=".bit", defaults=_ECP5_DEFAULTS,
        pnr_options=_ECP5_PNR, reset_buffer=_ECP5_RESET, loader=(("gpio", 0), "0+", "0-"),
        # distributed RAM: TRELLIS_RAMW cells (16 x 4 bits), one per 8 LUT4s (nextpnr's count)
        capacity=(("logic cells (LUT4s + carry)", 83640), ("block RAM (DP16KD)", 208), ("distributed RAM", 10455))),
    "ulx3s-25f": Board(
        name="ulx3s-25f", family="ecp5", platform=ULX3S_25F_Platform,
        pnr_device=("--25k", "--package", "CABGA381", "--speed", "6"), target_mhz=100.0,
        leds=_ULX3S_LEDS, button=("button", 1), bitstream_suffix=".bit", defaults=_ECP5_DEFAULTS,
        pnr_options=_ECP5_PNR, reset_buffer=_ECP5_RESET, loader=(("gpio", 0), "0+", "0-"),
        capacity=(("logic cells (LUT4s + carry)", 24288), ("block RAM (DP16KD)", 56), ("distributed RAM", 3036))),
}


def board(name):
    """The :class:`Board` called ``name``; a one-line refusal for an unknown one."""
    from core.errors import UserError

    if name not in BOARDS:
        raise UserError(f"unknown board {name!r}; choose one of {', '.join(BOARDS)}")
    return BOARDS[name]


def pins(b):
    """``{"clock": pin, "button": pin, "leds": [pin, ...], "load_clock": pin, "load_data": pin}``
    for board ``b``, each pin a dict with ``port`` (the top-level port name), ``pin``,
    ``invert``, ``attrs`` (I/O standard etc.) and ``pullup``, read from the board's
    amaranth-boards resources and connectors."""
    platform = b.platform()

    def one(port, resource):
        r = platform.lookup(*resource)
        io = r.ios[0]
        if len(io.names) != 1:
            raise ValueError(f"{b.name}: resource {resource} has {len(io.names)} pins, expected one")
        attrs = tuple((k, str(v)) for k, v in dict(r.attrs).items() if k not in ("GLOBAL",))
        return {"port": port, "pin": io.names[0], "invert": bool(io.invert), "attrs": attrs, "pullup": False}

    def connector_pin(port, index):
        (name, number), *names = b.loader
        pin = platform.connectors[name, number].mapping[names[index]]
        attrs = (("IO_TYPE", "LVCMOS33"), ("PULLMODE", "UP")) if b.family == "ecp5" else ()
        return {"port": port, "pin": pin, "invert": False, "attrs": attrs, "pullup": True}

    return {
        "load_clock": connector_pin("load_sclk", 0),
        "load_data": connector_pin("load_sdi", 1),
        "clock": one("clk_in", (platform.default_clk, 0)),
        "button": one("btn_rst", b.button),
        "leds": [dict(one(f"led_{signal}", resource), signal=signal) for signal, resource in b.leds],
    }


def uart_pins(b):
    """``{"rx": pin, "tx": pin}`` of board ``b``'s UART (the FTDI link's), like :func:`pins`."""
    platform = b.platform()
    r = platform.lookup("uart", 0)
    found = {}
    for sub in r.ios:
        if sub.name not in ("rx", "tx"):
            continue
        attrs = tuple((k, str(v)) for k, v in dict(r.attrs).items() if k not in ("PULLUP", "GLOBAL"))
        found[sub.name] = {"port": f"uart_{sub.name}", "pin": sub.ios[0].names[0], "invert": bool(sub.ios[0].invert),
                           "attrs": attrs + ((("PULLMODE", "UP"),) if b.family == "ecp5" and sub.name == "rx" else ()),
                           "pullup": sub.name == "rx" and b.family == "ice40"}
    return found
