"""QAT vs float training step time for the MNIST CNN, measured side by side in one run.

Prints the per-step times and their ratio (target: QAT/float <= 1.3).  Float and QAT steps
alternate in rounds so that load from other processes hits both alike; the ratio is the
median of the per-round ratios.

Usage: python bench/train_speed.py [--data-dir MNIST_DIR] [--rounds 7] [--steps 20]
"""

import argparse
import pathlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from quant.config import TrainConfig  # noqa: E402
from quant.data import load_mnist_dir  # noqa: E402
from quant.runs import build_network  # noqa: E402


def step_time(net, opt, xs, ys):
    t0 = time.perf_counter()
    for x, y in zip(xs, ys):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / len(xs)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist-10k"),
                   help="MNIST IDX folder (random 28x28 images if absent)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=20, help="steps per round and model")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--method", default="pow2")
    p.add_argument("--wbits", type=int, default=4)
    p.add_argument("--abits", type=int, default=4)
    p.add_argument("--threads", default=f"1,{torch.get_num_threads()}", help="comma-separated torch thread counts")
    args = p.parse_args()
    torch.manual_seed(0)
    n = args.steps * args.batch_size
    if pathlib.Path(args.data_dir).is_dir():
        ds = load_mnist_dir(args.data_dir)
        x, y, source = ds.train_x[:n], ds.train_y[:n], f"MNIST ({args.data_dir})"
    else:
        x, y, source = torch.rand(n, 1, 28, 28), torch.randint(0, 10, (n,)), "random 28x28 images"
    xs, ys = x.split(args.batch_size), y.split(args.batch_size)
    cfgs = {"float": TrainConfig(method="float"),
            "qat": TrainConfig(method=args.method, wbits=args.wbits, abits=args.abits)}
    nets = {k: build_network(c, (1, 28, 28)) for k, c in cfgs.items()}
    nets["qat"].calibrate(x[:256])
    opts = {k: torch.optim.Adam(n.parameters(), lr=1e-3) for k, n in nets.items()}
    for k in nets:  # warm-up
        nets[k].train()
        step_time(nets[k], opts[k], xs[:3], ys[:3])
    print(f"train step time, small CNN on {source}, batch {args.batch_size}, "
          f"{args.rounds} rounds x {args.steps} steps per model, alternating")
    print("| torch threads | float32 ms/step | QAT " + f"{args.method} W{args.wbits}/A{args.abits} ms/step | QAT/float |")
    print("|---|---|---|---|")
    for threads in sorted({int(t) for t in args.threads.split(",")}):
        torch.set_num_threads(threads)
        times = {k: [] for k in nets}
        for _ in range(args.rounds):
            for k in nets:
                times[k].append(step_time(nets[k], opts[k], xs, ys))
        ratio = statistics.median(q / f for q, f in zip(times["qat"], times["float"]))
        print(f"| {threads} | {1e3 * statistics.median(times['float']):.2f} | "
              f"{1e3 * statistics.median(times['qat']):.2f} | {ratio:.3f} |")
    print("target: QAT/float <= 1.3 (ratio = median of per-round ratios)")


if __name__ == "__main__":
    main()
