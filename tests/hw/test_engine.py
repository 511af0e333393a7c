"""The layer engine on Verilator (cocotb): random layers, the accumulator's worst case, every
layer of a trained network, and a mismatch report that names where it happened."""

import numpy as np
import pytest

from core import arith
from core.artifact import load_artifact, save_artifact
from core.hwconfig import HwConfig
from hw.plan import fit_config
from sim.layers import check_artifact
from sim.simulate import simulate

SMALL = HwConfig(rows=3, cols=2, abits=4, wbits=3, terms=2, max_fan_in=200, psum_depth=7, act_depth=256,
                 wgt_depth=512, out_depth=256)


def conv(seed, **kw):
    return {"seed": seed, "layer": {"kind": "conv2d", "abits": 4, "wbits": 3, "terms": 2, **kw}}


RANDOM = [
    conv(1, in_c=4, out_c=3, hw=[5, 4], stride=[2, 1]),
    conv(2, in_c=2, out_c=5, hw=[3, 6], padding=[0, 1], kernel=[1, 3]),
    conv(3, in_c=1, out_c=2, hw=[6, 6], stride=[2, 2], padding=[0, 0]),
    conv(4, in_c=5, out_c=4, hw=[2, 2], padding=[2, 2]),
    {"seed": 5, "layer": {"kind": "linear", "in_c": 7, "out_c": 5, "abits": 4, "wbits": 3, "terms": 2, "relu": False}},
    {"seed": 6, "layer": {"kind": "linear", "in_c": 20, "out_c": 3, "abits": 2, "wbits": 2, "terms": 1}},
]


@pytest.mark.parametrize("pipeline", [False, True])
def test_random_layers(pipeline):
    cfg = HwConfig(**{**SMALL.to_dict(), "pipeline": pipeline, "bram_reg": pipeline})
    simulate(cfg, "engine", "sim.cocotb_engine", "random_layers", {"random": RANDOM})


@pytest.mark.parametrize("rows, cols, bram_reg", [(5, 1, False), (2, 4, True)])
def test_random_layers_on_tall_and_wide_arrays(rows, cols, bram_reg):
    """Passes of a block follow each other ``pass_gap`` cycles apart (the partial sums' hazard,
    longer with ``bram_reg``), or ``load_rows`` when the weight loads are the longer, the
    next pass's weights loading along the diagonal behind the last activations of the one
    before: a five-row, one-column array and a two-row array with more columns than rows."""
    cfg = HwConfig(**{**SMALL.to_dict(), "rows": rows, "cols": cols, "bram_reg": bram_reg})
    simulate(cfg, "engine", "sim.cocotb_engine", "random_layers", {"random": RANDOM})


@pytest.mark.parametrize("lanes, bram_reg, input_reg", [(2, False, False), (4, True, False), (2, True, True),
                                                     (4, False, True)])
def test_random_layers_with_weight_lanes(lanes, bram_reg, input_reg):
    """Weight words of several rows (``wgt_lanes``), a pass's weights loading in ``rows / lanes``
    cycles: passes of one position follow each other ``pass_gap`` cycles apart.  With
    ``input_reg`` the activations and the weight words take one more register to the array,
    the loads keeping their place on the diagonal."""
    cfg = HwConfig(**{**SMALL.to_dict(), "rows": 4, "cols": 3, "wgt_lanes": lanes, "bram_reg": bram_reg,
                      "input_reg": input_reg})
    assert cfg.load_rows == 4 // lanes
    assert cfg.input_stages == int(bram_reg) + int(input_reg)
    simulate(cfg, "engine", "sim.cocotb_engine", "random_layers", {"random": RANDOM})


def test_accumulator_worst_case_at_the_deepest_fan_in():
    """All activations at the maximum and every weight term at the largest shift with one sign,
    the bias at its bound with the same sign, over exactly ``max_fan_in`` inputs: the sum
    reaches the accumulator's limit of each sign and must come out exact (no requantisation)."""
    cfg = HwConfig(rows=4, cols=2, abits=8, wbits=5, terms=3, max_fan_in=40, psum_depth=4, max_left=0,
                   act_depth=64, wgt_depth=256, out_depth=64)
    specs = [{"seed": s, "layer": {"kind": "linear", "in_c": cfg.max_fan_in, "out_c": 3, "abits": 8, "wbits": 5,
                                   "terms": 3, "relu": False, "extreme": True}} for s in (0, 1, 2, 3)]
    # the seeds give both signs; the largest magnitude is 2 * product_bound, just inside acc_bits
    assert {int(np.random.default_rng(s["seed"]).integers(0, 2)) for s in specs} == {0, 1}
    simulate(cfg, "engine", "sim.cocotb_engine", "random_layers", {"random": specs})


