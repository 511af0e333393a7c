"""Users' own networks through every stage: a residual CNN with a global average pool on
3-channel images (examples/resnet_tiny.toml) and a stride-2 CNN with no pool
(examples.my_nets:strided), trained from the command line, then the divergence check, every
layer on the layer engine, a batch on the network engine, the HLS C-sim and the ULX3S-85F
bitstream; each compared exactly with the integer reference.  The residual CNN on all 2,000
mnist-10k test images is in ``make test-all``."""

import json
import os
import pathlib
import re
import subprocess

import numpy as np
import pytest

from core.artifact import load_artifact
from fpga.flow import build
from hw.plan import fit_config
from hw.program import NetworkProgram
from hw.random_layers import GRAPHS, random_network
from quant.diverge import main as diverge_main
from quant.train import main as train_main
from sim.layers import check_artifact
from sim.netsim import check, dataset_codes
from sim.network import main as network_main
from templates.hls import generate

from ..conftest import REPO, one_thread

RESNET = REPO / "examples" / "resnet_tiny.toml"


def _train(out, *args):
    with one_thread():
        train_main([*args, "--golden", "8", "--seed", "0", "--out", str(out), "--no-progress"])
    return out / "artifact.npz"


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("resnet"), "--config", str(RESNET), "--epochs", "3")


@pytest.fixture(scope="module")
def strided(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("strided"), "--data", "synthetic", "--model", "examples.my_nets:strided",
                  "--method", "pow2", "--epochs", "2")


def test_the_residual_network_has_the_new_layers(resnet):
    net = load_artifact(resnet).network
    assert net.input_shape[0] == 3
    assert any(layer.has_skip for layer in net.layers if layer.weighted)
    pool = next(layer for layer in net.layers if layer.kind == "avgpool2d")
    assert pool.out_shape[1:] == (1, 1)  # global


@pytest.mark.parametrize("which", ["resnet", "strided"])
def test_pytorch_and_the_reference_agree(which, request, capsys):
    assert diverge_main([str(request.getfixturevalue(which))]) == 0


def test_every_layer_on_the_layer_engine(resnet):
    art = load_artifact(resnet)
    cfg = fit_config(art.network, rows=4, cols=4, psum_depth=16)
    assert cfg.skip
    report = check_artifact(resnet, cfg, samples=2)
    assert len(report) == 2 * sum(layer.weighted for layer in art.network.layers)
    assert all(r["mismatches"] == 0 and r["cycles"] == r["plan_cycles"] for r in report)


@pytest.mark.parametrize("which", ["resnet", "strided"])
def test_a_batch_on_the_network_engine(which, request):
    art = load_artifact(request.getfixturevalue(which))
    program = NetworkProgram(art.network, rows=8, cols=4)
    inputs, labels = dataset_codes(art.network, "synthetic", limit=40)
    report = check(program, inputs, labels, jobs=1, progress=False)
    assert report["images"] == 40
    assert report["logit_differences"] == 0 and report["prediction_differences"] == 0
    assert report["cycle_counts_as_planned"]
    if which == "resnet":  # the shortcut lives in a third buffer while the block runs
        assert len(program.buffers) == 3 and any(s.skip for s in program.steps)


def test_hls_c_sim(resnet, tmp_path):
    result = generate(resnet, tmp_path / "hls")
    run = subprocess.run([str(result.out_dir / "build.sh")], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "CXXFLAGS": "-O1"})
    assert run.returncode == 0, run.stdout + run.stderr
    checked = dict(re.findall(r"checked (\w+): .* (\d+) mismatches", run.stdout))
    assert set(checked) == {layer.name for layer in load_artifact(resnet).network.layers} | {"network"}
    assert set(checked.values()) == {"0"} and "PASS" in run.stdout


def test_ulx3s_bitstream(resnet, tmp_path):
    report = build("ulx3s-85f", out=tmp_path / "ulx3s", artifact_path=resnet, given={"rows": 8, "cols": 4})
    assert report["passed"], report["failures"]
    assert report["dsp_blocks"] == 0 and report["multiplier_cells"] == 0
    assert pathlib.Path(report["bitstream"]).stat().st_size > 0
    # sim.network with the build's report simulates the design it built (ECP5: registered BRAM reads)
    out = tmp_path / "sim.json"
    assert network_main([str(resnet), "--data", "synthetic", "--limit", "4", "--jobs", "1", "--out", str(out),
                         "--fpga-report", str(tmp_path / "ulx3s" / "report.json")]) == 0
    sim = json.loads(out.read_text())
    assert sim["config"] == report["design"]["config"] and sim["config"]["bram_reg"]
    assert sim["cycles_per_image"] == report["design"]["cycles"] and sim["logit_differences"] == 0


@pytest.mark.slow
@pytest.mark.mnist
def test_the_residual_cnn_on_every_mnist_test_image(mnist_dir, tmp_path):
    artifact = _train(tmp_path / "run", "--config", str(RESNET), "--data", "mnist", "--data-dir", str(mnist_dir),
                      "--epochs", "4")
    art = load_artifact(artifact)
    program = NetworkProgram(art.network, rows=8, cols=4)
    inputs, labels = dataset_codes(art.network, "mnist", mnist_dir)
    report = check(program, inputs, labels, progress=False)
    assert report["images"] == 2000
    assert report["logit_differences"] == 0 and report["cycle_counts_as_planned"]
    assert np.isclose(report["hardware_accuracy"], report["reference_accuracy"])


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_random_graphs_on_the_verilated_network_engine(graph):
    """Every graph form (a one-layer residual block read twice at once, a shortcut from the
    input, average pools folded, strided convs, an input wider than the array, an MLP) on the
    Verilator batch harness, against the integer reference."""
    spec, shape = GRAPHS[graph]
    rng = np.random.default_rng(len(graph))
    net = random_network(rng, spec, shape)
    program = NetworkProgram(net, rows=8, cols=4, psum_depth=16)
    inputs = rng.integers(0, 16, (6,) + shape)
    report = check(program, inputs, jobs=1, progress=False)
    assert report["logit_differences"] == 0 and report["cycle_counts_as_planned"]
