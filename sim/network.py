"""``python -m sim.network ARTIFACT``: a whole test split through the cycle-accurate network engine.

The network core (:class:`hw.network.NetworkCore`, the board's design less the UART link)
is converted to Verilog and Verilated with a C++ harness (:mod:`sim.batch`) that loads each
image through the input packer, runs it and reads the logits, with no Python in the
per-cycle loop.  Every image's logits are compared with the integer reference's
(:mod:`quant.reference`), every cycle count with :meth:`hw.program.NetworkProgram.cycles`, and
every step's (the cycles between the core's ``step_done`` pulses) with its
``plan.cycles() + hw.program.STEP_OVERHEAD``.
The report gives hardware accuracy, the images whose prediction or logits differ from the
reference (there must be none), cycles per image and per step, PE use and images per second at a clock
(``--mhz``, or the Fmax of a board build's ``report.json`` given with ``--fpga-report``).
"""

import json
import pathlib
import sys
import time

import numpy as np

from hw.config import HwConfig
from hw.program import STEP_OVERHEAD, NetworkProgram
from quant import reference
from quant.artifact import load_artifact
from quant.config import make_parser
from quant.data import DATASETS, load_dataset
from quant.errors import UserError, cli_main
from quant.fileio import write_json
from quant.quantizers import quantize_input

from .batch import build_batch, run_batch
from .runner import verilog_text


def dataset_codes(network, name, data_dir=None, limit=None):
    """Input codes and labels of a dataset's test split, quantised as the network's input is."""
    ds = load_dataset(name, data_dir)
    if tuple(ds.image_shape) != tuple(network.input_shape):
        raise UserError(f"{name} images are {ds.image_shape}, the model takes {tuple(network.input_shape)}; "
                        "use the dataset it was trained on")
    x, y = ds.test_x, ds.test_y
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return quantize_input(x, network.input_bits).numpy().astype(np.int64), y.numpy().astype(np.int64)


def run(program, inputs, *, jobs=None, progress=True):
    """Logits ``(N, num_classes)``, cycle counts ``(N,)`` and step cycle counts ``(N, steps)`` of
    ``inputs`` ``(N, C, H, W)`` on the Verilated network core (:func:`sim.batch.run_batch`)."""
    from hw.network import NetworkCore

    build = build_batch(verilog_text(NetworkCore(program), name="network_core"), input_bits=program.cfg.abits,
                        num_classes=program.num_classes, logit_bits=program.logit_bits)
    codes = np.stack([program.packer.stream(x) for x in inputs])
    return run_batch(build, codes, cycle_limit=4 * program.cycles() + 1000, steps=len(program.steps), jobs=jobs,
                     progress=progress)


def check(program, inputs, labels=None, *, jobs=None, progress=True, mhz=None):
    """Run ``inputs`` and compare with the reference; returns the report dict.

    ``cycle_counts_as_planned`` is true when every image's cycle count is ``program.cycles()``
    and every step's is its ``plan.cycles() + STEP_OVERHEAD``; ``steps[i]["measured_cycles"]``
    is ``[min, max]`` of step ``i``'s over the images."""
    t0 = time.monotonic()
    logits, cycles, step_cycles = run(program, inputs, jobs=jobs, progress=progress)
    seconds = time.monotonic() - t0
    ref_pred, ref_logits = reference.predict(program.network, inputs)
    planned = np.array([s.plan.cycles() + STEP_OVERHEAD for s in program.steps], dtype=np.int64)
    pred = logits.argmax(axis=1)
    cfg = program.cfg
    report = {
        "images": int(len(inputs)),
        "prediction_differences": int((pred != ref_pred).sum()),
        "logit_differences": int((logits != ref_logits).any(axis=1).sum()),
        "first_differing_images": np.flatnonzero((logits != ref_logits).any(axis=1))[:10].tolist(),
        "cycles_per_image": int(cycles[0]) if len(set(cycles.tolist())) == 1 else cycles.tolist(),
        "planned_cycles": program.cycles(),
        "cycle_counts_as_planned": bool((cycles == program.cycles()).all() and (step_cycles == planned).all()),
        "conv_pe_use": program.conv_utilisation(),
        "steps": [{"layers": list(s.names), "cycles": s.plan.cycles(), "planned_cycles": int(planned[i]),
                   "measured_cycles": [int(step_cycles[:, i].min()), int(step_cycles[:, i].max())] if len(inputs)
                   else None, "pe_use": s.plan.utilisation()} for i, s in enumerate(program.steps)],
        "simulated_cycles": int(cycles.sum()),
        "wall_seconds": round(seconds, 1),
        "config": cfg.to_dict(),
    }
    if labels is not None and (np.asarray(labels) >= 0).all():  # -1: no label (random inputs)
        report["hardware_accuracy"] = float((pred == labels).mean())
        report["reference_accuracy"] = float((ref_pred == labels).mean())
    if mhz:
        report["mhz"] = mhz
        report["images_per_s"] = mhz * 1e6 / program.cycles()
    return report


