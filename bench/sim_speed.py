"""Simulated cycles per second of an 8x8 array: cocotb on Verilator vs Amaranth's Python simulator.

Both stream the same number of random activation vectors back to back through the same
design and check every result against the golden model; the figure is cycles of the
stream divided by its wall time (builds and elaboration excluded, reported apart).
Run: python bench/sim_speed.py [--rows 8 --cols 8 --vectors 4000]
"""

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from core.hwconfig import HwConfig  # noqa: E402
from sim.amaranth_sim import run_array  # noqa: E402
from sim.cocotb_array import random_problem  # noqa: E402
from sim.simulate import simulate  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--vectors", type=int, default=4000)
    parser.add_argument("--pipeline", action="store_true")
    args = parser.parse_args()
    cfg = HwConfig(rows=args.rows, cols=args.cols, abits=4, wbits=4, terms=1, max_fan_in=args.rows,
                   pipeline=args.pipeline)

    with tempfile.TemporaryDirectory() as tmp:
        report = pathlib.Path(tmp) / "speed.json"
        t = time.perf_counter()
        simulate(cfg, "array", "sim.cocotb_array", "throughput",
                 {"seed": 0, "vectors": args.vectors, "report": str(report)})
        verilator_total = time.perf_counter() - t
        v = json.loads(report.read_text())

    rng = np.random.default_rng(0)
    w_codes, w, a, s = random_problem(rng, cfg, args.vectors)
    t = time.perf_counter()
    got, cycles = run_array(cfg, w_codes, a, s)
    amaranth_seconds = time.perf_counter() - t
    assert np.array_equal(got, s + a @ w), "Amaranth simulation differs from the golden model"

    rows = [
        ("cocotb + Verilator", v["cycles"], v["seconds"], v["cycles"] / v["seconds"]),
        ("Amaranth (pysim)", cycles, amaranth_seconds, cycles / amaranth_seconds),
    ]
    print(f"{cfg.rows}x{cfg.cols} array, {args.vectors} vectors, latency {cfg.latency}")
    print(f"{'simulator':<20} {'cycles':>8} {'seconds':>8} {'cycles/s':>10}")
    for name, c, sec, rate in rows:
        print(f"{name:<20} {c:>8} {sec:>8.2f} {rate:>10.0f}")
    print(f"cocotb+Verilator / Amaranth = {rows[0][3] / rows[1][3]:.1f}x "
          f"(Verilator build and run, total {verilator_total:.1f} s)")


if __name__ == "__main__":
    main()
