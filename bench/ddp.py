"""Training step time of 1 process vs 2 processes under torchrun, on the same config, side by side in one run.

Each setup trains the same run with ``python -m quant.train`` (the 2-process one under
``torchrun --standalone --nproc_per_node 2``; ``--batch-size`` is the global batch in both).
The time of an epoch's training loop (``seconds`` in ``log.jsonl``: forward, backward, the
all-reduces and optimiser steps, no evaluation or checkpoint) over its steps gives the
seconds per optimiser step; the first epoch is warm-up and not counted.  Setups alternate in
rounds so that load from other processes hits all alike; figures are medians over rounds and
epochs.

Usage: python bench/ddp.py [--data-dir MNIST_DIR] [--methods float,pow2] [--batch-size 64]
                           [--epochs 3] [--rounds 2] [--threads 1]
"""

import argparse
import json
import math
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from quant.data import load_dataset  # noqa: E402


def run(cmd, threads):
    """Run ``cmd`` in its own process group (killed afterwards: no worker outlives it)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.returncode != 0:
        raise SystemExit(f"bench/ddp.py: {' '.join(cmd)} failed:\n{out}")


def epoch_seconds(out):
    """Seconds of every epoch's training loop after the first."""
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [line["seconds"] for line in log[1:]]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist-10k"),
                   help="MNIST IDX folder (the bundled digits if absent)")
    p.add_argument("--methods", default="float,pow2", help="comma list of quant.train methods")
    p.add_argument("--batch-size", type=int, default=64, help="the global batch")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is warm-up)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", default="1", help="comma list of torch threads for the 1-process setup "
                                                  "(2 processes always run 1 thread each, as torchrun sets)")
    args = p.parse_args()
    if args.epochs < 2:
        raise SystemExit("bench/ddp.py: --epochs must be at least 2 (the first is warm-up)")

    if pathlib.Path(args.data_dir).is_dir():
        data = ["--data", "mnist", "--data-dir", args.data_dir]
        ds = load_dataset("mnist", args.data_dir)
    else:
        data = ["--data", "digits"]
        ds = load_dataset("digits")
    n = ds.train_x.shape[0]
    steps = math.ceil(n / args.batch_size)
    setups = [(f"1 process, {t} thread{'s' if t > 1 else ''}", [sys.executable, "-m", "quant.train"], t)
              for t in sorted({int(t) for t in args.threads.split(",")})]
    setups.append(("2 processes (torchrun), 1 thread each",
                   [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    "-m", "quant.train"], 1))
    methods = args.methods.split(",")

    times = {(m, name): [] for m in methods for name, _, _ in setups}
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        for r in range(args.rounds):
            for m in methods:
                for i, (name, cmd, threads) in enumerate(setups):
                    out = pathlib.Path(tmp) / f"{m}-{i}-{r}"
                    quant = ["--wbits", "4", "--abits", "4"] if m != "float" else []
                    run(cmd + [*data, "--model", "cnn", "--method", m, *quant, "--epochs", str(args.epochs),
                               "--batch-size", str(args.batch_size), "--out", str(out), "--no-progress"], threads)
                    times[(m, name)] += epoch_seconds(out)
                    print(f"round {r + 1}/{args.rounds}  {m:8s} {name}: "
                          f"{statistics.median(times[(m, name)]) / steps * 1e3:.1f} ms/step", file=sys.stderr)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"train step time, cnn on {ds.describe()}; global batch {args.batch_size} ({steps} steps per epoch); "
          f"median of {args.rounds} rounds x {args.epochs - 1} epochs; {os.cpu_count()} cores, "
          f"load average {load:.2f} at the end")
    print("| method | setup | s/step | images/s | speed-up vs 1 process, 1 thread |")
    print("|---|---|---|---|---|")
    for m in methods:
        base = statistics.median(times[(m, setups[0][0])])
        for name, _, _ in setups:
            sec = statistics.median(times[(m, name)])
            label = m if m == "float" else f"{m} W4/A4"
            print(f"| {label} | {name} | {sec / steps:.4f} | {n / sec:.0f} | {base / sec:.2f}x |")


if __name__ == "__main__":
    main()