def print_report(r):
    if "hardware_accuracy" in r:
        print(f"hardware accuracy {r['hardware_accuracy']:.2%} on {r['images']} images "
              f"(integer reference {r['reference_accuracy']:.2%})")
    print(f"predictions that differ from the integer reference: {r['prediction_differences']}; images with any "
          f"logit different: {r['logit_differences']}")
    print(f"cycles per image: {r['cycles_per_image']} (planned {r['planned_cycles']}); PE use over the conv layers: "
          f"{r['conv_pe_use']:.1%}")
    for i, s in enumerate(r["steps"]):
        low, high = s["measured_cycles"] or (None, None)
        mark = "ok" if low == high == s["planned_cycles"] else "DIFFERS"
        print(f"  step {i} {'+'.join(s['layers'])}: measured min {low} max {high}, planned {s['cycles']} + "
              f"{s['planned_cycles'] - s['cycles']} = {s['planned_cycles']} {mark}")
    if "images_per_s" in r:
        print(f"images per second at {r['mhz']:.2f} MHz: {r['images_per_s']:.0f}")
    print(f"simulated {r['simulated_cycles']:,} cycles in {r['wall_seconds']} s")


@cli_main
def main(argv=None):
    parser = make_parser("python -m sim.network", __doc__.splitlines()[0].split(": ", 1)[1],
                         epilog="example: python -m sim.network runs/mnist-w2/artifact.npz --data mnist "
                                "--data-dir ../shared/data/mnist-10k --rows 8 --cols 4")
    parser.add_argument("artifact", help="artifact.npz written by python -m quant.train")
    parser.add_argument("--data", choices=DATASETS, help="run this dataset's test split (default: the artifact's "
                                                         "golden vectors)")
    parser.add_argument("--data-dir", help="the dataset's folder for --data mnist or cifar10")
    parser.add_argument("--limit", type=int, help="only the first N test images")
    parser.add_argument("--rows", type=int, help="array rows (default 8, the iCEBreaker build's; with --fpga-report, "
                                                  "the build's)")
    parser.add_argument("--cols", type=int, help="array columns (default 4, the iCEBreaker build's; with "
                                                  "--fpga-report, the build's)")
    parser.add_argument("--jobs", type=int, help="simulator processes (default: up to 2)")
    parser.add_argument("--mhz", type=float, help="clock for the images-per-second figure")
    parser.add_argument("--fpga-report", help="report.json of a board build: simulate the design it built (its "
                                              "config) at its Fmax")
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args(argv)
    art = load_artifact(args.artifact)
    mhz, built = args.mhz, None
    if args.fpga_report:
        path = pathlib.Path(args.fpga_report)
        if not path.is_file():
            raise UserError(f"no board report {path}; build one with python -m fpga.build or drop --fpga-report")
        try:
            report = json.loads(path.read_text())
        except ValueError:
            raise UserError(f"board report {path} is not JSON; build again with python -m fpga.build") from None
        fmax = report.get("fmax_mhz", {})
        mhz = min(fmax.values()) if fmax else mhz
        built = (report.get("design") or {}).get("config")
    if built is not None:  # the design the board runs, as built
        cfg = HwConfig.from_dict(built)
        if (args.rows or cfg.rows, args.cols or cfg.cols) != (cfg.rows, cfg.cols):
            given = " ".join(f"--{k} {v}" for k, v in (("rows", args.rows), ("cols", args.cols)) if v)
            raise UserError(f"{given} differs from the {cfg.rows}x{cfg.cols} design of {args.fpga_report}; drop it to "
                            "simulate the built design")
        program = NetworkProgram(art.network, cfg)
    else:
        program = NetworkProgram(art.network, rows=args.rows or 8, cols=args.cols or 4)
    if args.data:
        inputs, labels = dataset_codes(art.network, args.data, args.data_dir, args.limit)
    else:
        inputs, labels = art.golden.inputs[: args.limit], art.golden.labels[: args.limit]
    print("\n".join(program.table()))
    report = check(program, inputs, labels, jobs=args.jobs, mhz=mhz)
    print_report(dict(report))
    if args.out:
        write_json(args.out, report)
    ok = report["prediction_differences"] == 0 and report["logit_differences"] == 0 and report["cycle_counts_as_planned"]
    print("ok: the engine matches the integer reference on every image" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())


