"""Users' own networks: residual adds, average and global pools, strided convolutions, several
linear layers and dropout, quantised and lowered so that the fake-quantised PyTorch forward,
the torch integer mode and the numpy reference agree exactly."""

import numpy as np
import pytest
import torch
from torch import nn

from core.errors import UserError
from quant.layers import quantize_model
from quant.models import module_to_spec, spec_to_module
from quant.modules import Residual
from quant.recipes import weight_quant_factory

from tests.core.test_reference import check_all_layers, excite

RESNET = [
    {"type": "conv", "out": 8, "kernel": 3, "padding": 1, "bias": False}, {"type": "bn"}, {"type": "relu"},
    {"type": "residual", "layers": [
        {"type": "conv", "out": 8, "kernel": 3, "padding": 1, "bias": False}, {"type": "bn"}, {"type": "relu"},
        {"type": "conv", "out": 8, "kernel": 3, "padding": 1, "bias": False}, {"type": "bn"}]},
    {"type": "relu"}, {"type": "gap"}, {"type": "flatten"}, {"type": "dropout", "p": 0.2}, {"type": "linear"},
]
STRIDED = [
    {"type": "conv", "out": 8, "kernel": 3, "stride": 2, "bias": False}, {"type": "bn"}, {"type": "relu"},
    {"type": "conv", "out": 8, "kernel": 2, "stride": 2}, {"type": "relu"},
    {"type": "flatten"}, {"type": "linear", "out": 16}, {"type": "relu"}, {"type": "linear"},
]
AVGPOOL = [
    {"type": "conv", "out": 6, "kernel": 3, "padding": 1}, {"type": "relu"}, {"type": "avgpool", "kernel": 2},
    {"type": "conv", "out": 6, "kernel": 3}, {"type": "relu"}, {"type": "flatten"}, {"type": "linear"},
]


def qnet(spec, shape, wbits=4, abits=4, seed=0, steps=3):
    torch.manual_seed(seed)
    net = quantize_model(spec_to_module(spec, shape),
                         make_weight_quant=weight_quant_factory("pow2", wbits=wbits, terms=1, per_channel=True),
                         abits=abits)
    return excite(net, shape, steps)


@pytest.mark.parametrize("wbits,abits", [(2, 4), (4, 4), (3, 6)])
def test_residual_gap_on_colour_images_is_exact(wbits, abits):
    net = qnet(RESNET, (3, 8, 8), wbits, abits)
    network = check_all_layers(net, (3, 8, 8))
    kinds = [layer.kind for layer in network.layers]
    assert kinds == ["conv2d", "conv2d", "conv2d", "avgpool2d", "flatten", "linear"]
    skip = network.layers[2]
    assert skip.skip == 0 and skip.skip_bits == abits
    assert network.layers[3].kernel == (8, 8) and network.layers[3].out_bits == abits + 6
    assert network.layers[5].in_bits == abits + 6


def test_skip_shifts_of_both_signs_are_exact():
    # a skip exponent far finer or coarser than the block's input puts the skip below or
    # above the accumulator unit: a right shift (rounded) or a left shift
    seen = set()
    for delta in (-3, 0, 6, 9):
        net = qnet(RESNET, (3, 8, 8), 4, 4)
        net.body[2].exp.add_(delta)  # the quantiser whose codes the residual adds
        network = check_all_layers(net, (3, 8, 8))
        seen |= set(np.sign(network.layers[2].arrays["skip_shift"]).tolist())
    assert {-1, 1} <= seen


def test_residual_at_the_network_input():
    spec = [{"type": "residual", "layers": [{"type": "conv", "out": 3, "kernel": 3, "padding": 1}]},
            {"type": "relu"}, {"type": "flatten"}, {"type": "linear"}]
    network = check_all_layers(qnet(spec, (3, 4, 4)), (3, 4, 4))
    assert network.layers[0].skip == -1


def test_strided_convs_and_two_linears_are_exact():
    network = check_all_layers(qnet(STRIDED, (3, 9, 9)), (3, 9, 9))
    assert [tuple(layer.stride) for layer in network.layers[:2]] == [(2, 2), (2, 2)]
    assert [layer.kind for layer in network.layers[-2:]] == ["linear", "linear"]


def test_average_pool_before_a_conv_is_exact():
    network = check_all_layers(qnet(AVGPOOL, (3, 8, 8)), (3, 8, 8))
    pool = network.layers[1]
    assert pool.kind == "avgpool2d" and pool.out_exp == pool.in_exp + 2


def test_spec_round_trip_and_dropout_dropped():
    model = spec_to_module(RESNET, (3, 8, 8))
    assert spec_to_module(module_to_spec(model), (3, 8, 8)).state_dict().keys() == model.state_dict().keys()
    net = quantize_model(model, make_weight_quant=weight_quant_factory("pow2", wbits=4, terms=1, per_channel=True), abits=4)
    assert not any(isinstance(m, nn.Dropout) for m in net.modules())


@pytest.mark.parametrize("model,needle", [
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AvgPool2d(3), nn.Flatten(), nn.Linear(4, 10)),
     "layer 2 (average pool 3x3)"),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AvgPool2d(2, padding=1), nn.Flatten(), nn.Linear(36, 10)),
     "layer 2 (AvgPool2d"),
    (nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1))),
                   nn.Flatten(), nn.Linear(48, 10)), "a ReLU must follow a Residual"),
    (nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(),
                   Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())), nn.ReLU(),
                   nn.Flatten(), nn.Linear(48, 10)), "layer 2 (Residual): a residual block must end in"),
    (nn.Sequential(nn.Conv2d(3, 3, 3, dilation=2), nn.Flatten(), nn.Linear(3, 10)), "layer 0 (Conv2d"),
])
def test_inexact_forms_are_refused_naming_the_users_layer(model, needle):
    with pytest.raises(UserError, match=None) as err:
        net = quantize_model(model, make_weight_quant=weight_quant_factory("pow2", wbits=4, terms=1, per_channel=True), abits=4)
        net.eval()(torch.rand(2, 3, 4, 4))
    assert needle in str(err.value)


def test_global_pool_lowers_straight_from_a_checkpoint():
    # a network rebuilt from its state dict has had no forward pass, so its global pool has
    # not measured its area yet: lowering (quant.export) must take it from the map's shape
    shape = (3, 8, 8)
    trained = qnet(RESNET, shape)
    make = weight_quant_factory("pow2", wbits=4, terms=1, per_channel=True)
    fresh = quantize_model(spec_to_module(RESNET, shape), make_weight_quant=make, abits=4)
    fresh.load_state_dict(trained.state_dict())
    network = check_all_layers(fresh.eval(), shape)
    assert network.layers[3].kernel == (8, 8) and network.layers[5].in_bits == 4 + 6
