"""The networks in examples/, trained from the command line on the synthetic colour set: each exports,
its implementations agree, and --resume and --init-from carry on from its run."""

import json
import shutil

import pytest

from core.artifact import load_artifact
from quant import diverge, export, runs
from quant.config import load_toml
from quant.layers import quantize_model
from quant.models import spec_to_module
from quant.recipes import weight_quant_factory
from quant.train import main as train_main

from tests.conftest import REPO, one_thread
from tests.quant.test_cli import exit_code
from tests.core.test_reference import check_all_layers, excite

TOML = REPO / "examples" / "resnet_tiny.toml"
GOLDEN = 4
SYNTHETIC_SHAPE = (3, 16, 16)

#: example -> (its quant.train flags, the layer kinds of its exported network)
EXAMPLES = {
    "resnet_tiny.toml": (["--config", TOML],
                         ["conv2d", "maxpool2d", "conv2d", "maxpool2d", "conv2d", "conv2d", "avgpool2d", "flatten",
                          "linear"]),
    "resnet_avg": (["--data", "synthetic", "--model", "examples.my_nets:resnet_avg", "--method", "pow2"],
                   ["conv2d", "avgpool2d", "conv2d", "conv2d", "conv2d", "avgpool2d", "flatten", "linear"]),
    "strided": (["--data", "synthetic", "--model", "examples.my_nets:strided", "--method", "pow2"],
                ["conv2d", "conv2d", "conv2d", "flatten", "linear", "linear", "linear"]),
}


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def read_json(path):
    return json.loads(path.read_text())


def epochs_logged(run_dir):
    return [json.loads(line)["epoch"] for line in (run_dir / runs.LOG).read_text().splitlines()]


def train(argv):
    train_main([str(a) for a in argv] + ["--no-progress"])


def assert_exact(run_dir, golden=GOLDEN):
    """The run's summary shows no mismatch and ``quant.diverge`` finds golden, reference and torch-int equal."""
    s = read_json(run_dir / runs.SUMMARY)
    assert s["data"] == "synthetic" and s["test_images"] == 500
    assert s["logit_mismatches"] == 0 and s["prediction_mismatches"] == 0
    assert s["reference_accuracy"] == s["quantized_accuracy"]
    art = run_dir / runs.ARTIFACT
    assert load_artifact(art).golden.inputs.shape == (golden, *SYNTHETIC_SHAPE)
    assert exit_code(diverge.main, [art]) == 0
    assert exit_code(diverge.main, [art, "--a", "torch-int", "--b", "reference"]) == 0
    return s


@pytest.fixture(scope="module", params=list(EXAMPLES))
def example_run(request, tmp_path_factory):
    """One epoch of each example (tests copy the folder before changing it): (name, run directory)."""
    d = tmp_path_factory.mktemp(request.param) / "run"
    with one_thread():
        train([*EXAMPLES[request.param][0], "--epochs", "1", "--golden", GOLDEN, "--out", d])
    return request.param, d


def test_example_trains_exports_and_agrees(example_run, tmp_path, capsys):
    name, d = example_run
    assert epochs_logged(d) == [1]
    s = assert_exact(d)
    assert s["method"] == "pow2" and s["wbits"] == 4 and s["abits"] == 4
    art = load_artifact(d / runs.ARTIFACT)
    assert art.network.input_shape == SYNTHETIC_SHAPE and art.network.num_classes == 4
    assert [layer.kind for layer in art.network.layers] == EXAMPLES[name][1]

    out = tmp_path / "exported.npz"
    assert exit_code(export.main, [d, "--out", out, "--golden", 2]) == 0
    assert load_artifact(out).golden.inputs.shape[0] == 2
    capsys.readouterr()
    assert exit_code(diverge.main, [out]) == 0
    assert "golden and reference agree on every layer of 2 input(s)" in capsys.readouterr().out


def test_example_resumes(example_run, tmp_path):
    _, src = example_run
    d = tmp_path / "run"
    shutil.copytree(src, d)
    train(["--resume", d, "--epochs", 2])
    assert epochs_logged(d) == [1, 2]
    assert runs.load_checkpoint(d)["epoch"] == 2
    assert read_json(d / runs.CONFIG)["arch"] == read_json(src / runs.CONFIG)["arch"]
    assert_exact(d)


@pytest.mark.parametrize("example", ["resnet_tiny.toml", "resnet_avg"])
def test_example_quantises_from_a_float_run(example, tmp_path):
    flags = EXAMPLES[example][0]
    train([*flags, "--method", "float", "--epochs", 1, "--out", tmp_path / "float"])
    train([*flags, "--init-from", tmp_path / "float", "--epochs", 1, "--golden", GOLDEN, "--out", tmp_path / "pow2"])
    s = assert_exact(tmp_path / "pow2")
    assert s["float_source"] == str(tmp_path / "float")
    assert read_json(tmp_path / "pow2" / runs.CONFIG)["arch"] == read_json(tmp_path / "float" / runs.CONFIG)["arch"]


@pytest.mark.parametrize("shape,area", [((3, 16, 16), 4), ((1, 28, 28), 16), ((3, 32, 32), 16)],
                         ids=["synthetic", "mnist", "cifar10"])
def test_resnet_tiny_pools_a_power_of_two_area_on_every_size(shape, area):
    arch = load_toml(TOML)["arch"]
    net = quantize_model(spec_to_module(arch, shape),
                         make_weight_quant=weight_quant_factory("pow2", wbits=4, terms=1, per_channel=True), abits=4)
    network = check_all_layers(excite(net, shape), shape)
    gap = next(layer for layer in network.layers if layer.kind == "avgpool2d")
    assert gap.kernel[0] * gap.kernel[1] == area
    assert gap.out_shape == (32, 1, 1)
