"""The layer planner: fit checks with one-line refusals, memory images, and the cycle count
that Amaranth's simulator measures (the Verilator runs check it again in test_engine)."""

import numpy as np
import pytest

from core import reference
from core.artifact import Network, load_artifact
from core.errors import UserError
from core.hwconfig import HwConfig
from hw.plan import LayerPlan, fit_config
from hw.random_layers import random_inputs, random_layer
from sim.amaranth_sim import run_engine

SMALL = HwConfig(rows=3, cols=2, abits=4, wbits=3, terms=2, max_fan_in=200, psum_depth=7, act_depth=256,
                 wgt_depth=512, out_depth=256)


@pytest.mark.parametrize("pipeline", [False, True])
@pytest.mark.parametrize("seed, spec", [
    (1, {"kind": "conv2d", "in_c": 4, "out_c": 3, "hw": (5, 4), "stride": (2, 1)}),
    (2, {"kind": "conv2d", "in_c": 2, "out_c": 5, "hw": (3, 6), "padding": (0, 1), "kernel": (1, 3)}),
    (3, {"kind": "linear", "in_c": 7, "out_c": 5, "relu": False}),
])
def test_amaranth_simulation_matches_reference_and_cycle_formula(seed, spec, pipeline):
    cfg = HwConfig(**{**SMALL.to_dict(), "pipeline": pipeline, "bram_reg": pipeline})
    rng = np.random.default_rng(seed)
    layer = random_layer(rng, abits=4, wbits=3, terms=2, **spec)
    x = random_inputs(rng, layer)
    plan = LayerPlan(layer, cfg)
    got, cycles = run_engine(cfg, plan, x[0])
    np.testing.assert_array_equal(got, reference.run_layer(layer, x)[0])
    assert cycles == plan.cycles()
    assert len(plan.m_tiles) == -(-layer.out_shape[-1] * (layer.out_shape[-2] if layer.kind == "conv2d" else 1) // 7)


def test_images_lay_out_channel_blocked_hwc():
    rng = np.random.default_rng(0)
    layer = random_layer(rng, kind="conv2d", in_c=4, out_c=3, hw=(2, 3), wbits=3, terms=2)
    plan = LayerPlan(layer, SMALL)  # rows 3: channel blocks [0, 1, 2], [3, pad, pad]
    x = np.arange(4 * 2 * 3).reshape(4, 2, 3)
    image = plan.act_image(x)
    assert image.shape == (2 * 3 * 2, 3)
    y, xx, cb = 1, 2, 1
    np.testing.assert_array_equal(image[(y * 3 + xx) * 2 + cb], [x[3, y, xx], 0, 0])
    assert plan.wgt_image().shape == (plan.nb * plan.kt * SMALL.rows, SMALL.cols)


@pytest.mark.parametrize("change, message", [
    ({"max_fan_in": 20}, r"layer layer does not fit the engine: fan-in 36 .* regenerate with --max-fan-in 36"),
    ({"abits": 3}, r"4-bit inputs exceed the 3-bit activations; regenerate with --abits 4"),
    ({"wbits": 2}, r"3-bit weight codes, the PEs hold 2; regenerate with --wbits 3"),
    ({"terms": 1}, r"2 terms per weight, the PEs hold 1; regenerate with --terms 2"),
    ({"act_depth": 40}, r"input activations need 50 words, the memory has 40; regenerate with --act-depth 50"),
    ({"out_depth": 40}, r"outputs need 50 words, the memory has 40; regenerate with --out-depth 50"),
])
def test_a_layer_that_does_not_fit_is_refused_in_one_line(change, message):
    layer = random_layer(np.random.default_rng(0), kind="conv2d", in_c=4, out_c=3, hw=(5, 5), wbits=3, terms=2)
    cfg = HwConfig(**{**SMALL.to_dict(), **change})
    with pytest.raises(UserError, match=message):
        LayerPlan(layer, cfg)


def test_a_logits_layer_with_a_right_shift_is_refused():
    """The requantiser's path for layers without ReLU only shifts left (quant.lower exports
    logits that way); anything else is refused rather than computed wrongly."""
    layer = random_layer(np.random.default_rng(0), kind="linear", in_c=6, out_c=3, wbits=3, terms=2, relu=False)
    layer.arrays["requant"][1] = 2
    with pytest.raises(UserError, match=r"layer layer does not fit the engine: a right shift of 2 without ReLU"):
        LayerPlan(layer, SMALL)


def test_fit_config_sizes_the_design_from_the_network(trained_runs):
    net = load_artifact(trained_runs.artifact).network
    cfg = fit_config(net, rows=4, cols=4)
    weighted = [layer for layer in net.layers if layer.weighted]
    assert cfg.max_fan_in == max(layer.arith.fan_in for layer in weighted)
    assert cfg.acc_bits == max(layer.arith.acc_bits for layer in weighted)
    plans = [LayerPlan(layer, cfg) for layer in weighted]
    for depth, words in ((cfg.act_depth, [p.act_words for p in plans]), (cfg.wgt_depth, [p.wgt_words for p in plans]),
                         (cfg.out_depth, [p.out_words for p in plans])):
        assert depth & (depth - 1) == 0 and max(words) <= depth < 2 * max(words)
    with pytest.raises(UserError, match="no conv2d or linear layer"):
        fit_config(Network(input_shape=(1,), input_bits=4, layers=[], num_classes=1))
