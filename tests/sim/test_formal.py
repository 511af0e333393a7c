"""Formal proofs (sim.proofs, sim.protocol_proof, sim.sby, python -m sim.formal): the contract's logic equals
core.arith, small designs are proven, a broken PE is caught with a counterexample, the planner refuses the next
fan-in; the host link's frame check is proven and a link with one CRC bit unchecked is caught."""

import itertools
from unittest import mock

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.sim import Simulator

from core import arith
from core import protocol as P
from core.hwconfig import HwConfig
from hw import array as array_module
from hw import link as link_module
from hw import pe as pe_module
from hw.link import HostLink
from hw.pe import ShiftPE
from sim import formal, proofs, protocol_proof, sby

RANDOM = proofs.random_configs(20)
#: the random designs whose arrays the quick suite proves: the smallest few (every one is
#: proven in the slow suite and by `python -m sim.formal`)
SMALL_ARRAYS = sorted(RANDOM, key=lambda c: (c.rows * c.cols * c.terms, c.wbits))[:6]


class FlippedShiftPE(ShiftPE):
    """A ShiftPE whose datapath reads bit 0 of every term's shift field flipped (its weight
    register and chain are untouched): a one-bit bug in the shift."""

    def elaborate(self, platform):
        real = pe_module.shifted_terms

        def flipped(m, a, code, cfg, *, name):
            return real(m, a, code ^ sum(1 << (t * cfg.wbits) for t in range(cfg.terms)), cfg, name=name)

        with mock.patch.object(pe_module, "shifted_terms", flipped):
            return super().elaborate(platform)


def evaluate(build, inputs):
    """Values of the combinational ``out = build(m, *signals)`` for each tuple of ``inputs``."""
    m = Module()
    shapes, values = inputs
    sigs = [Signal(s, name=f"in{i}") for i, s in enumerate(shapes)]
    out = build(m, *sigs)
    got = []

    async def bench(ctx):
        for vals in values:
            for sig, v in zip(sigs, vals):
                ctx.set(sig, v)
            got.append(ctx.get(out))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return got


def test_the_requantiser_spec_is_core_arith():
    """The one formula the harnesses write as logic equals core.arith.requantize."""
    cfg = HwConfig(rows=2, cols=2, abits=3, wbits=3, max_fan_in=4, max_left=3)
    rng = np.random.default_rng(0)
    cases = []
    for shift, relu, out_bits in itertools.product(range(-cfg.max_left, cfg.acc_bits + 1), (0, 1),
                                                   range(1, cfg.abits + 1)):
        if not relu and shift > 0:
            continue
        for acc in list(rng.integers(-2 ** (cfg.acc_bits - 1), 2 ** (cfg.acc_bits - 1), 6)) + [-1, 0, 1]:
            cases.append((int(acc), shift, relu, arith.act_max(out_bits)))

    def build(m, acc, shift, relu, amax):
        return proofs.requantize_expr(m, acc, shift, relu, amax, max_left=cfg.max_left, max_right=cfg.acc_bits)

    got = evaluate(build, ((signed(cfg.acc_bits), signed(cfg.rq_bits), 1, cfg.abits), cases))
    want = [int(arith.requantize(acc, s, bool(r), amax.bit_length())) for acc, s, r, amax in cases]
    assert got == want


@pytest.mark.parametrize("cfg", [HwConfig(abits=3, wbits=3, terms=2, max_fan_in=4),
                                 HwConfig(abits=2, wbits=4, terms=1, max_fan_in=4)], ids=["W3x2", "W4x1"])
def test_the_product_model_is_core_arith(cfg):
    """The model's product of an activation and a PE's code is a * weight_value(decode_terms(code))."""
    cases = list(itertools.product(range(2**cfg.abits), range(2**cfg.code_bits)))
    got = evaluate(lambda m, a, code: proofs.product_expr(a, code, cfg), ((cfg.abits, cfg.code_bits), cases))
    assert got == [a * proofs.weight_of(code, cfg) for a, code in cases]


def run(jobs, tmp_path):
    return proofs.run_proofs(jobs, tmp_path, workers=2, timeout=600)


