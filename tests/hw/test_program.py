"""The network program: its rewrites compute exactly what the network does, its refusals,
and the network core on Amaranth's simulator against the integer reference."""

import dataclasses

import numpy as np
import pytest

from core import reference
from core.artifact import load_artifact
from core.errors import UserError
from hw.program import (STEP_OVERHEAD, NetworkProgram, PackerGeometry, flatten_linear, pack_input_layer,
                        pack_window_layer)
from hw.random_layers import GRAPHS, random_inputs, random_layer, random_network
from sim.amaranth_sim import run_network


@pytest.mark.parametrize("in_c,kernel,padding,stride,hw", [
    (1, (3, 3), (1, 1), (1, 1), (6, 7)),
    (2, (3, 3), (0, 1), (1, 2), (5, 6)),
    (1, (2, 4), (1, 2), (2, 1), (7, 5)),
])
def test_input_packing_computes_the_same_layer(in_c, kernel, padding, stride, hw):
    rng = np.random.default_rng(sum(kernel) + in_c)
    layer = random_layer(rng, kind="conv2d", in_c=in_c, out_c=3, hw=hw, kernel=list(kernel), padding=list(padding),
                         stride=list(stride), abits=4, wbits=3, terms=2, relu=True, name="conv0")
    x = random_inputs(rng, layer, count=3)
    packed = pack_input_layer(layer, kernel[1])
    rows = in_c * kernel[1] + 1
    g = PackerGeometry(channels=in_c, height=hw[0], width=hw[1], window=kernel[1], pad=padding[1])
    words = np.stack([g.pack(xi, rows).reshape(hw[0], g.words_per_row, rows)[:, :, :in_c * kernel[1]]
                      .transpose(2, 0, 1) for xi in x])
    assert np.array_equal(reference.run_layer(packed, words), reference.run_layer(layer, x))


