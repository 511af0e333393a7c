"""cocotb tests of the layer engine (driven by tests/hw/test_engine.py and ``make sim``)."""

import json
import pathlib

import cocotb
import numpy as np

from core import reference
from core.artifact import Layer, load_artifact
from hw.graph import engine_layers
from hw.plan import LayerPlan
from hw.random_layers import add_random_skip, random_inputs, random_layer, random_skip
from sim.tb import EngineTestbench


async def run_and_check(tb, layer, x, expected, what, report, *, skip=None, pool=None):
    """Run one layer (with the max-pool ``pool`` fused) on one sample (and the skip tensor
    ``skip`` of a residual add); record it in ``report``, then check it."""
    plan = LayerPlan(layer, tb.cfg, pool=pool)
    await tb.load(plan, x, skip)
    cycles, writes = await tb.run(plan)
    got = await tb.read_outputs(plan)
    report.append({"what": what, "layer": layer.name, "values": int(np.asarray(expected).size),
                   "mismatches": int(np.count_nonzero(np.asarray(expected) != got)),
                   "cycles": cycles, "plan_cycles": plan.cycles()})
    tb.check(plan, expected, got, cycles, writes, what)
    tb.dut._log.info(f"{what}: {np.asarray(expected).size} values match, {cycles} cycles = plan.cycles()")


def write_report(case, report):
    """Save the per-run records where the case asks (``sim.layers`` prints them)."""
    if case.get("report"):
        pathlib.Path(case["report"]).write_text(json.dumps(report, indent=1))


@cocotb.test()
async def artifact_layers(dut):
    """Each listed layer of an exported artifact, on its golden input vectors: every output
    value equals the golden output PyTorch produced, in the documented number of cycles."""
    tb, case, _ = await EngineTestbench.start(dut)
    art = load_artifact(case["artifact"])
    gold = art.golden
    index = {layer.name: i for i, layer in enumerate(art.network.layers)}
    engine = {el.index: el for el in engine_layers(art.network)}
    report = []
    try:
        for name in case["layers"]:
            i = index[name]
            el = engine[i]  # the layer as the engine runs it: average pools before it folded in
            inputs = gold.inputs if el.source < 0 else gold.outputs[el.source]
            skips = None if not el.layer.has_skip else gold.inputs if el.layer.skip < 0 else gold.outputs[el.layer.skip]
            for sample in case["samples"]:
                await run_and_check(tb, el.layer, inputs[sample], gold.outputs[i][sample],
                                    f"layer {name}, sample {sample}", report,
                                    skip=None if skips is None else skips[sample])
    finally:
        write_report(case, report)


@cocotb.test()
async def random_layers(dut):
    """Random conv2d/linear layers (seeded), checked against the integer reference."""
    tb, case, _ = await EngineTestbench.start(dut)
    report = []
    try:
        for spec in case["random"]:
            rng = np.random.default_rng(spec["seed"])
            kwargs = dict(spec["layer"])
            extreme = kwargs.pop("extreme", False)
            layer = random_layer(rng, extreme=extreme, **kwargs)
            x = random_inputs(rng, layer, 1, extreme=extreme)
            skip = None
            if "skip" in spec:  # a residual add of a random tensor, shifted within spec["skip"]
                skip = random_skip(rng, add_random_skip(rng, layer, spec["skip"]), extreme=extreme)
            expected = reference.run_layer(layer, x, skip)
            pool = spec.get("pool")
            if pool:  # the max-pool fused after it
                expected = reference.run_layer(Layer(kind="maxpool2d", name="pool", in_shape=layer.out_shape,
                                                     out_shape=None, kernel=tuple(pool), stride=tuple(pool)), expected)
            await run_and_check(tb, layer, x[0], expected[0], f"random {layer.kind} seed {spec['seed']} {spec['layer']}",
                                report, skip=None if skip is None else skip[0], pool=pool)
    finally:
        write_report(case, report)