def report(results):
    return "\n".join(formal.table(results) + [f"{r.block} {r.config}: {r.status} {r.detail}"
                                              for r in results if not r.passed])


def test_random_designs_are_proven(tmp_path):
    """PE, requantiser and widths on all 20 random designs, the array on the smallest six."""
    configs = [(f"random {i}", cfg) for i, cfg in enumerate(RANDOM)]
    jobs = proofs.jobs_for(configs, ("pe", "requantizer", "widths"))
    jobs += proofs.jobs_for([(f"small {i}", cfg) for i, cfg in enumerate(SMALL_ARRAYS)], ("array",))
    results = run(jobs, tmp_path)
    assert all(r.passed for r in results), report(results)


def test_a_pe_with_one_shift_bit_flipped_fails_with_a_counterexample(tmp_path):
    cfg = HwConfig(rows=2, cols=2, abits=4, wbits=4, max_fan_in=16)
    [result] = run([("broken", proofs.PEProof(cfg, make_pe=FlippedShiftPE))], tmp_path)
    assert result.status == "FAIL"
    assert result.trace is not None and result.trace.is_file() and result.trace.suffix == ".vcd"
    # in the contract's terms: the activation, the code as sign and shift, expected and got
    assert "activation code" in result.detail and "weight code 0b" in result.detail, result.detail
    assert "2**" in result.detail and "expected s_out" in result.detail and ", got " in result.detail, result.detail
    expected = int(result.detail.split(" = ")[-1].split(",")[0])
    got = int(result.detail.split(", got ")[1].split()[0])
    assert expected != got


def test_an_array_of_broken_pes_fails_with_a_counterexample(tmp_path):
    cfg = HwConfig(rows=2, cols=1, abits=3, wbits=3, max_fan_in=4)
    with mock.patch.object(array_module, "ShiftPE", FlippedShiftPE):
        [result] = run([("broken", proofs.ArrayProof(cfg))], tmp_path)
    assert result.status == "FAIL" and result.trace.is_file()
    # the first register off the schedule, in the contract's terms
    assert result.detail.startswith("PE (0, 0): the partial sum"), result.detail
    assert "should be " in result.detail and ", it holds " in result.detail, result.detail


def test_one_bit_less_than_acc_bits_is_not_proven(tmp_path):
    cfg = HwConfig(rows=2, cols=2, abits=3, wbits=3, max_fan_in=12)
    [result] = run([("short", proofs.AccumulatorProof(cfg, bits=cfg.acc_bits - 1))], tmp_path)
    assert not result.passed


@pytest.mark.parametrize("cfg", [proofs.network_config("demo"), proofs.network_config("mnist")] + RANDOM,
                         ids=lambda c: proofs.label(c).replace(" ", "_"))
def test_the_planner_refuses_the_next_larger_fan_in(cfg):
    assert proofs.planner_check(cfg) == []


def test_the_network_configs_are_the_planners():
    demo, mnist = proofs.network_config("demo"), proofs.network_config("mnist")
    assert (demo.rows, demo.cols, demo.abits, demo.wbits, demo.max_fan_in) == (8, 8, 4, 4, 16 * 3 * 3)
    assert (mnist.rows, mnist.cols, mnist.abits, mnist.wbits, mnist.max_fan_in) == (8, 4, 4, 2, 32 * 7 * 7)


