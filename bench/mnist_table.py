"""The README's MNIST results table: train float models, quantise them per row, print the table.

Each row: 8 float epochs, then 8 QAT epochs with ``--init-from`` the float run; the figures
are read from each run's ``summary.json`` (about 2 minutes on 2 cores).

Usage: python bench/mnist_table.py [--data-dir MNIST_DIR] [--out runs/mnist-table] [--epochs 8]
"""

import argparse
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from quant import train  # noqa: E402

ROWS = [  # (model, method, wbits, abits, terms, label)
    ("cnn", "pow2", 4, 4, 1, "pow2 W4/A4"),
    ("cnn", "pow2", 4, 4, 2, "pow2 W4/A4, 2 terms"),
    ("cnn", "pow2", 3, 4, 1, "pow2 W3/A4"),
    ("cnn", "pow2", 2, 4, 1, "pow2 W2/A4 (ternary)"),
    ("cnn", "uniform", 4, 4, 1, "uniform W4/A4 (2-term CSD)"),
    ("mlp", "pow2", 4, 4, 1, "pow2 W4/A4"),
]
NAMES = {"cnn": "CNN 16/32", "mlp": "MLP 128/64"}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist-10k"))
    p.add_argument("--out", default="runs/mnist-table")
    p.add_argument("--epochs", type=int, default=8)
    args = p.parse_args()
    out = pathlib.Path(args.out)
    common = ["--data", "mnist", "--data-dir", args.data_dir, "--no-progress", "--epochs", str(args.epochs)]
    for model in sorted({r[0] for r in ROWS}):
        train.main(common + ["--model", model, "--method", "float", "--out", str(out / f"{model}-float")])
    lines = ["| data | model | method | float | quantised (PyTorch) | integer reference | logit mismatches |",
             "|---|---|---|---|---|---|---|"]
    for model, method, wbits, abits, terms, label in ROWS:
        run = out / f"{model}-{method}-w{wbits}a{abits}t{terms}"
        train.main(common + ["--model", model, "--method", method, "--wbits", str(wbits), "--abits", str(abits),
                             "--terms", str(terms), "--init-from", str(out / f"{model}-float"), "--out", str(run)])
        s = json.loads((run / "summary.json").read_text())
        lines.append(f"| mnist ({s['test_images']} test) | {NAMES[model]} | {label} | {100 * s['float_accuracy']:.2f} % | "
                     f"{100 * s['quantized_accuracy']:.2f} % | {100 * s['reference_accuracy']:.2f} % | "
                     f"{s['logit_mismatches']} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
