"""The batch harness (sim/batch.py, sim/batch_main.cpp) on a small stub network core."""

import numpy as np
import pytest
from amaranth import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from core.errors import UserError
from sim import runner
from sim.amaranth_sim import run_core
from sim.batch import build_batch, check_ports, run_batch

INPUT_BITS = 4
NUM_CLASSES = 5
LOGIT_BITS = 12
N_INPUTS = 9
K = 300  # logit[i] = sum * (i + 1) - K: negative for small sums
WAIT_MASK = 7  # a run counts (sum & WAIT_MASK) + 2 cycles (done is high in cycle (sum & 7) + 3, start = 1)
STEPS = 2  # step_done is high in the cycle before done's and in done's


class StubCore(wiring.Component):
    """A stand-in for the network core with its ports.

    Codes go through a 2-stage pipeline into an accumulator (cleared by ``in_first``); ``busy``
    is high while codes are in the pipeline, so a ``start`` given too early would use a partial
    sum (and is ignored). ``in_ready`` is low one cycle in three (a free-running counter).
    ``start`` latches the sum and counts down ``sum & WAIT_MASK``; ``done`` is a registered pulse
    after the count reaches 0: high in cycle ``(sum & WAIT_MASK) + 3`` counting the ``start`` cycle
    as 1, which the batch counts as ``(sum & WAIT_MASK) + 2`` (edges before ``done``). A sum of 0
    never ends (the hang). ``step_done`` is high in the cycle before ``done``'s and in ``done``'s:
    two steps of ``(sum & WAIT_MASK) + 1`` and 1 cycles. The logits are
    ``latched_sum * (logit_addr + 1) - K``.
    """

    in_first: In(1)
    in_valid: In(1)
    in_data: In(INPUT_BITS)
    in_ready: Out(1)
    start: In(1)
    busy: Out(1)
    done: Out(1)
    step_done: Out(1)
    logit_addr: In(3)
    logit_data: Out(signed(LOGIT_BITS))

    def elaborate(self, platform):
        m = Module()
        phase = Signal(2)
        m.d.sync += phase.eq(phase + 1)
        with m.If(phase == 2):
            m.d.sync += phase.eq(0)
        m.d.comb += self.in_ready.eq(phase != 2)

        v1, v2 = Signal(), Signal()
        d1, d2 = Signal(INPUT_BITS), Signal(INPUT_BITS)
        acc, latched, count = Signal(10), Signal(10), Signal(3)
        running = Signal()
        m.d.sync += [v1.eq(self.in_valid & self.in_ready), d1.eq(self.in_data), v2.eq(v1), d2.eq(d1),
                     self.done.eq(0)]
        with m.If(self.in_first):
            m.d.sync += acc.eq(0)
        with m.Elif(v2):
            m.d.sync += acc.eq(acc + d2)
        m.d.comb += self.busy.eq(running | v1 | v2)

        with m.If(self.start & ~self.busy):
            m.d.sync += [running.eq(1), latched.eq(acc), count.eq(acc[:3])]
        with m.Elif(running):
            with m.If(count != 0):
                m.d.sync += count.eq(count - 1)
            with m.Elif(latched != 0):
                m.d.sync += [running.eq(0), self.done.eq(1)]
        m.d.comb += self.step_done.eq(self.done | (running & (count == 0) & (latched != 0)))
        m.d.comb += self.logit_data.eq(latched * (self.logit_addr + 1) - K)
        return m


def expected(codes):
    """Logits, cycles and step cycles of the stub."""
    sums = codes.sum(axis=1)
    logits = sums[:, None] * np.arange(1, NUM_CLASSES + 1) - K
    return logits, (sums & WAIT_MASK) + 2, np.stack([(sums & WAIT_MASK) + 1, np.ones_like(sums)], axis=1)


def amaranth_run(codes, steps=None):
    """The stub on Amaranth's simulator, driven and counted as the network core is."""
    return run_core(StubCore(), codes, NUM_CLASSES, steps=steps)


@pytest.fixture(scope="module")
def stub_build(tmp_path_factory):
    text = runner.verilog_text(StubCore(), name="network_core")
    return build_batch(text, input_bits=INPUT_BITS, num_classes=NUM_CLASSES, logit_bits=LOGIT_BITS,
                       build_root=tmp_path_factory.mktemp("batch"))


def images(n, seed=0):
    codes = np.random.default_rng(seed).integers(0, 1 << INPUT_BITS, size=(n, N_INPUTS))
    codes[:, 0] |= 1  # a zero sum hangs the stub
    codes[0] = [15] * N_INPUTS  # the largest logit: 135 * 5 - 300
    codes[1] = [1] + [0] * (N_INPUTS - 1)  # the smallest: 1 - 300
    return codes


