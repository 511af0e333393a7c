"""``python -m fpga.sweep``: build a grid of array sizes and bit widths for a board and
tabulate logic cells, block RAM and Fmax (``sweep.md``, ``sweep.json``, ``sweep.png``).

Every point is a full yosys + nextpnr build of the engine with its self-test on a random
layer (:func:`fpga.build.random_case`); a point that does not fit is kept, with the
figure that failed.
"""

import pathlib
import sys

from quant.config import make_parser
from quant.errors import UserError, cli_main
from quant.fileio import write_atomic, write_json

from .boards import BOARDS
from .build import build


def parse_sizes(text):
    """``"2x2,4x8"`` -> ``[(2, 2), (4, 8)]``."""
    sizes = []
    for item in text.split(","):
        try:
            rows, cols = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise UserError(f"bad array size {item!r}: write ROWSxCOLS, e.g. --sizes 4x4,8x8") from None
        sizes.append((rows, cols))
    return sizes


def parse_ints(text, what):
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"bad {what} list {text!r}: write comma-separated integers") from None


def point_row(rows, cols, abits, wbits, report):
    logic = report["resources"][0]
    bram = next(r for r in report["resources"] if r["resource"].startswith("block RAM"))
    fmax = min(report["fmax_mhz"].values(), default=None)
    return {"rows": rows, "cols": cols, "abits": abits, "wbits": wbits, "pes": rows * cols,
            "logic": logic["used"], "logic_available": logic["available"], "bram": bram["used"],
            "fmax_mhz": fmax, "meets_goal": report["meets_goal"], "fits": not any(
                "used, the device has" in f for f in report["failures"]),
            "failures": report["failures"]}


def plot(points, board, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for key in sorted({(p["abits"], p["wbits"]) for p in points}):
        pts = sorted((p for p in points if (p["abits"], p["wbits"]) == key), key=lambda p: p["pes"])
        label = f"A{key[0]} W{key[1]}"
        a1.plot([p["pes"] for p in pts], [p["logic"] for p in pts], "o-", label=label)
        fm = [p for p in pts if p["fmax_mhz"]]
        a2.plot([p["pes"] for p in fm], [p["fmax_mhz"] for p in fm], "o-", label=label)
    avail = max(p["logic_available"] or 0 for p in points)
    if avail:
        a1.axhline(avail, color="grey", linestyle="--", label="device")
    a2.axhline(BOARDS[board].target_mhz, color="grey", linestyle="--", label="goal")
    a1.set(xlabel="PEs (rows x cols)", ylabel="logic cells", title=f"{board}: logic")
    a2.set(xlabel="PEs (rows x cols)", ylabel="Fmax (MHz)", title=f"{board}: Fmax")
    for a in (a1, a2):
        a.legend()
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@cli_main
def main(argv=None):
    parser = make_parser("python -m fpga.sweep", __doc__.splitlines()[0],
                         epilog="example: python -m fpga.sweep --board icebreaker --sizes 2x2,4x4,8x8 --wbits 3,4")
    parser.add_argument("--board", default="icebreaker", choices=sorted(BOARDS))
    parser.add_argument("--sizes", default="2x2,4x4,8x8", help="array sizes ROWSxCOLS, comma-separated")
    parser.add_argument("--abits", default="4", help="activation bits, comma-separated")
    parser.add_argument("--wbits", default="4", help="weight code bits, comma-separated")
    parser.add_argument("--max-fan-in", type=int, default=144,
                        help="fan-in the accumulators hold (default 144, the demo CNN's deepest)")
    parser.add_argument("--max-left", type=int, default=1,
                        help="largest left shift of a logits requantiser (default 1, as the MNIST CNN needs)")
    parser.add_argument("--out", default=None, help="folder (default build/fpga/sweep-<board>)")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out or f"build/fpga/sweep-{args.board}")
    points = []
    for abits in parse_ints(args.abits, "--abits"):
        for wbits in parse_ints(args.wbits, "--wbits"):
            for rows, cols in parse_sizes(args.sizes):
                # memories as fit_config sizes them for the demo CNN
                given = dict(rows=rows, cols=cols, abits=abits, wbits=wbits, max_fan_in=args.max_fan_in,
                             max_left=args.max_left, act_depth=64, wgt_depth=1024, par_depth=4, psum_depth=256,
                             out_depth=128)
                report = build(args.board, out=out / f"{rows}x{cols}-a{abits}w{wbits}", given=given)
                points.append(point_row(rows, cols, abits, wbits, report))
                p = points[-1]
                print(f"{rows}x{cols} A{abits} W{wbits}: {p['logic']} logic cells, {p['bram']} BRAM, "
                      f"Fmax {p['fmax_mhz']} MHz{'' if p['fits'] else ' (does not fit)'}", flush=True)
    write_json(out / "sweep.json", points)
    lines = [f"# {args.board} sweep", "", "| array | A | W | PEs | logic cells | BRAM | Fmax (MHz) | fits |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for p in points:
        lines.append(f"| {p['rows']}x{p['cols']} | {p['abits']} | {p['wbits']} | {p['pes']} | {p['logic']} | "
                     f"{p['bram']} | {p['fmax_mhz'] if p['fmax_mhz'] else '-'} | {'yes' if p['fits'] else 'no'} |")
    write_atomic(out / "sweep.md", lambda tmp: pathlib.Path(tmp).write_text("\n".join(lines) + "\n"))
    plot(points, args.board, out / "sweep.png")
    print(f"wrote {out / 'sweep.md'}, sweep.json and sweep.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