@pytest.mark.parametrize("in_c,kernel,padding,hw,rows", [
    (1, (3, 3), (1, 1), (6, 7), 16),
    (3, (3, 3), (1, 1), (5, 6), 8),  # a colour image: 27 lanes in 4 words of 8
    (2, (2, 4), (1, 2), (7, 5), 8),
    (1, (5, 5), (0, 2), (8, 8), 8),
])
def test_window_packing_computes_the_same_layer(in_c, kernel, padding, hw, rows):
    """im2col words (whole windows) and the 1x1 layer they feed give the conv2d's output."""
    rng = np.random.default_rng(sum(kernel) * in_c + rows)
    layer = random_layer(rng, kind="conv2d", in_c=in_c, out_c=3, hw=hw, kernel=list(kernel), padding=list(padding),
                         stride=[1, 1], abits=4, wbits=3, terms=2, relu=True, name="conv0")
    x = random_inputs(rng, layer, count=3)
    packed = pack_window_layer(layer)
    taps = in_c * kernel[0] * kernel[1]
    g = PackerGeometry(channels=in_c, height=hw[0], width=hw[1], window=kernel[1], pad=padding[1],
                       blocks=-(-taps // rows), lanes=rows, mode="window", kernel_rows=kernel[0], pad_y=padding[0])
    assert g.words == layer.out_shape[1] * layer.out_shape[2] * g.blocks
    words = np.stack([g.pack(xi, rows).reshape(g.out_h, g.words_per_row, g.blocks * rows)[:, :, :taps]
                      .transpose(2, 0, 1) for xi in x])
    assert np.array_equal(reference.run_layer(packed, words), reference.run_layer(layer, x))


def drive_packer(g, x, rows):
    """The RTL input packer on Amaranth's simulator, ``x``'s codes offered every cycle.
    Returns the words it wrote ``(words, rows)``, how often each lane was written, and the
    cycles (from the one after ``in_first``) in which it took a code; ``w_any`` is checked
    against ``w_en`` in every cycle."""
    from amaranth.sim import Simulator

    from hw.network import InputPacker

    dut = InputPacker(g, rows=rows, abits=4, addr_width=16)
    written = np.zeros((g.words, rows), dtype=np.int64)
    times = np.zeros((g.words, rows), dtype=np.int64)
    taken, stream = [], list(g.stream(x))

    async def bench(ctx):
        ctx.set(dut.in_first, 1)
        await ctx.tick()
        ctx.set(dut.in_first, 0)
        cycle = 0
        while (stream or ctx.get(dut.busy)) and cycle < 100 * g.words:
            ctx.set(dut.in_valid, bool(stream))
            ctx.set(dut.in_data, int(stream[0]) if stream else 0)
            take = bool(stream) and ctx.get(dut.in_ready)
            en, addr, data = ctx.get(dut.w_en), ctx.get(dut.w_addr), ctx.get(dut.w_data)
            assert ctx.get(dut.w_any) == (en != 0), f"w_any is not w_en's OR in cycle {cycle}"
            for lane in range(rows):
                if en >> lane & 1:
                    written[addr, lane] = data >> (4 * lane) & 15
                    times[addr, lane] += 1
            await ctx.tick()
            if take:
                taken.append(cycle)
                stream.pop(0)
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not stream, "the packer did not take every code"
    return written, times, taken


@pytest.mark.parametrize("in_c,kernel,padding,hw,rows", [
    (1, (3, 3), (1, 1), (5, 6), 16),
    (3, (3, 3), (1, 1), (4, 5), 8),
    (2, (2, 3), (2, 0), (4, 4), 4),
])
def test_window_packer_writes_every_lane_once_and_stalls_as_counted(in_c, kernel, padding, hw, rows):
    """The RTL packer writes exactly the words of PackerGeometry.pack, each lane once, and
    keeps in_ready low at most the cycles stall_cycles counts, which the board checks
    against the UART's byte time."""
    taps = in_c * kernel[0] * kernel[1]
    g = PackerGeometry(channels=in_c, height=hw[0], width=hw[1], window=kernel[1], pad=padding[1],
                       blocks=-(-taps // rows), lanes=rows, mode="window", kernel_rows=kernel[0], pad_y=padding[0])
    x = np.random.default_rng(rows).integers(1, 16, (in_c,) + hw)
    written, times, taken = drive_packer(g, x, rows)
    assert np.array_equal(written, g.pack(x, rows))
    lanes = np.arange(g.blocks * rows).reshape(g.blocks, rows) < taps
    assert np.array_equal(times, np.tile(lanes, (g.words // g.blocks, 1)).astype(np.int64))
    first, between = g.stall_cycles()
    assert taken[0] + 1 == first and max(np.diff(taken)) == between


@pytest.mark.parametrize("geometry", [
    PackerGeometry(channels=1, height=4, width=5, window=3, pad=1),
    PackerGeometry(channels=2, height=3, width=4, window=3, pad=1),
    PackerGeometry(channels=3, height=3, width=3, blocks=2, lanes=2, mode="blocked"),
])
def test_row_and_blocked_packers_stall_as_counted(geometry):
    """The other packers' in_ready, codes offered every cycle, against stall_cycles."""
    x = np.ones((geometry.channels, geometry.height, geometry.width), dtype=np.int64)
    _, _, taken = drive_packer(geometry, x, rows=8)
    assert (taken[0] + 1, max(np.diff(taken))) == geometry.stall_cycles()


@pytest.mark.parametrize("rows,want", [(4, "rows"), (8, "window"), (16, "window")])
def test_the_packing_that_takes_fewest_k_tiles(rows, want):
    """MNIST's 1-channel 3x3 conv: rows packed (3 tiles) at 4 rows, whole windows at 8 (2
    tiles) and 16 (1); a strided first conv keeps the rows packing."""
    rng = np.random.default_rng(rows)
    net = random_network(rng, [("conv", 4, 3, 1, 1), ("flatten",), ("linear", 10)], (1, 6, 6))
    prog = NetworkProgram(net, rows=rows, cols=4, psum_depth=16)
    assert prog.packer.mode == want
    assert prog.steps[0].plan.kt == {"rows": 3, "window": -(-9 // rows)}[want]
    strided = random_network(rng, [("conv", 4, 3, 2, 1), ("flatten",), ("linear", 10)], (1, 7, 7))
    assert NetworkProgram(strided, rows=rows, cols=4, psum_depth=16).packer.mode == "rows"


def test_flatten_rewrite_reads_channel_blocked_words():
    rng = np.random.default_rng(7)
    c, h, w, rows = 5, 3, 2, 4
    fc = random_layer(rng, kind="linear", in_c=c * h * w, out_c=6, abits=4, wbits=4, terms=1, relu=False, name="fc")
    x = rng.integers(0, 16, size=(4, c, h, w))
    rewritten = flatten_linear(fc, (c, h, w), rows)
    cb = -(-c // rows)
    blocked = np.zeros((4, cb * rows, h, w), dtype=np.int64)
    blocked[:, :c] = x
    words = blocked.transpose(0, 2, 3, 1).reshape(4, -1)  # (position, block, lane) as the buffer holds it
    assert np.array_equal(reference.run_layer(rewritten, words), reference.run_layer(fc, x.reshape(4, -1)))


def test_program_steps_and_buffers(trained_runs):
    art = load_artifact(trained_runs.artifact)
    prog = NetworkProgram(art.network, rows=8, cols=4)
    assert [s.names for s in prog.steps] == [("conv0", "pool1"), ("conv2", "pool3"), ("flatten4", "fc5")]
    assert [(s.src, s.dst) for s in prog.steps] == [("A", "B"), ("B", "A"), ("A", "logits")]
    assert prog.steps[0].plan.kt == 2  # 3x3 over one channel, whole windows packed: 9 lanes in 2 words of 8
    assert prog.packer.mode == "window" and [b.banks for b in prog.buffers] == [8, 2]
    assert prog.banks == 2 and all(s.plan.nb % 2 == 0 for s in prog.steps[:-1])
    assert prog.wgt_words == sum(s.plan.wgt_words for s in prog.steps) == len(prog.wgt_rom())
    assert prog.par_words == len(prog.par_rom())
    # buffer A holds the packed 8x8 input, two words a position; B the pooled 4x4x16 map, 8 channels a word
    assert prog.buffer_words("A") == 64 * 2 and prog.buffer_words("B") == 4 * 4 * 2


def test_refusals(trained_runs):
    art = load_artifact(trained_runs.artifact)
    with pytest.raises(UserError, match="rows a multiple of cols"):
        NetworkProgram(art.network, rows=6, cols=4)
    with pytest.raises(UserError, match="rows / cols to be a power of two.*--rows 8"):
        NetworkProgram(art.network, rows=12, cols=4)
    net = dataclasses.replace(art.network, layers=art.network.layers[1:])  # starts with a pool
    with pytest.raises(UserError, match="first layer is a conv2d or linear"):
        NetworkProgram(net, rows=8, cols=4)
    layers = list(art.network.layers)
    pool = layers[1]
    layers[1] = dataclasses.replace(pool, stride=(1, 1))
    with pytest.raises(UserError, match="stride equal to its kernel"):
        NetworkProgram(dataclasses.replace(art.network, layers=layers), rows=8, cols=4)


@pytest.mark.parametrize("rows,cols,mode,skew_ram", [(8, 4, "window", False), (16, 4, "window", True),
                                                     (4, 4, "rows", False)])
def test_network_core_on_amaranth_sim(trained_runs, rows, cols, mode, skew_ram):
    art = load_artifact(trained_runs.artifact)
    prog = NetworkProgram(art.network, rows=rows, cols=cols, psum_depth=16, skew_ram=skew_ram)
    assert prog.packer.mode == mode
    x = art.golden.inputs[:2]
    logits, cycles, step_cycles = run_network(prog, x, per_step=True)
    assert np.array_equal(logits, reference.run(art.network, x)[-1])
    assert np.array_equal(logits, art.golden.outputs[-1][:2])
    assert list(cycles) == [prog.cycles()] * 2
    assert step_cycles.tolist() == [[s.plan.cycles() + STEP_OVERHEAD for s in prog.steps]] * 2


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_network_core_runs_user_graphs(graph):
    """The network core on Amaranth's simulator runs each graph to logits equal to the integer
    reference, in the cycles the program counts, per step."""
    spec, shape = GRAPHS[graph]
    rng = np.random.default_rng(len(graph))
    net = random_network(rng, spec, shape)
    prog = NetworkProgram(net, rows=8, cols=4, psum_depth=16)
    x = rng.integers(0, 16, (2,) + shape)
    logits, cycles, step_cycles = run_network(prog, x, per_step=True)
    assert np.array_equal(logits, reference.run(net, x)[-1])
    assert step_cycles.tolist() == [[s.plan.cycles() + STEP_OVERHEAD for s in prog.steps]] * 2


def test_buffers_are_allocated_per_graph():
    spec, shape = GRAPHS["residual-gap"]
    prog = NetworkProgram(random_network(np.random.default_rng(0), spec, shape), rows=8, cols=4)
    # the block's input (pool1, in B) lives until skipconv3 adds it, so skipconv3 writes a
    # third buffer, and into a fourth as well: skipconv4 reads it as source and skip at once
    assert [(s.src, s.skip, s.dst) for s in prog.steps] == [
        ("A", None, "B"), ("B", None, "A"), ("A", "B", "C+D"), ("C", "D", "A"), ("A", None, "logits")]
    # A: the colour input's 3x3 windows, 27 codes in 4 words a position
    assert prog.packer.mode == "window" and prog.steps[0].plan.kt == 4
    assert [(b.name, b.words) for b in prog.buffers] == [("A", 64 * 4), ("B", 16), ("C", 16), ("D", 16)]
