"""The three implementations of the integer network agree exactly: fake-quantised PyTorch,
PyTorch integer mode and the numpy reference, over models, methods and bit widths."""

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from core import arith
from core import reference
from quant import torch_int
from quant.layers import quantize_model
from quant.lower import golden_vectors, lower
from quant.models import build_model
from quant.recipes import weight_quant_factory
from quant.verify import compare


def make_qnet(model, shape, method, wbits, abits, terms, seed=0, steps=3):
    """A quantised net with non-trivial BatchNorm statistics and activation exponents."""
    torch.manual_seed(seed)
    net = quantize_model(build_model(model, shape),
                         make_weight_quant=weight_quant_factory(method, wbits=wbits, terms=terms, per_channel=True),
                         abits=abits)
    return excite(net, shape, steps)


def excite(net, shape, steps=3):
    """Random BatchNorm affine parameters, then ``steps`` training batches for its statistics and
    the activation exponents; returns ``net`` in eval mode."""
    net.train()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
        for _ in range(steps):
            net(torch.rand(32, *shape))
    net.eval()
    return net


def check_all_layers(net, shape, n=24, seed=1):
    network, taps = lower(net, shape, 10)
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))
    gold = golden_vectors(net, taps, network, x, np.zeros(n))
    ref = reference.run(network, gold.inputs)
    tint = torch_int.run(network, gold.inputs)
    for layer, g, r, t in zip(network.layers, gold.outputs, ref, tint):
        assert np.array_equal(g, r), f"{layer.name}: PyTorch != reference"
        assert np.array_equal(t, r), f"{layer.name}: torch integer mode != reference"
    return network


@settings(max_examples=12, deadline=None)
@given(model=st.sampled_from(["cnn", "mlp"]), method=st.sampled_from(["pow2", "uniform"]),
       wbits=st.integers(2, 5), abits=st.integers(2, 8), terms=st.integers(1, 3), seed=st.integers(0, 1000))
def test_three_way_agreement_random_configs(model, method, wbits, abits, terms, seed):
    net = make_qnet(model, (1, 8, 8), method, wbits, abits, terms, seed)
    # configurations the hardware refuses (accumulator wider than it builds) are tested elsewhere
    assume(all(l.arith.acc_bits <= arith.MAX_ACC_BITS for l in net.weighted_layers()))
    check_all_layers(net, (1, 8, 8), seed=seed)


def test_wide_accumulators_evaluate_exactly():
    # 5-bit codes put weights up to 2**14 units: with 8-bit inputs partial sums can exceed float32's mantissa,
    # so the layers fall back to float64 and must still match the integer reference
    net = make_qnet("cnn", (1, 8, 8), "pow2", 5, 8, 1)
    network = check_all_layers(net, (1, 8, 8))
    assert any(not arith.float32_exact(l.arith.product_bound) for l in network.layers if l.weighted)


def test_logits_share_one_scale():
    network = check_all_layers(make_qnet("cnn", (1, 8, 8), "pow2", 4, 4, 1), (1, 8, 8))
    last = network.layers[-1]
    assert not last.relu and np.all(last.arrays["requant"] <= 0) and np.any(last.arrays["requant"] == 0)


def test_worst_case_input_does_not_overflow():
    """All inputs at their maximum and every weight at the largest shift with one sign:
    the accumulator reaches the documented bound and stays within its width."""
    net = make_qnet("cnn", (1, 8, 8), "pow2", 4, 4, 2)
    network, _ = lower(net, (1, 8, 8), 10)
    layer = next(l for l in network.layers if l.kind == "conv2d" and l.in_shape[0] > 1)
    levels = arith.shift_levels(layer.wbits)
    a = layer.arrays
    a["weight_sign"][:] = 0
    a["weight_shift"][:] = levels - 1
    a["weight_zero"][:] = 0
    a["bias"][:] = layer.arith.product_bound
    x = np.full((1,) + layer.in_shape, arith.act_max(layer.in_bits))
    layer.padding = (0, 0)
    acc = reference.accumulate(layer, x)
    assert acc.max() == 2 * layer.arith.product_bound
    assert acc.max() <= 2 ** (layer.arith.acc_bits - 1) - 1


def test_compare_counts_zero_on_trained_like_net():
    net = make_qnet("mlp", (1, 8, 8), "pow2", 3, 3, 1)
    network, taps = lower(net, (1, 8, 8), 10)
    x = torch.rand(100, 1, 8, 8)
    y = np.random.default_rng(0).integers(0, 10, 100)
    agree = compare(net, taps, network, x, y)
    assert agree.exact and agree.images == 100
    assert agree.reference_accuracy == agree.torch_accuracy


@pytest.mark.mnist
def test_three_way_agreement_on_mnist_test_split(mnist_dir):
    """Every one of the 2,000 real MNIST test images: identical logits in all three."""
    from quant.data import load_mnist_dir

    ds = load_mnist_dir(mnist_dir)
    net = make_qnet("cnn", (1, 28, 28), "pow2", 4, 4, 1)
    net.calibrate(ds.train_x[:256])
    network, taps = lower(net, ds.image_shape, 10)
    agree = compare(net, taps, network, ds.test_x, ds.test_y.numpy())
    assert agree.images == ds.test_x.shape[0]
    assert (agree.logit_mismatches, agree.torch_int_mismatches, agree.prediction_mismatches) == (0, 0, 0)


def test_declared_widths_hold_the_values():
    """Every layer's outputs fit its declared output width, and the shift field holds every shift."""
    net = make_qnet("cnn", (1, 8, 8), "pow2", 4, 4, 2)
    network = check_all_layers(net, (1, 8, 8))
    outs = reference.run(network, np.random.default_rng(0).integers(0, 16, (64, 1, 8, 8)))
    for layer, out in zip(network.layers, outs):
        if not layer.weighted:
            continue
        bits = layer.output_bits
        if layer.relu:
            assert bits == layer.out_bits and out.min() >= 0 and out.max() < 2**bits
        else:
            assert -(2 ** (bits - 1)) <= out.min() and out.max() < 2 ** (bits - 1)
        assert layer.arrays["weight_shift"].max() < 2**layer.arith.shift_bits
