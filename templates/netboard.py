"""Write a board build folder for the whole network: the engine behind its UART host link.

``network.v`` (Amaranth: :class:`hw.network.NetworkBoard`, every ROM initialised from the
artifact), ``top.v`` (this package's template: clock, reset synchroniser, UART pins, a busy
LED), ``shiftnn_reset.v``, the board's constraint file, ``synth.ys`` and ``build.sh``;
``design.json`` records the config, the steps and the cycle count of an image.
"""

import hashlib
import pathlib
import shutil

from amaranth.back import verilog

from core.boards import pins, uart_pins
from core.fileio import write_atomic, write_json
from hw.network import NetworkBoard
from hw.uart import clocks_per_bit

from .board import GENERATOR, RESET_CYCLES_LOG2, TOP, write_flow
from .render import TEMPLATE_ROOT, artifact_id, banner, write_rendered

DESIGN = "network_board"
LIBRARY = ("shiftnn_reset.v",)
DEFAULT_BAUD = 115200


def model_id(path):
    """The 32-bit id the board reports: the first bytes of the artifact's sha256."""
    return int.from_bytes(hashlib.sha256(pathlib.Path(path).read_bytes()).digest()[:4], "little")


def pll_parameters(pll):
    """The Verilog parameter list of the PLL primitive (``.NAME(value)``, strings quoted)."""
    return [f".{k}({chr(34) + v + chr(34) if isinstance(v, str) else v})" for k, v in pll.params]


def write_network_board(out_dir, board, program, *, artifact, baud=DEFAULT_BAUD, pll=None):
    """Write the build folder for ``board`` running ``program`` (:class:`hw.program.NetworkProgram`)
    from the artifact file ``artifact``; returns the file names keyed by role and the record.

    With ``pll`` (:class:`core.pll.Pll`) the top clocks the design from the board's PLL at
    ``pll.out_mhz`` (the reset held until it locks), and the UART's bit time and nextpnr's
    target follow that clock; without, the design runs at the oscillator's."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = artifact_id(artifact)
    clock_mhz = pll.out_mhz if pll is not None else board.board_clock_mhz
    cpb = clocks_per_bit(clock_mhz * 1e6, baud)
    dut = NetworkBoard(program, clocks_per_bit=cpb, model_id=model_id(artifact), spram=board.family == "ice40")
    # no source locations: the placement depends on the design, not on where the checkout lies
    text = banner("network.v", GENERATOR, source) + verilog.convert(dut, name=DESIGN, emit_src=False)
    write_atomic(out / "network.v", lambda tmp: pathlib.Path(tmp).write_text(text))
    for name in LIBRARY:
        shutil.copyfile(TEMPLATE_ROOT / "board" / name, out / name)

    p, uart = pins(board), uart_pins(board)
    led = p["leds"][0]
    context = {"board": board.name, "top": TOP, "design": DESIGN, "baud": baud, "clock_mhz": f"{clock_mhz:.4g}",
               "pll": pll, "pll_parameters": pll_parameters(pll) if pll is not None else [],
               "clocks_per_bit": cpb, "clock": p["clock"], "button": p["button"], "rx": uart["rx"],
               "tx": uart["tx"], "led": led, "reset_cycles_log2": RESET_CYCLES_LOG2,
               "reset_buffer": board.reset_buffer,
               "steps": ", ".join("+".join(s.names) for s in program.steps)}
    write_rendered(out / "top.v", "board/network_top.v.j2", context, generator=GENERATOR, source=source)
    flow = write_flow(out, board, sources=[*LIBRARY, "network.v", "top.v"],
                      pins=[p["clock"], p["button"], uart["rx"], uart["tx"], led], clock_port=p["clock"]["port"],
                      source=source, target_mhz=clock_mhz if pll is not None else None)
    cfg = program.cfg
    record = {
        "board": board.name, "design": "network", "config": cfg.to_dict(), "derived": cfg.derived(),
        "artifact": source, "baud": baud, "clocks_per_bit": cpb, "clock_mhz": clock_mhz,
        "pll": None if pll is None else {"primitive": pll.primitive, "in_mhz": pll.in_mhz, "out_mhz": pll.out_mhz,
                                         "params": dict(pll.params)},
        "steps": [{"layers": list(s.names), "src": s.src, "skip": s.skip, "dst": s.dst, "k_tiles": s.plan.kt,
                   "n_blocks": s.plan.nb,
                   "positions": s.plan.visited, "cycles": s.plan.cycles(), "pe_use": round(s.plan.utilisation(), 4)}
                  for s in program.steps],
        "cycles": program.cycles(), "macs": program.macs, "conv_pe_use": program.conv_utilisation(),
        "memory_words": {"wgt": program.wgt_words, "par": program.par_words,
                         **{b.name: b.words for b in program.buffers}},
    }
    write_json(out / "design.json", record)
    return {**flow, "record": record}
