"""QONNX export: every layer of the graph, run on qonnx's own executor, equals the golden
vectors (times each layer's power-of-two scale), for trained and random networks of every
layer form; the check sees a wrong rounding; the CLI writes and checks the file."""

import numpy as np
import onnx
import pytest

from core import reference
from core.artifact import Artifact, Golden, load_artifact
from hw.random_layers import GRAPHS, random_network
from quant import qonnx_io
from quant.export import main as export_main

from ..templates.test_hls import input_skip, negative_skip_shift, residual, strided


def _random_artifact(graph, seed=0, count=4):
    spec, shape = GRAPHS[graph]
    rng = np.random.default_rng(seed)
    net = random_network(rng, spec, shape)
    x = rng.integers(0, 2**net.input_bits, (count,) + shape)
    return Artifact(net, Golden(x, reference.run(net, x), np.zeros(count, dtype=np.int64)), {})


@pytest.mark.parametrize("make", [lambda: _random_artifact(g) for g in sorted(GRAPHS)]
                         + [lambda m=m: m(np.random.default_rng(3)) for m in (residual, strided, input_skip,
                                                                               negative_skip_shift)],
                         ids=sorted(GRAPHS) + ["residual", "strided", "input-skip", "negative-skip-shift"])
def test_every_layer_on_the_qonnx_executor_equals_the_golden_vectors(make, tmp_path):
    art = make()
    path = tmp_path / "model.onnx"
    qonnx_io.save(path, art.network)
    images, values, bad, first = qonnx_io.check(path, art)
    assert (images, bad, first) == (len(art.golden.inputs), 0, None)
    assert values == sum(out.size for out in art.golden.outputs)
    model = onnx.load(path)
    quants = [n for n in model.graph.node if n.op_type == "Quant"]
    assert {n.domain for n in quants} == {qonnx_io.QONNX_DOMAIN}
    weighted = [layer for layer in art.network.layers if layer.weighted]
    # the input, every weight, every ReLU output and every skip: one Quant each
    assert len(quants) == 1 + len(weighted) + sum(lay.relu for lay in weighted) + sum(lay.has_skip for lay in weighted)


def test_a_wrong_rounding_is_caught(tmp_path):
    """Half-even rounding (QONNX's ROUND) instead of half up differs on ties: the check counts them."""
    art = negative_skip_shift(np.random.default_rng(3))
    path = tmp_path / "model.onnx"
    qonnx_io.save(path, art.network)
    model = onnx.load(path)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "rounding_mode":
                attr.s = b"ROUND"
    onnx.save(model, path)
    _, _, bad, first = qonnx_io.check(path, art)
    assert bad > 0 and first is not None


def test_cli_writes_and_checks_the_qonnx_file(trained_runs, tmp_path, capsys):
    out, model = tmp_path / "artifact.npz", tmp_path / "model.onnx"
    assert export_main([str(trained_runs.pow2), "--out", str(out), "--qonnx", str(model)]) == 0
    err = capsys.readouterr().err
    art = load_artifact(out)
    assert f"wrote {model}: QONNX, checked on qonnx's executor: {len(art.golden.inputs)} golden vectors" in err
    onnx.checker.check_model(onnx.load(model))
    logits = qonnx_io.run(model, art.network, art.golden.inputs[:2])[-1]
    assert np.array_equal(logits, art.golden.outputs[-1][:2])
