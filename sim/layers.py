"""``python -m sim.layers ARTIFACT``: every weighted layer of an artifact on Verilator, against its golden vectors."""

import json
import os
import pathlib
import tempfile

from core.artifact import load_artifact
from core.cli import add_config_arguments, make_parser
from core.errors import UserError, cli_main
from core.hwconfig import HwConfig, given_flags
from hw.design import layer_table, write_design
from hw.plan import design_config

from .simulate import simulate


def check_artifact(path, cfg=None, *, samples=1, rtl_dir=None):
    """Simulate every conv2d/linear layer of the artifact at ``path`` on ``samples`` golden inputs.

    Returns the per-run records (layer, values, mismatches, cycles, plan cycles).
    Raises ``AssertionError`` with the testbench's report on any mismatch.
    """
    path = pathlib.Path(path).resolve()
    art = load_artifact(path)
    cfg = cfg or design_config(art.network)
    count = art.golden.inputs.shape[0]
    if not 1 <= samples <= count:
        raise UserError(f"--samples {samples} is out of range; the artifact has {count} golden vectors")
    if rtl_dir is not None:
        write_design(cfg, rtl_dir, top="engine", artifact=path)
    layers = [layer.name for layer in art.network.layers if layer.weighted]
    with tempfile.TemporaryDirectory(prefix="sim-report-") as tmp:
        report_path = pathlib.Path(tmp) / "report.json"
        case = {"artifact": os.fspath(path), "layers": layers, "samples": list(range(samples)),
                "report": os.fspath(report_path)}
        try:
            simulate(cfg, "engine", "sim.cocotb_engine", "artifact_layers", case)
        finally:
            report = json.loads(report_path.read_text()) if report_path.is_file() else []
            print_report(report)
    return report


def print_report(report):
    if not report:
        return
    head = f"{'run':<26} {'values':>7} {'mismatches':>10} {'cycles':>8} {'plan':>8}"
    print(head)
    print("-" * len(head))
    for r in report:
        print(f"{r['what']:<26} {r['values']:>7} {r['mismatches']:>10} {r['cycles']:>8} {r['plan_cycles']:>8}")


@cli_main
def main(argv=None):
    parser = make_parser("python -m sim.layers", __doc__.splitlines()[0].split(": ", 1)[1],
                         epilog="example: python -m sim.layers runs/demo-pow2/artifact.npz --samples 2")
    parser.add_argument("artifact", help="artifact.npz written by python -m quant.train or quant.export")
    parser.add_argument("--samples", type=int, default=1, help="golden vectors to run per layer (default: 1)")
    parser.add_argument("--rtl", default="build/rtl", help="where the engine's Verilog is written (default: build/rtl)")
    add_config_arguments(parser, HwConfig)
    args = parser.parse_args(argv)
    network = load_artifact(args.artifact).network
    cfg = design_config(network, flags=given_flags(args))
    print("\n".join(layer_table(network, cfg)))
    try:
        report = check_artifact(args.artifact, cfg, samples=args.samples, rtl_dir=args.rtl)
    except AssertionError as exc:
        print(f"FAILED: {exc}")
        raise SystemExit(1) from None
    total = sum(r["values"] for r in report)
    print(f"ok: {len(report)} layer runs, {total} output values, 0 mismatches, every cycle count as planned "
          f"(Verilog: {pathlib.Path(args.rtl) / 'engine.v'})")


if __name__ == "__main__":
    main()
