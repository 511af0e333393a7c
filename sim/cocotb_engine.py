"""cocotb tests of the layer engine (driven by tests/hw/test_engine.py and ``make sim``)."""

import json
import pathlib

import cocotb
import numpy as np

from hw.plan import LayerPlan
from hw.random_layers import random_inputs, random_layer
from quant import reference
from quant.artifact import load_artifact
from sim.tb import EngineTestbench


async def run_and_check(tb, layer, x, expected, what, report):
    """Run one layer on one sample; record it in ``report``, then check it."""
    plan = LayerPlan(layer, tb.cfg)
    await tb.load(plan, x)
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
    report = []
    try:
        for name in case["layers"]:
            i = index[name]
            layer = art.network.layers[i]
            inputs = gold.inputs if i == 0 else gold.outputs[i - 1]
            for sample in case["samples"]:
                await run_and_check(tb, layer, inputs[sample], gold.outputs[i][sample],
                                    f"layer {name}, sample {sample}", report)
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
            expected = reference.run_layer(layer, x)[0]
            await run_and_check(tb, layer, x[0], expected, f"random {layer.kind} seed {spec['seed']} {spec['layer']}",
                                report)
    finally:
        write_report(case, report)