def test_the_command_prints_the_table(tmp_path, capsys):
    formal.main(["--configs", "random", "--random", "1", "--blocks", "pe,requantizer,protocol", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| block | config | mode | result | seconds |" in out
    assert "| pe | random 0: " in out and "| pass |" in out and "4 of 4 proven" in out
    assert "| protocol | random 0: link " in out and "| cover 19 | pass |" in out
    assert (tmp_path / "results.md").is_file() and (tmp_path / "results.json").is_file()
    job = next(tmp_path.glob("pe-random-0*"))
    assert {"design.il", "job.sby", "run.sh"} <= {p.name for p in job.iterdir()}


def test_the_command_refuses_an_unknown_block(capsys):
    with pytest.raises(SystemExit) as exc:
        formal.main(["--blocks", "pe,alu"])
    assert exc.value.code == 2 and "unknown block alu" in capsys.readouterr().err


# --- the host link's frame check --------------------------------------------------------------

class CrcBitDroppedLink(HostLink):
    """A HostLink whose CRC check ignores bit 0 of the CRC residue: a frame whose CRC is off
    by exactly that bit passes."""

    def elaborate(self, platform):
        with mock.patch.object(link_module, "crc_matches", lambda crc_after: crc_after[1:] == 0):
            return super().elaborate(platform)


def test_the_crc_spec_is_core_protocol():
    """The shadow's CRC step, written from the polynomial, is core.protocol.crc8's table step."""
    cases = list(itertools.product(range(256), (0x00, 0x5A, 0xA5)))
    got = evaluate(lambda m, crc, byte: protocol_proof.crc8_spec(crc, byte), ((8, 8), cases))
    assert got == [P.crc8(bytes([byte]), crc) for crc, byte in cases]


def test_the_links_frame_check_is_proven(tmp_path):
    """The demo's and MNIST's links and a small random one, by induction: for every frame;
    and the small one does start the engine, on a frame core.protocol calls good."""
    jobs = protocol_proof.protocol_jobs(["demo", "mnist", "random"], random_count=1, seed=0)
    results = run(jobs, tmp_path)
    assert [r.mode for r in results] == ["prove"] * 3 + ["cover"]
    assert all(r.passed for r in results), report(results)
    reach, lc = results[-1], jobs[-1][1].cfg
    [trace] = (reach.folder / "job").glob("engine_*/trace*.vcd")
    steps = sby.read_vcd_steps(trace)
    assert steps[-1]["start"] == 1 and len(steps) == protocol_proof.first_start(lc)
    line = bytes(s["byte_data"] for s in steps if s["byte_valid"])
    [frame] = P.FrameDecoder().feed(line[line.index(P.SYNC):])
    assert frame.crc_ok and frame.type == P.CLASSIFY and len(frame.payload) == lc.n_inputs
    assert max(frame.payload) < 2**lc.input_bits


def test_a_link_with_one_crc_bit_unchecked_fails_with_a_counterexample(tmp_path):
    lc = P.ModelInfo(input_shape=(1, 1, 2), input_bits=4, num_classes=3, logit_bits=8, model_id=0)
    proof = protocol_proof.ProtocolProof(lc, depth=protocol_proof.first_start(lc),
                                         make_link=lambda lc: protocol_proof.build_link(lc, CrcBitDroppedLink))
    [result] = run([("broken", proof)], tmp_path)
    assert result.status == "FAIL" and result.trace.is_file(), report([result])
    # in the protocol's terms: the frame's bytes, the CRC expected and the one received
    detail = result.detail
    assert "start the engine" in detail and " on frame a5 " in detail, detail
    frame = bytes.fromhex(detail.split(" on frame ")[1].split(":")[0])
    expected = int(detail.split("expected CRC ")[1].split()[0], 16)
    received = int(detail.split("received ")[1].split(";")[0], 16)
    assert frame[-1] == received and expected == P.crc8(frame[1:-1]) != received
    # the one frame such a link lets through: CLASSIFY, LEN right, a residue of exactly bit 0
    assert frame[1] == P.CLASSIFY and frame[2] | frame[3] << 8 == lc.n_inputs == len(frame) - 5
    assert P.crc8(frame[1:]) == 0x01


@pytest.mark.slow
def test_the_demo_and_mnist_designs_are_proven(tmp_path):
    """Every block of the MNIST design (8x4), the PE, requantiser and widths of the demo's
    (its 8x8 array at W4 takes the solver far longer: `python -m sim.formal --configs demo`)."""
    jobs = proofs.jobs_for([("mnist", proofs.network_config("mnist"))], proofs.DEFAULT_BLOCKS)
    jobs += proofs.jobs_for([("demo", proofs.network_config("demo"))], ("pe", "requantizer", "widths"))
    results = run(jobs, tmp_path)
    assert all(r.passed for r in results), report(results)


@pytest.mark.slow
def test_every_random_array_is_proven(tmp_path):
    configs = [(f"random {i}", cfg) for i, cfg in enumerate(RANDOM)]
    results = run(proofs.jobs_for(configs, ("array",)), tmp_path)
    assert all(r.passed for r in results), report(results)
