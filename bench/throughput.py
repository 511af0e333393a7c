"""Images per second of the W2/A4 MNIST CNN on each board, against the MAC bound.

For every design (board, array): a real build (``fpga.flow.build --clock auto``: once at the
oscillator, once with the PLL just below the placed Fmax), then the cycle-accurate network
engine (``sim.netsim.check`` on Verilator) over the first ``--images`` test images, which
must give 0 logits different from the integer reference and the planned cycle count. The
table sets side by side: cycles per image (measured), PE use on the conv layers and overall
(MACs / (PEs x cycles), which is also the share of the MAC bound PEs x clock / MACs an
image), the placed Fmax, the clock the bitstream runs at, and images per second at the
oscillator (before the PLL) and at the PLL clock.  Builds are cached in ``--out`` by artifact and by the design's source code.

Run: python bench/throughput.py --data-dir ../shared/data/mnist-10k [--run runs/mnist-w2]
"""

import argparse
import hashlib
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from core.artifact import load_artifact  # noqa: E402
from core.boards import BOARDS  # noqa: E402
from core.errors import UserError, cli_main  # noqa: E402
from fpga.flow import build  # noqa: E402
from fpga.report import network_figures  # noqa: E402
from hw.program import NetworkProgram  # noqa: E402
from quant.config import TrainConfig  # noqa: E402
from quant.training import train  # noqa: E402
from sim.netsim import check, dataset_codes  # noqa: E402

#: The designs measured: (board, rows, cols, flags); the board's defaults otherwise.  Before:
#: each board's default array (iCEBreaker 8x4, ULX3S 16x16, one weight row loaded a cycle).
#: After: the iCEBreaker's 16x4 with its rows' skew in block RAM and weight words of four rows
#: (`make bitstream-mnist` builds it), the ULX3S's 32x32 with words of eight rows.
DESIGNS = [("icebreaker", 8, 4, {}), ("icebreaker", 16, 4, {"skew_ram": True, "wgt_lanes": 4}),
           ("ulx3s-85f", 16, 16, {}), ("ulx3s-85f", 32, 32, {"input_reg": True, "wgt_lanes": 8})]


def _design_name(rows, cols, flags):
    return f"{rows}x{cols}" + "".join(f"+{k}" if flags[k] is True else f"+{k}={flags[k]}" for k in sorted(flags))


def ensure_run(run, data_dir):
    """The W2/A4 MNIST CNN of ``make sim-network`` (trained here when ``run`` has no artifact)."""
    run = pathlib.Path(run)
    if (run / "artifact.npz").is_file():
        return run / "artifact.npz"
    common = dict(data="mnist", data_dir=data_dir, model="cnn")
    train(TrainConfig(method="float", epochs=8, out=f"{run}-float", **common).validate(), progress=False)
    train(TrainConfig(method="pow2", wbits=2, abits=4, epochs=8, init_from=f"{run}-float", out=str(run),
                      **common).validate(), progress=False)
    return run / "artifact.npz"


def measure(artifact, board_name, rows, cols, flags, images, data_dir, out):
    board = BOARDS[board_name]
    given = {"rows": rows, "cols": cols, **flags}
    folder = pathlib.Path(out) / f"{board_name}-{_design_name(rows, cols, flags)}"
    report_path = folder / "report.json"
    if report_path.is_file() and (folder / "artifact.sha").is_file() and \
            (folder / "artifact.sha").read_text() == _sha(artifact):
        report = json.loads(report_path.read_text())
    else:
        report = build(board_name, out=folder, artifact_path=str(artifact), given=given)
        (folder / "artifact.sha").write_text(_sha(artifact))
    art = load_artifact(artifact)
    program = NetworkProgram.for_board(art.network, board, given)
    if program.cfg.to_dict() != report["design"]["config"]:
        raise UserError(f"{folder}: the build's config differs from the program's; remove the folder")
    inputs, labels = dataset_codes(art.network, "mnist", data_dir, limit=images)
    sim = check(program, inputs, labels, progress=False)
    if sim["cycles_per_image"] != report["design"]["cycles"] or not sim["cycle_counts_as_planned"]:
        raise UserError(f"{folder}: the simulated cycles differ from the build's plan")
    f = network_figures(report)
    return {
        "board": board_name, "array": _design_name(rows, cols, flags), "fits": report["passed"],
        "logic": report["resources"][0]["used"], "logic_available": report["resources"][0]["available"],
        "images": sim["images"], "logit_differences": sim["logit_differences"], "cycles": f["cycles_per_image"],
        "conv_pe_use": f["conv_pe_use"], "fmax": min(report["fmax_mhz"].values(), default=None),
        "clock_mhz": f["clock_mhz"], "images_per_s": f["images_per_s"],
        # PE use = images/s over the MAC bound (PEs x clock / MACs)
        "pe_use": f["images_per_s"] / f["mac_bound"],
        "images_per_s_oscillator": board.board_clock_mhz * 1e6 / f["cycles_per_image"],
    }