def simulate_board(artifact, program, testcase, *, samples=3, clocks_per_bit=8, spram=False, client_args=(),
                   expect_lines=()):
    """Run a test of :mod:`sim.cocotb_network` on the board's design (:class:`hw.network.NetworkBoard`)
    for ``program`` on Verilator: ``classify_over_uart`` sends the artifact's first ``samples``
    golden images over the simulated UART; ``host_client_over_pty`` runs ``python -m fpga.run
    --port PTY *client_args`` against it and looks for ``expect_lines`` in its output.  With
    ``spram`` the buffers are SB_SPRAM256KA cells, simulated with yosys's iCE40 models."""
    import os
    import tempfile

    from hw import yosys
    from hw.network import NetworkBoard
    from templates.netboard import model_id

    from . import runner
    from .tb import CASE_ENV

    art = load_artifact(artifact)
    ident = model_id(artifact)
    build = runner.build(
        lambda: NetworkBoard(program, clocks_per_bit=clocks_per_bit, model_id=ident, spram=spram),
        name="network_board", sources=[yosys.ice40_cells_sim()] if spram else (),
        build_args=runner.ICE40_CELLS_ARGS["verilator"] if spram else (),
        config={"design": "network_board", "model": ident, "cfg": program.cfg.to_dict(), "cpb": clocks_per_bit,
                "spram": spram})
    inputs = art.golden.inputs[:samples]
    frame_cycles = (program.n_inputs + 8) * 10 * clocks_per_bit
    case = {
        "config": program.cfg.to_dict(), "clocks_per_bit": clocks_per_bit, "input_bits": art.network.input_bits,
        "input_shape": list(art.network.input_shape),
        "inputs": [program.packer.stream(x).tolist() for x in inputs],
        "logits": reference.run(art.network, inputs)[-1].tolist(),
        "limit": 2 * (program.cycles() + frame_cycles) + 10_000,
        "client_args": [os.fspath(a) for a in client_args], "expect_lines": list(expect_lines),
        "repo": os.fspath(runner.REPO_ROOT),
    }
    with tempfile.TemporaryDirectory(prefix="network-case-") as tmp:
        path = pathlib.Path(tmp) / "case.json"
        path.write_text(json.dumps(case))
        return runner.run(build, "sim.cocotb_network", testcase=testcase, extra_env={CASE_ENV: os.fspath(path)})
