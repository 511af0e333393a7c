"""The whole network on the cycle-accurate engine: the batch run against the integer
reference, the board's design over its simulated UART, and the host client talking to it
through a pseudo-terminal."""

import json

import numpy as np
import pytest

from core.artifact import load_artifact
from core.hwconfig import HwConfig
from hw.program import STEP_OVERHEAD, NetworkProgram
from quant.data import load_dataset
from quant.train import main as train_main
from sim import netsim, network


@pytest.fixture(scope="module")
def program(trained_runs):
    return NetworkProgram(load_artifact(trained_runs.artifact).network, rows=8, cols=4)


def test_batch_matches_the_reference_on_the_digits_test_split(trained_runs, program):
    art = load_artifact(trained_runs.artifact)
    inputs, labels = netsim.dataset_codes(art.network, "digits")
    report = netsim.check(program, inputs, labels, progress=False, mhz=12.0)
    assert report["images"] == 360
    assert report["prediction_differences"] == 0 and report["logit_differences"] == 0
    assert report["cycle_counts_as_planned"] and report["cycles_per_image"] == program.cycles()
    planned = [s.plan.cycles() + STEP_OVERHEAD for s in program.steps]
    assert [s["planned_cycles"] for s in report["steps"]] == planned
    assert [s["measured_cycles"] for s in report["steps"]] == [[c, c] for c in planned]
    assert report["hardware_accuracy"] == report["reference_accuracy"] > 0.5
    assert report["images_per_s"] == 12e6 / program.cycles()


def test_board_design_over_the_uart_with_spram_cells(trained_runs, program):
    """INFO, golden images, a garbled frame and a short one, with the buffers as the UP5K's
    SPRAM cells (yosys's simulation models)."""
    netsim.simulate_board(trained_runs.artifact, program, "classify_over_uart", samples=3, spram=True)


def test_host_client_against_the_simulated_board(trained_runs, program, tmp_path):
    images = tmp_path / "digits.npy"
    np.save(images, load_dataset("digits").test_x[:3].numpy())
    netsim.simulate_board(trained_runs.artifact, program, "host_client_over_pty", spram=True,
                           client_args=["--artifact", trained_runs.artifact, images],
                           expect_lines=["3 of 3 equal the integer reference"])


def test_batch_cli_refuses_a_missing_fpga_report(trained_runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        network.main([str(trained_runs.artifact), "--fpga-report", str(tmp_path / "nope.json")])
    assert exc.value.code == 2
    assert "no board report" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.mnist
def test_the_mnist_test_split_on_the_engine(mnist_dir, tmp_path_factory):
    """All 2,000 mnist-10k test images through the iCEBreaker's 8x4 engine: every logit equals
    the integer reference's (``make sim-network`` runs the same on the Makefile's model)."""
    base = tmp_path_factory.mktemp("mnist-w2")
    train_main(["--data", "mnist", "--data-dir", str(mnist_dir), "--model", "cnn", "--method", "float", "--epochs",
                "2", "--out", str(base / "float"), "--no-progress"])
    train_main(["--data", "mnist", "--data-dir", str(mnist_dir), "--method", "pow2", "--wbits", "2", "--abits", "4",
                "--epochs", "2", "--init-from", str(base / "float"), "--out", str(base / "w2"), "--no-progress"])
    art = load_artifact(base / "w2" / "artifact.npz")
    program = NetworkProgram(art.network, rows=8, cols=4)
    inputs, labels = netsim.dataset_codes(art.network, "mnist", mnist_dir)
    report = netsim.check(program, inputs, labels, progress=False)
    assert report["images"] == 2000
    assert report["prediction_differences"] == 0 and report["logit_differences"] == 0
    assert report["cycle_counts_as_planned"]


def test_batch_cli_runs_the_flags_design(trained_runs, tmp_path):
    """``--input-reg`` and ``--wgt-lanes`` reach the simulated design (as ``make sim-network``
    gives them for the ULX3S): the golden images equal the reference, one cycle more a block."""
    out = tmp_path / "report.json"
    assert network.main([str(trained_runs.artifact), "--board", "ulx3s-85f", "--rows", "8", "--cols", "4",
                         "--input-reg", "true", "--wgt-lanes", "2", "--limit", "3", "--jobs", "1",
                         "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["config"]["input_reg"] and report["config"]["wgt_lanes"] == 2
    assert report["logit_differences"] == 0 and report["cycle_counts_as_planned"]
    cfg = HwConfig.from_dict(report["config"])
    without = NetworkProgram(load_artifact(trained_runs.artifact).network,
                             HwConfig.from_dict({**report["config"], "input_reg": False}))
    blocks = sum(len(s.plan.m_tiles) * s.plan.nb for s in without.steps)
    assert report["cycles_per_image"] == NetworkProgram(without.network, cfg).cycles() == without.cycles() + blocks
