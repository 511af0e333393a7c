"""The network engine simulated: a test split through the Verilated network core
(:func:`check`: logits against the integer reference, cycles against the program), and the
board's design with its UART link under cocotb (:func:`simulate_board`).
``python -m sim.network`` is the command over it."""

import json
import pathlib
import time

import numpy as np

from core import reference
from core.artifact import load_artifact
from core.errors import UserError
from hw.program import STEP_OVERHEAD
from quant.data import load_dataset
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