@pytest.mark.parametrize("jobs", [1, 2])
def test_logits_and_cycles_are_exact(stub_build, jobs):
    codes = images(11)
    want_logits, want_cycles, want_steps = expected(codes)
    assert (want_logits < 0).any() and (want_logits > 0).any() and len(set(want_cycles)) > 3
    logits, cycles, steps = run_batch(stub_build, codes, cycle_limit=20, steps=STEPS, jobs=jobs, progress=False)
    assert logits.dtype == np.int64 and cycles.dtype == np.int64 and steps.dtype == np.int64
    np.testing.assert_array_equal(logits, want_logits)
    np.testing.assert_array_equal(cycles, want_cycles)
    np.testing.assert_array_equal(steps, want_steps)
    # without steps, step_done is not watched and the result is (logits, cycles)
    logits, cycles = run_batch(stub_build, codes, cycle_limit=20, jobs=jobs, progress=False)
    np.testing.assert_array_equal(logits, want_logits)
    np.testing.assert_array_equal(cycles, want_cycles)


def test_the_counts_are_amaranth_sims(stub_build):
    codes = images(4, seed=6)
    want_logits, want_cycles = amaranth_run(codes)
    np.testing.assert_array_equal(want_logits, expected(codes)[0])
    np.testing.assert_array_equal(want_cycles, expected(codes)[1])
    logits, cycles = run_batch(stub_build, codes, cycle_limit=20, jobs=1, progress=False)
    np.testing.assert_array_equal(logits, want_logits)
    np.testing.assert_array_equal(cycles, want_cycles)


def test_the_step_counts_are_amaranth_sims(stub_build):
    codes = images(5, seed=9)
    want_logits, want_cycles, want_steps = amaranth_run(codes, steps=STEPS)
    np.testing.assert_array_equal(want_steps, expected(codes)[2])
    np.testing.assert_array_equal(want_steps.sum(axis=1), want_cycles)
    assert len(set(want_steps[:, 0].tolist())) > 2
    logits, cycles, steps = run_batch(stub_build, codes, cycle_limit=20, steps=STEPS, jobs=2, progress=False)
    np.testing.assert_array_equal(logits, want_logits)
    np.testing.assert_array_equal(cycles, want_cycles)
    np.testing.assert_array_equal(steps, want_steps)


@pytest.mark.parametrize("jobs", [1, 2])
def test_another_number_of_steps_fails(stub_build, jobs):
    codes = images(4, seed=10)
    with pytest.raises(UserError, match=r"^the network core ran another number of steps: image [02]: step_done was "
                                        r"high in 2 cycles of the run, expected 3 \(n_steps\)$"):
        run_batch(stub_build, codes, cycle_limit=20, steps=3, jobs=jobs, progress=False)
    with pytest.raises(RuntimeError, match=r"image 0: step_done was high in 2 cycles of the run .*expected 1"):
        amaranth_run(codes[:1], steps=1)


def test_more_jobs_than_images_and_no_images(stub_build):
    codes = images(2, seed=1)
    logits, cycles = run_batch(stub_build, codes, cycle_limit=20, jobs=5, progress=False)
    np.testing.assert_array_equal(logits, expected(codes)[0])
    logits, cycles = run_batch(stub_build, codes[:0], cycle_limit=20)
    assert logits.shape == (0, NUM_CLASSES) and cycles.shape == (0,)
    logits, cycles, steps = run_batch(stub_build, codes[:0], cycle_limit=20, steps=STEPS)
    assert logits.shape == (0, NUM_CLASSES) and cycles.shape == (0,) and steps.shape == (0, STEPS)


def test_progress_lines(stub_build, capfd):
    run_batch(stub_build, images(20, seed=2), cycle_limit=20, jobs=2, progress=True)
    err = capfd.readouterr().err
    assert "[job 1/2] batch: 10/10 images (0..9)" in err and "[job 2/2] batch: 10/10 images (10..19)" in err


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_hang_names_the_image(stub_build, jobs):
    codes = images(6, seed=3)
    codes[4] = 0
    with pytest.raises(UserError, match=r"^the network core hung: image 4: no done within 20 cycles of start "
                                        r"\(cycle limit\); raise cycle_limit \(now 20\)"):
        run_batch(stub_build, codes, cycle_limit=20, jobs=jobs, progress=False)


def test_a_limit_below_the_run_is_a_hang(stub_build):
    codes = images(3, seed=4)
    limit = int(expected(codes)[1].min()) - 1
    with pytest.raises(UserError, match=f"image 0: no done within {limit} cycles"):
        run_batch(stub_build, codes, cycle_limit=limit, jobs=1, progress=False)