#: The packages whose code makes a design: a cached build is reused only while they and the
#: artifact are unchanged.
DESIGN_SOURCES = ("core", "hw", "templates", "fpga")


def _sha(path):
    digest = hashlib.sha256(pathlib.Path(path).read_bytes())
    root = pathlib.Path(__file__).resolve().parent.parent
    for package in DESIGN_SOURCES:
        for source in sorted((root / package).rglob("*")):
            if source.suffix in (".py", ".j2", ".v") and source.is_file():
                digest.update(source.relative_to(root).as_posix().encode())
                digest.update(source.read_bytes())
    return digest.hexdigest()


def _mhz(v):
    return "-" if v is None else f"{v:.4g}"


def table(rows):
    head = ("| board | array | logic cells | cycles/image | conv PE use | PE use (of the MAC bound) | placed Fmax (MHz) | runs at (MHz) "
            "| images/s at the oscillator | images/s (PLL) | logits different |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        fits = "" if r["fits"] else " (does not fit)"
        lines.append(
            f"| {r['board']} | {r['array']} | {r['logic']:,}/{r['logic_available']:,}{fits} | "
            f"{r['cycles']:,} | {r['conv_pe_use']:.1%} | {r['pe_use']:.1%} | {_mhz(r['fmax'])} | "
            f"{_mhz(r['clock_mhz']) if r['fits'] else '-'} | {r['images_per_s_oscillator']:,.0f} | "
            f"**{r['images_per_s']:,.0f}** | {r['logit_differences']} of {r['images']} |")
    return lines


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the MNIST IDX folder (e.g. ../shared/data/mnist-10k)")
    parser.add_argument("--run", default="runs/mnist-w2", help="the W2/A4 MNIST CNN's run (trained if absent)")
    parser.add_argument("--images", type=int, default=2000, help="test images through the cycle-accurate engine")
    parser.add_argument("--designs", help="board:ROWSxCOLS[+flag...],... where a flag is a true HwConfig option or "
                        "option=N "
                        "(default: " + ",".join(f"{b}:{_design_name(r, c, f)}" for b, r, c, f in DESIGNS) + ")")
    parser.add_argument("--out", default="build/bench/throughput", help="builds and the table")
    args = parser.parse_args(argv)
    designs = DESIGNS
    if args.designs:
        try:
            designs = []
            for b, a in (d.split(":") for d in args.designs.split(",")):
                shape, *flags = a.split("+")
                designs.append((b, *map(int, shape.split("x")),
                                {f.split("=")[0]: int(f.split("=")[1]) if "=" in f else True for f in flags}))
        except ValueError:
            raise UserError(f"--designs {args.designs!r}: write board:ROWSxCOLS[+flag][+option=N], e.g. "
                            "icebreaker:16x4+skew_ram or ulx3s-85f:32x32+wgt_lanes=8") \
                from None
    artifact = ensure_run(args.run, args.data_dir)
    rows = []
    for board, r, c, flags in designs:
        print(f"{board} {_design_name(r, c, flags)}: building and simulating {args.images} images ...", file=sys.stderr,
              flush=True)
        rows.append(measure(artifact, board, r, c, flags, args.images, args.data_dir, args.out))
    lines = table(rows)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.md").write_text("\n".join(lines) + "\n")
    (out / "throughput.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
