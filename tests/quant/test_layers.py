"""Quantised layers: BatchNorm folding, conversion of float models, refused layers."""

import pytest
import torch
from torch import nn

from core.errors import UserError
from quant.layers import QuantConv2d, QuantReLU, quantize_model
from quant.models import build_model
from quant.recipes import weight_quant_factory


def pow2(**kw):
    return weight_quant_factory("pow2", wbits=kw.get("wbits", 4), terms=kw.get("terms", 1), per_channel=True)


def test_folded_weights_reproduce_conv_bn_in_eval():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    float_model = nn.Sequential(conv, bn, nn.ReLU()).eval()
    q = quantize_model(nn.Sequential(conv, bn, nn.ReLU()), make_weight_quant=pow2(), abits=8)
    layer = q.body[1]
    w, b = layer.folded()
    x = torch.randn(2, 3, 6, 6)
    assert torch.allclose(nn.functional.conv2d(x, w, b, padding=1), float_model[1](float_model[0](x)), atol=1e-5)


def test_quantize_model_structure_and_links():
    q = quantize_model(build_model("cnn", (1, 8, 8)), make_weight_quant=pow2(), abits=4)
    kinds = [type(m).__name__ for m in q.body]
    assert kinds == ["QuantInput", "QuantConv2d", "QuantReLU", "IntMaxPool2d", "QuantConv2d", "QuantReLU",
                     "IntMaxPool2d", "Flatten", "QuantLinear"]
    assert q.body[1].input_quant is q.body[0]
    assert q.body[4].input_quant is q.body[2] and isinstance(q.body[2], QuantReLU)
    assert q.body[8].input_quant is q.body[5]
    assert q.body[4].arith.fan_in == 16 * 9


def test_quantize_model_keeps_float_weights():
    m = build_model("mlp", (1, 8, 8))
    q = quantize_model(m, make_weight_quant=pow2(), abits=4)
    assert torch.equal(q.weighted_layers()[0].weight, m[1].weight)


@pytest.mark.parametrize("layer", [nn.Sigmoid(), nn.Conv2d(2, 2, 3, groups=2), nn.MaxPool2d(2, padding=1),
                                   nn.AvgPool2d(2, padding=1), nn.Dropout2d()])
def test_unsupported_layers_are_refused(layer):
    with pytest.raises(UserError) as e:
        quantize_model(nn.Sequential(layer), make_weight_quant=pow2(), abits=4)
    assert "\n" not in str(e.value)


def test_frozen_bn_training_forward_equals_eval_forward():
    torch.manual_seed(0)
    q = quantize_model(build_model("cnn", (1, 8, 8)), make_weight_quant=pow2(), abits=4)
    x = torch.rand(16, 1, 8, 8)
    q.calibrate(x)
    q.freeze_bn(True)
    q.eval()
    ev = q(x)
    q.train()
    for m in q.body:  # hold the activation exponents still for the comparison
        if isinstance(m, QuantReLU):
            m.momentum = 0.0
    assert torch.equal(q(x), ev)


def test_bn_batch_statistics_while_not_frozen_update_running_stats():
    q = quantize_model(build_model("cnn", (1, 8, 8)), make_weight_quant=pow2(), abits=4)
    layer = next(m for m in q.body if isinstance(m, QuantConv2d))
    before = layer.bn.running_mean.clone()
    q.train()
    q(torch.rand(8, 1, 8, 8))
    assert not torch.equal(before, layer.bn.running_mean)


def test_pool_first_forward_equals_layer_by_layer():
    """QuantNet.forward pools before quantising (monotone quantisers commute with max-pool);
    the codes must equal those of running the layers in their listed order."""
    torch.manual_seed(0)
    q = quantize_model(build_model("cnn", (1, 28, 28)), make_weight_quant=pow2(), abits=3)
    x = torch.rand(8, 1, 28, 28)
    q.calibrate(x)
    q.eval()
    assert torch.equal(q(x), q.body(x))


def test_quantize_model_from_method():
    from quant.config import TrainConfig
    from quant.methods import get_method

    q = quantize_model(build_model("cnn", (1, 8, 8)), method=get_method(TrainConfig(method="uniform", wbits=3, abits=5)))
    assert q.body[0].bits == 5 and q.weighted_layers()[0].weight_quant.wbits == 3
    with pytest.raises(UserError):
        quantize_model(build_model("cnn", (1, 8, 8)), method=get_method(TrainConfig(method="float")))
