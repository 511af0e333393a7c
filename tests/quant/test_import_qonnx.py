"""QONNX import: a power-of-two network that Brevitas itself builds and exports becomes an
artifact with no weight rounded, equal to the QONNX model on qonnx's executor once its
quantisers round half up (as the shift array does), and runs bit-exactly through the
network engine; what has no integer form is one line naming the node."""

import numpy as np
import onnx
import pytest
import torch
from brevitas import nn as qnn  # the dev extra installs Brevitas (and onnxoptimizer, which its export needs)
from brevitas.export import export_qonnx
from brevitas.quant.fixed_point import (Int8WeightPerChannelFixedPoint, Uint8ActPerTensorFixedPoint,
                                        Uint8ActPerTensorFixedPointMaxInit)
from torch import nn

from core.artifact import load_artifact
from core.errors import UserError
from hw.program import NetworkProgram
from quant import qonnx_io
from quant.import_qonnx import main as import_main
from sim.netsim import check


SHAPE = (3, 8, 8)


class BrevitasNet(nn.Module):
    """Fixed-point Brevitas layers: a 4-bit input at scale 2**-4, conv + ReLU + max-pool, a
    residual conv that adds the pooled map, and a linear layer."""

    def __init__(self):
        super().__init__()
        act = dict(act_quant=Uint8ActPerTensorFixedPoint, bit_width=4, return_quant_tensor=False)
        weight = dict(bias=False, weight_quant=Int8WeightPerChannelFixedPoint, weight_narrow_range=False)
        self.inp = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPointMaxInit, max_val=15 / 16, bit_width=4,
                                     return_quant_tensor=False)
        self.conv1 = qnn.QuantConv2d(3, 8, 3, padding=1, **weight)
        self.relu1 = qnn.QuantReLU(**act)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = qnn.QuantConv2d(8, 8, 3, padding=1, **weight)
        self.relu2 = qnn.QuantReLU(**act)
        self.fc = qnn.QuantLinear(8 * 4 * 4, 10, **weight)

    def forward(self, x):
        h = self.pool(self.relu1(self.conv1(self.inp(x))))
        y = self.relu2(self.conv2(h) + h)
        return self.fc(torch.flatten(y, 1))


def power_of_two_weights(net, rng):
    """Every weight ``0`` or ``+-2**k * 2**e0`` (``k`` in 0..6, ``e0`` per output channel), the
    channel's largest ``-64 * 2**e0``: Brevitas' 8-bit fixed point (scale ``max / 128``
    rounded to a power of two) holds -128 but not +128, so a positive top weight would clip."""
    with torch.no_grad():
        for mod in (net.conv1, net.conv2, net.fc):
            w = mod.weight
            k = rng.integers(0, 6, w.shape)
            value = np.where(rng.random(w.shape) < 0.2, 0, rng.choice([-1, 1], w.shape) * 2.0**k)
            value.reshape(w.shape[0], -1)[:, 0] = -64
            e0 = rng.integers(-9, -6, w.shape[0]).reshape((-1,) + (1,) * (w.ndim - 1))
            w.copy_(torch.tensor(value * 2.0**e0, dtype=torch.float32))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    net = BrevitasNet()
    power_of_two_weights(net, np.random.default_rng(0))
    net.train()
    with torch.no_grad():  # the activation scales from statistics, as Brevitas calibrates them
        for _ in range(40):
            net(torch.rand((16,) + SHAPE))
    net.eval()
    path = tmp_path_factory.mktemp("brevitas") / "model.onnx"
    export_qonnx(net, torch.rand((1,) + SHAPE), str(path))
    return path


def test_import_keeps_every_weight_and_equals_the_model_rounding_half_up(exported, tmp_path, capsys):
    out = tmp_path / "artifact.npz"
    assert import_main([str(exported), "--out", str(out), "--golden", "24", "--wbits", "4"]) == 0
    printed = capsys.readouterr().out
    art = load_artifact(out)
    rep = art.meta["import"]
    assert rep["weights_changed"] == 0 and rep["weights"] == 8 * 3 * 9 + 8 * 8 * 9 + 10 * 128
    assert [layer.kind for layer in art.network.layers] == ["conv2d", "maxpool2d", "conv2d", "flatten", "linear"]
    assert art.network.layers[2].skip == 1  # the residual add of the pooled map
    model = onnx.load(exported)
    ours = art.golden.outputs[-1] * 2.0**-art.network.output_exp
    half_up = qonnx_io.run_model(qonnx_io.half_up(model), art.golden.inputs, art.network.input_bits)
    assert np.array_equal(half_up, ours)
    assert art.meta["qonnx_half_up_equal_logits"] == 24
    as_exported = qonnx_io.run_model(model, art.golden.inputs, art.network.input_bits)
    assert np.array_equal(as_exported.argmax(axis=1), ours.argmax(axis=1))  # ties move logits, not these classes
    assert "weights rounded to powers of two: 0 of 2072" in printed
    assert "logits equal on 24 of 24" in printed


def test_the_imported_network_runs_bit_exactly_on_the_network_engine(exported, tmp_path):
    out = tmp_path / "artifact.npz"
    import_main([str(exported), "--out", str(out), "--golden", "12"])
    art = load_artifact(out)
    report = check(NetworkProgram(art.network, rows=8, cols=4), art.golden.inputs, jobs=1, progress=False)
    assert report["logit_differences"] == 0 and report["cycle_counts_as_planned"]
    assert report["images"] == 12


def test_weights_that_are_not_powers_of_two_are_rounded_and_reported(exported, tmp_path):
    model = onnx.load(exported)
    network, rep = qonnx_io.from_model(model, wbits=3)  # 3 shifts: the weights' 7 levels do not fit
    assert rep["weights_changed"] > 0 and 0 < rep["weight_max_error"] < 1
    assert network.layers[0].wbits == 3


def test_what_has_no_integer_form_is_one_line(exported, tmp_path, capsys):
    model = onnx.load(exported)
    quant = next(n for n in model.graph.node if n.op_type == "Quant")
    for a in quant.attribute:
        if a.name == "signed":
            a.i = 1
    bad = tmp_path / "signed.onnx"
    onnx.save(model, bad)
    with pytest.raises(SystemExit) as info:
        import_main([str(bad), "--out", str(tmp_path / "a.npz")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "signed activation quantiser" in err
    with pytest.raises(UserError, match="does not exist"):
        import_main.__wrapped__([str(tmp_path / "missing.onnx")])
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(UserError, match="not a readable ONNX file"):
        import_main.__wrapped__([str(tmp_path / "junk.onnx")])