def test_accumulator_worst_case_with_a_residual_add():
    """The same worst case plus every skip code at the maximum shifted by the largest left
    shift the design holds: with the positive sign the sum reaches ``2 * product_bound +
    skip_bound``, the top of the widened accumulator."""
    cfg = HwConfig(rows=4, cols=2, abits=8, wbits=5, terms=3, max_fan_in=40, psum_depth=4, max_left=0,
                   act_depth=64, wgt_depth=256, out_depth=64, skip=True, max_skip_left=6)
    specs = [{"seed": s, "layer": {"kind": "linear", "in_c": cfg.max_fan_in, "out_c": 3, "abits": 8, "wbits": 5,
                                   "terms": 3, "relu": False, "extreme": True}, "skip": [6, 6]} for s in (0, 1, 2, 3)]
    assert {int(np.random.default_rng(s["seed"]).integers(0, 2)) for s in specs} == {0, 1}
    assert cfg.acc_bits == arith.signed_bits(2 * cfg.arith.product_bound + (255 << 6))
    simulate(cfg, "engine", "sim.cocotb_engine", "random_layers", {"random": specs})


def test_every_layer_of_a_trained_network(trained_runs):
    art = load_artifact(trained_runs.artifact)
    cfg = fit_config(art.network, rows=4, cols=4, psum_depth=32)
    report = check_artifact(trained_runs.artifact, cfg, samples=2)
    weighted = [layer.name for layer in art.network.layers if layer.weighted]
    assert [r["layer"] for r in report] == [name for name in weighted for _ in range(2)]
    assert all(r["mismatches"] == 0 and r["cycles"] == r["plan_cycles"] for r in report)


def test_a_wrong_golden_value_is_reported_with_its_place(trained_runs, tmp_path):
    art = load_artifact(trained_runs.artifact)
    first = next(i for i, layer in enumerate(art.network.layers) if layer.kind == "conv2d")
    art.golden.outputs[first][0, 1, 2, 3] += 1  # channel 1, y 2, x 3 of sample 0
    bad = tmp_path / "bad.npz"
    save_artifact(bad, art)
    cfg = fit_config(art.network, rows=4, cols=4, psum_depth=32)
    name = art.network.layers[first].name
    width = art.network.layers[first].out_shape[2]
    with pytest.raises(AssertionError) as info:
        check_artifact(bad, cfg, samples=1)
    position = 2 * width + 3
    assert (f"layer {name}, sample 0, M tile {position // 32}, block 0, position {position} (y 2, x 3), column 1, "
            f"written at cycle") in str(info.value)
    assert "1 of" in str(info.value)


SKIP = [
    {**conv(11, in_c=3, out_c=5, hw=[4, 5]), "skip": [-2, 3]},  # 3 channel blocks of 2, 2 K tiles
    {**conv(12, in_c=2, out_c=3, hw=[6, 4], kernel=[1, 1], padding=[0, 0]), "skip": [-5, 3]},  # KT 1: one pass
    {**conv(13, in_c=4, out_c=3, hw=[4, 6]), "skip": [0, 3], "pool": [2, 2]},  # fused max-pool after the add
    {**conv(14, in_c=2, out_c=4, hw=[5, 4], stride=[2, 1]), "skip": [-3, -1], "pool": [1, 2]},
    {"seed": 15, "layer": {"kind": "linear", "in_c": 9, "out_c": 5, "abits": 4, "wbits": 3, "terms": 2},
     "skip": [1, 3]},
]


@pytest.mark.parametrize("pipeline", [False, True])
def test_residual_adds(pipeline):
    """The skip path: each layer adds a random tensor shifted per channel (left, and right with
    rounding, from -5 to 3 bits) into its first K tile, over M tiles of 8 positions, fused
    pools and both register options; every value equals the reference in the planned cycles."""
    cfg = HwConfig(**{**SMALL.to_dict(), "pipeline": pipeline, "bram_reg": pipeline, "skip": True,
                      "max_skip_left": 3, "psum_depth": 8})
    simulate(cfg, "engine", "sim.cocotb_engine", "random_layers", {"random": SKIP})
