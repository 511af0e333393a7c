"""The same stimulus on Amaranth's own Python simulator: a second simulator for quick checks and the speed benchmark."""

import numpy as np
from amaranth.sim import Simulator

from hw.array import SystolicArray, lane_words
from hw.engine import LayerEngine


def run_array(cfg, w_codes, a, s):
    """Load ``w_codes`` ``(rows, cols)``, stream ``a`` ``(N, rows)`` with partial sums ``s``
    ``(N, cols)`` one per cycle.  Returns ``(results (N, cols), cycles simulated)``."""
    dut = SystolicArray(cfg)
    out = []
    cycles = [0]

    async def bench(ctx):
        for k, word in enumerate(lane_words(w_codes, cfg.wgt_lanes)):  # one word a cycle
            ctx.set(dut.w_load, int(k == 0))
            for n, code in enumerate(word):
                ctx.set(dut.w_in[n], int(code))
            await ctx.tick()
        ctx.set(dut.w_load, 0)
        ctx.set(dut.en, 1)
        i = 0
        while len(out) < len(a):
            if i < len(a):
                ctx.set(dut.valid, 1)
                for k in range(cfg.rows):
                    ctx.set(dut.a[k], int(a[i, k]))
                for n in range(cfg.cols):
                    ctx.set(dut.s_in[n], int(s[i, n]))
                i += 1
            else:
                ctx.set(dut.valid, 0)
            await ctx.tick()
            cycles[0] += 1
            if ctx.get(dut.s_valid):
                out.append([ctx.get(dut.s_out[n]) for n in range(cfg.cols)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return np.array(out, dtype=np.int64), cycles[0] + cfg.rows


def run_engine(cfg, plan, x):
    """Load and run one layer (``plan``) on input codes ``x``; returns ``(outputs, cycles)``
    with ``cycles`` counted as :meth:`hw.plan.LayerPlan.cycles` documents."""
    dut = LayerEngine(cfg)
    result = {}

    async def write(ctx, port, words):
        ctx.set(port.en, 1)
        for i, word in enumerate(words):
            ctx.set(port.addr, i)
            ctx.set(port.data.as_value(), word)
            await ctx.tick()
        ctx.set(port.en, 0)

    async def bench(ctx):
        for name, words in plan.memory_words(x).items():
            await write(ctx, getattr(dut, f"{name}_w"), words)
        for name, value in plan.descriptor().items():
            ctx.set(getattr(dut.desc, name), value)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycles = 1
        while not ctx.get(dut.done):
            await ctx.tick()
            cycles += 1
        result["cycles"] = cycles
        words = []
        for i in range(plan.out_words):
            ctx.set(dut.out_r.addr, i)
            await ctx.tick()
            words.append([ctx.get(dut.out_r.data[k]) for k in range(cfg.cols)])
        result["out"] = plan.unpack_outputs(words)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return result["out"], result["cycles"]


def run_core(dut, streams, num_classes, steps=None):
    """Drive a network core (ports of :class:`hw.network.NetworkCore`) on Amaranth's simulator:
    per image an ``in_first`` cycle, its codes ``streams[i]`` honouring ``in_ready``, idle
    cycles until ``busy`` is low, ``start``, cycles until ``done``; then the logits.
    Returns ``(logits (N, num_classes), cycles (N,))``, cycles counted as
    :meth:`hw.program.NetworkProgram.cycles` documents (``done`` read after each tick): with
    the ``start`` cycle as cycle 0, the cycle in which ``done`` is high.

    With ``steps`` (the number of steps of the core's program) it also watches ``step_done``
    and returns ``(logits, cycles, step_cycles (N, steps))``: per image the cycles of each step,
    the differences between the cycles in which ``step_done`` is high (the first from the
    ``start`` cycle), which sum to ``cycles``.  An image whose run has not exactly ``steps``
    cycles with ``step_done`` high raises :class:`RuntimeError`."""
    logits, cycles, step_cycles = [], [], []

    async def bench(ctx):
        for image, stream in enumerate(streams):
            ctx.set(dut.in_first, 1)
            await ctx.tick()
            ctx.set(dut.in_first, 0)
            ctx.set(dut.in_valid, 1)
            for code in stream:
                ctx.set(dut.in_data, int(code))
                while True:
                    ready = ctx.get(dut.in_ready)
                    await ctx.tick()
                    if ready:
                        break
            ctx.set(dut.in_valid, 0)
            while ctx.get(dut.busy):
                await ctx.tick()
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            n, marks = 1, []
            while True:
                if steps is not None and ctx.get(dut.step_done):
                    marks.append(n)
                if ctx.get(dut.done):
                    break
                await ctx.tick()
                n += 1
            await ctx.tick()
            cycles.append(n)
            if steps is not None:
                if len(marks) != steps:
                    raise RuntimeError(f"image {image}: step_done was high in {len(marks)} cycles of the run "
                                       f"(cycles {marks}), expected {steps}")
                step_cycles.append(np.diff([0, *marks]))
            row = []
            for k in range(num_classes):
                ctx.set(dut.logit_addr, k)
                row.append(ctx.get(dut.logit_data))
            logits.append(row)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    result = np.array(logits, dtype=np.int64), np.array(cycles, dtype=np.int64)
    if steps is None:
        return result
    return *result, np.array(step_cycles, dtype=np.int64).reshape(len(cycles), steps)


def run_network(program, inputs, per_step=False):
    """Run input codes ``inputs`` ``(N, C, H, W)`` one image after another through a
    :class:`hw.network.NetworkCore` for ``program`` (see :func:`run_core`): ``(logits, cycles)``,
    and with ``per_step`` also ``step_cycles`` ``(N, len(program.steps))``, each step's
    ``plan.cycles() + hw.program.STEP_OVERHEAD``."""
    from hw.network import NetworkCore

    return run_core(NetworkCore(program), [program.packer.stream(x) for x in inputs], program.num_classes,
                    steps=len(program.steps) if per_step else None)