def test_out_of_range_codes_are_a_user_error(stub_build):
    codes = images(3)
    codes[2, 1] = 1 << INPUT_BITS
    with pytest.raises(UserError, match=r"image 2 has input codes outside 0\.\.15"):
        run_batch(stub_build, codes, cycle_limit=20)


def test_the_build_is_reused(stub_build):
    stamp = stub_build.executable.stat().st_mtime_ns
    text = (stub_build.build_dir / "network_core.v").read_text()
    again = build_batch(text, input_bits=INPUT_BITS, num_classes=NUM_CLASSES, logit_bits=LOGIT_BITS,
                        build_root=stub_build.build_dir.parent)
    assert again == stub_build and again.executable.stat().st_mtime_ns == stamp


def test_port_mismatches_are_one_line():
    text = runner.verilog_text(StubCore(), name="network_core")
    with pytest.raises(UserError, match=r"port in_data is input \[4 bits\], expected input \[8 bits\]"):
        check_ports(text, input_bits=8, num_classes=NUM_CLASSES, logit_bits=LOGIT_BITS)
    with pytest.raises(UserError, match=r"logit_data is output \[12 bits\], expected output \[16 bits\]"):
        check_ports(text, input_bits=INPUT_BITS, num_classes=NUM_CLASSES, logit_bits=16)
    with pytest.raises(UserError, match="logit_addr of at least 4 bits for num_classes=10"):
        check_ports(text, input_bits=INPUT_BITS, num_classes=10, logit_bits=LOGIT_BITS)
    with pytest.raises(UserError, match="has no port step_done"):
        check_ports(text.replace("step_done", "step_over"), input_bits=INPUT_BITS, num_classes=NUM_CLASSES,
                    logit_bits=LOGIT_BITS)
    with pytest.raises(UserError, match="has no module network_core"):
        check_ports(runner.verilog_text(StubCore(), name="core"), input_bits=4, num_classes=5, logit_bits=12)
    with pytest.raises(UserError, match="cannot read the network core's Verilog"):
        build_batch("no/such/file.v", input_bits=4, num_classes=5, logit_bits=12)


def test_a_waves_build_writes_a_trace(tmp_path):
    text = runner.verilog_text(StubCore(), name="network_core")
    build = build_batch(text, input_bits=INPUT_BITS, num_classes=NUM_CLASSES, logit_bits=LOGIT_BITS,
                        build_root=tmp_path, waves=True)
    codes = images(2, seed=5)
    trace = tmp_path / "run.vcd"
    logits, cycles, steps = run_batch(build, codes, cycle_limit=20, steps=STEPS, jobs=2, progress=False, trace=trace)
    np.testing.assert_array_equal(cycles, expected(codes)[1])
    np.testing.assert_array_equal(steps, expected(codes)[2])
    head = trace.read_text()[:20000]
    assert "$scope module network_core" in head and " done " in head and " step_done " in head


def test_tracing_needs_a_waves_build(stub_build, tmp_path):
    with pytest.raises(UserError, match=r"waves=True"):
        run_batch(stub_build, images(2), cycle_limit=20, trace=tmp_path / "x.vcd")


def test_the_network_core_matches_amaranth_sim(trained_runs, tmp_path):
    """The real core for the digits CNN: exact logits, cycles and step cycles against sim.amaranth_sim."""
    from hw.network import NetworkCore
    from hw.program import STEP_OVERHEAD, NetworkProgram
    from core.artifact import load_artifact
    from sim.amaranth_sim import run_network

    network = load_artifact(trained_runs.artifact).network
    program = NetworkProgram(network, rows=8, cols=4)
    build = build_batch(runner.verilog_text(NetworkCore(program), name="network_core"),
                        input_bits=program.cfg.abits, num_classes=program.num_classes,
                        logit_bits=program.logit_bits, build_root=tmp_path)
    x = np.random.default_rng(8).integers(0, 1 << program.cfg.abits, size=(5, *network.input_shape))
    codes = np.stack([np.fromiter(program.packer.stream(xi), dtype=np.int64) for xi in x])
    logits, cycles, steps = run_batch(build, codes, cycle_limit=10 * program.cycles(), steps=len(program.steps),
                                      jobs=2, progress=False)
    assert (cycles == program.cycles()).all()
    assert steps.tolist() == [[s.plan.cycles() + STEP_OVERHEAD for s in program.steps]] * len(x)
    want_logits, want_cycles, want_steps = run_network(program, x[:2], per_step=True)
    np.testing.assert_array_equal(logits[:2], want_logits)
    np.testing.assert_array_equal(cycles[:2], want_cycles)
    np.testing.assert_array_equal(steps[:2], want_steps)
