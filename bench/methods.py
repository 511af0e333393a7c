"""Every quantisation method at 2, 3 and 4 weight bits, weight-only and with 4-bit activations,
on digits and MNIST, at equal hardware cost per table, 3 seeds each: ``docs/results.md`` and a plot.

Per dataset and seed one float run (``--float-epochs``) is the starting point of every method's
run of that seed, and also ``distill``'s teacher (its default; docs/methods.md).  Each method then
trains the epochs its source prescribes (:data:`EPOCHS`: ``dbs`` the source's 15-epoch schedule,
every other method ``--epochs``; ``ptq`` none).  "Weight-only" means 8-bit activations: the
hardware has no float activations, and 8 bits is its widest.

Hardware cost: a weight is ``terms`` codes of ``wbits`` bits, each a shift.  Tables hold one
``terms`` each (1-term and 2-term methods are not compared in one table), and their columns are
``wbits``, so every cell of a column costs the same.  TTQ is ternary whatever the code width
(the width only limits its two scales), so it runs at W2 only.

Each run exports its artifact and the integer reference runs the whole test split; the tables
give the integer model's accuracy (mean ± standard deviation over the seeds); the full table gives
every run with the PyTorch quantised accuracy (which the integer model must equal) and the logits
that differ (must be 0).  Runs are cached in ``--out``: a repeated invocation trains only what is
missing.

Usage::

    python bench/methods.py [--data-dir MNIST_DIR] [--jobs 2]      # the full comparison (about an hour on 2 cores)
    python bench/methods.py --quick --out DIR --doc DIR/results.md  # every method, one tiny case (make test)
"""

import argparse
import dataclasses
import pathlib
import statistics
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from quant import runs  # noqa: E402
from quant.config import TrainConfig  # noqa: E402
from core.errors import UserError, cli_main  # noqa: E402
from core.fileio import write_atomic  # noqa: E402
from quant.methods import METHODS, method_class  # noqa: E402
from quant.methods.ptq import PTQ, RANGES, quantize  # noqa: E402
from quant.runs import finished as cached  # noqa: E402
from quant.training import evaluate, train_all as run_all  # noqa: E402

QUANT_METHODS = [m for m in METHODS if m != "float"]
#: terms each method runs with (APoT's levels are sums of two powers of two); uniform, stochastic
#: and lsq store integers, which the export writes in canonical signed digits: 2 terms from W3 on
TERMS = {"apot": 2}
#: epochs each method trains when its source prescribes them (DBS: its 15-epoch eps schedule)
EPOCHS = {"dbs": 15}
#: weight bits a method is compared at (TTQ is ternary: its code width only limits its scales)
ONLY_WBITS = {"ttq": (2,)}
#: the plot's accuracy axis spans this many points below float; lower results sit on its edge, labelled
WINDOW = 12
#: what the README's shared data folder is called, relative to the project
DEFAULT_MNIST = REPO.parent / "shared" / "data" / "mnist-10k"


def method_epochs(method, args):
    if method == "ptq":
        return 0
    return args.epochs if args.quick else EPOCHS.get(method, args.epochs)


def run_config(data, data_dir, method, wbits, abits, epochs, out, init_from=None, seed=0):
    return TrainConfig(data=data, data_dir=data_dir, model="cnn", method=method, wbits=wbits, abits=abits,
                       terms=TERMS.get(method, 1), epochs=epochs, init_from=init_from, golden=8, seed=seed,
                       out=str(out)).validate()


def plan(args):
    """``(float_configs, method_configs)`` for the datasets, seeds, methods and bits asked for.

    The float configs are each dataset's float start per seed (also ``distill``'s teacher)."""
    floats, rows = [], []
    for data in args.datasets:
        data_dir = str(args.data_dir) if data == "mnist" else None
        base = args.out / data
        for seed in args.seeds:
            fcfg = TrainConfig(data=data, data_dir=data_dir, model="cnn", method="float", epochs=args.float_epochs,
                               seed=seed, out=str(base / f"float-s{seed}")).validate()
            floats.append(fcfg)
            for method in args.methods:
                only = ONLY_WBITS.get(method) or method_class(method).wbits_only
                for wbits in args.wbits:
                    if only is not None and wbits not in only:
                        continue
                    for abits in args.abits:
                        out = base / f"{method}-w{wbits}a{abits}-s{seed}"
                        rows.append(run_config(data, data_dir, method, wbits, abits, method_epochs(method, args), out,
                                               init_from=fcfg.out, seed=seed))
    return floats, rows


def collect(configs):
    """One row per finished run."""
    rows = []
    for c in configs:
        s = cached(c)
        rows.append({
            "data": c.data, "method": c.method, "wbits": c.wbits, "abits": c.abits, "terms": s["terms"],
            "seed": c.seed, "epochs": c.epochs if method_class(c.method).trains else 0,
            "float": s["float_accuracy"], "quantized": s["quantized_accuracy"],
            "integer": s["reference_accuracy"], "mismatches": s["logit_mismatches"],
            "predictions_differing": s["prediction_mismatches"], "test_images": s["test_images"],
            "seconds": s["train_seconds"],
        })
    return rows


def _pct(v):
    return f"{100 * v:.2f}"


def _mode(abits):
    return "weight-only (A8)" if abits == 8 else f"A{abits}"


def mean_sd(values):
    """``(mean, standard deviation)`` in percent of accuracies in [0, 1] (sd 0 for one value)."""
    pct = [100 * v for v in values]
    return statistics.fmean(pct), (statistics.stdev(pct) if len(pct) > 1 else 0.0)


def cell(rows):
    """A table cell: the integer model's mean accuracy ± standard deviation over the seeds."""
    if not rows:
        return ""
    m, sd = mean_sd([r["integer"] for r in rows])
    return f"{m:.2f} ± {sd:.2f}" if len(rows) > 1 else f"{m:.2f}"


def select(rows, **key):
    return [r for r in rows if all(r[k] == v for k, v in key.items())]


def pivot(rows, data, abits, terms, wbits_list):
    """Integer-model accuracy by method (rows) and weight bits (columns) for weights of ``terms`` shifts;
    a method with no run of that cost at some width has an empty cell."""
    sel = select(rows, data=data, abits=abits, terms=terms)
    cols = [w for w in wbits_list if select(sel, wbits=w)]
    if not cols:
        return []
    lines = ["| method | epochs | " + " | ".join(f"W{w}" for w in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for method in dict.fromkeys(r["method"] for r in sel):
        mine = select(sel, method=method)
        epochs = ", ".join(str(e) for e in sorted({r["epochs"] for r in mine}))
        cells = [cell(select(mine, wbits=w)) for w in cols]
        note = " (ternary)" if method in ONLY_WBITS else ""
        lines.append(f"| `{method}`{note} | {epochs} | " + " | ".join(cells) + " |")
    return lines


def full_table(rows):
    lines = ["| data | method | W | A | terms | seed | epochs | float | PyTorch quantised | integer model | "
             "delta vs float | logits differing | training s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['data']} | `{r['method']}` | {r['wbits']} | {r['abits']} | {r['terms']} | {r['seed']} | "
                     f"{r['epochs']} | {_pct(r['float'])} | {_pct(r['quantized'])} | {_pct(r['integer'])} | "
                     f"{100 * (r['integer'] - r['float']):+.2f} | {r['mismatches']} | {r['seconds']:.1f} |")
    return lines


def goals(rows, data):
    """The two accuracy goals on ``data`` on the seeds' means: best single-shift W4/A4, best ternary W2/A4."""
    sel = select(rows, data=data)
    if not sel:
        return []
    flt, _ = mean_sd([r["float"] for r in {(r["seed"]): r for r in sel}.values()])
    out = []
    for label, key, limit in (("best power-of-two (one shift per weight) W4/A4", dict(wbits=4, abits=4, terms=1), 0.3),
                              ("best ternary (W2) with 4-bit activations", dict(wbits=2, abits=4, terms=1), 1.0)):
        cand = {}
        for r in select(sel, **key):
            cand.setdefault(r["method"], []).append(r)
        if not cand:
            continue
        method, best = max(cand.items(), key=lambda kv: mean_sd([r["integer"] for r in kv[1]])[0])
        m, sd = mean_sd([r["integer"] for r in best])
        gap = flt - m
        where = (f"{gap:.2f} points below" if gap >= 0.005 else f"{-gap:.2f} points above" if gap <= -0.005
                 else "level")
        out.append(f"- {label}: `{method}` {m:.2f} ± {sd:.2f} % against float {flt:.2f} % "
                   f"({where}; goal: within {limit} points below: {'met' if gap <= limit + 1e-9 else 'NOT met'})")
    return out


def plot(rows, path, datasets, wbits_list, abits_list):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(datasets), len(abits_list), figsize=(6.5 * len(abits_list), 4.5 * len(datasets)),
                             squeeze=False)
    for i, data in enumerate(datasets):
        for j, abits in enumerate(abits_list):
            ax = axes[i][j]
            sel = select(rows, data=data, abits=abits)
            if not sel:
                continue
            flt, _ = mean_sd([r["float"] for r in {r["seed"]: r for r in sel}.values()])
            floor = flt - WINDOW
            colors = plt.get_cmap("tab20").colors
            pinned = {}  # x -> labels already written there
            k = 0
            for method in dict.fromkeys(r["method"] for r in sel):
                for terms in sorted({r["terms"] for r in select(sel, method=method)}):
                    mine = select(sel, method=method, terms=terms)
                    xs = sorted({r["wbits"] for r in mine})
                    stats = [mean_sd([r["integer"] for r in select(mine, wbits=w)]) for w in xs]
                    ys = [max(m, floor) for m, _ in stats]
                    style = dict(color=colors[k % len(colors)], marker="os^Dv<>ph*XP"[k % 12],
                                 linestyle="-" if terms == 1 else "--", capsize=3)
                    ax.errorbar(xs, ys, yerr=[sd for _, sd in stats], label=f"{method}" + (" (2 terms)" if terms > 1
                                                                                         else ""), **style)
                    k += 1
                    for x, (m, _) in zip(xs, stats):
                        if m < floor:  # off the scale: pinned to the bottom edge and labelled
                            n = pinned[x] = pinned.get(x, -1) + 1
                            ax.annotate(f"{method} {m:.1f}", (x, floor), textcoords="offset points",
                                        xytext=(6, 4 + 9 * n), fontsize=7, color=style["color"])
            ax.set_ylim(floor - 0.3, flt + 2.5)
            ax.axhline(flt, color="black", linestyle=":", label="float")
            ax.set_xticks(wbits_list)
            ax.set_xlabel("weight bits per term (dashed: 2 terms per weight)")
            ax.set_ylabel("integer-model test accuracy (%), mean ± sd")
            ax.set_title(f"{data}, {_mode(abits)}")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def write_doc(args, rows, extra_sections):
    seeds = ", ".join(map(str, args.seeds))
    budget = ", ".join(f"`{m}` {e}" for m, e in EPOCHS.items() if m in args.methods and not args.quick)
    lines = ["# Quantisation methods compared", "",
             f"Written by `python bench/methods.py{' --quick' if args.quick else ''}` (do not edit by hand).  "
             f"Model: the small CNN (`quant/models.py`, channels 16/32).  Per dataset and seed ({seeds}) one float "
             f"run of {args.float_epochs} epochs is the starting point of every method, and the teacher of "
             f"`distill`.  Each method then trains {args.epochs} epoch{'s' if args.epochs != 1 else ''}"
             + (f", except {budget} (the schedule its source prescribes)" if budget else "")
             + "; `ptq` trains none (Adam, cosine schedule, batch 64; INQ restarts it at each of its stages).  "
             "The integer model is the exported artifact run by the integer reference (`core/reference.py`) "
             "on the whole test split; it is the accuracy that counts, and it equals the PyTorch quantised "
             "accuracy in every run (see the last table).  Weight-only rows use 8-bit activations, the "
             "hardware's widest.", "",
             "**Equal hardware cost per table.**  A weight is `terms` codes of `W` bits, each one shift of the "
             "accumulator: one table per `terms`, one column per `W`, so every cell of a column costs the same "
             "storage and the same shifts.  1-term methods are powers of two; `uniform`, `stochastic` and `lsq` "
             "store integers, run as canonical signed digits (1 term at W2, 2 from W3), and `apot` sums two "
             "powers of two: from W3 on they are in the 2-term tables.  `ttq` is ternary at every code width "
             "(the width only limits its two scales), so it is compared at W2.  `dbs` at W2 is binary: the "
             "source's 2-bit code `{±1/2, ±1}` needs two shifts, a 3-bit code here (docs/methods.md).", "",
             f"Each cell is the mean ± standard deviation over the {len(args.seeds)} seed"
             f"{'s' if len(args.seeds) > 1 else ''}.  On a test split of n "
             "images an accuracy p also has a standard error of sqrt(p (1 - p) / n), about 0.35 points at 97.5 % "
             "on MNIST's 2,000 and 0.7 points at 98 % on digits' 360.", ""]
    for data in args.datasets:
        sel = select(rows, data=data)
        if not sel:
            continue
        flt, fsd = mean_sd([r["float"] for r in {r["seed"]: r for r in sel}.values()])
        lines += [f"## {data}: {sel[0]['test_images']} test images, float {flt:.2f} ± {fsd:.2f} %", ""]
        lines += goals(rows, data) + [""]
        for abits in args.abits:
            for terms in sorted({r["terms"] for r in sel}):
                table = pivot(rows, data, abits, terms, args.wbits)
                if table:
                    lines += [f"Integer-model accuracy (%), {_mode(abits)}, {terms} term{'s' if terms > 1 else ''} "
                              "per weight:", ""] + table + [""]
    lines += ["![accuracy against weight bits](" + args.plot.name + ")", ""] if args.plot else []
    lines += extra_sections
    lines += ["## Every run", ""] + full_table(rows) + [""]
    mism = sum(r["mismatches"] for r in rows) + sum(r["predictions_differing"] for r in rows)
    lines += [f"{len(rows)} runs; logits or predictions differing between PyTorch and the integer model: {mism}.", ""]
    write_atomic(args.doc, lambda tmp: pathlib.Path(tmp).write_text("\n".join(lines)))


def ptq_variants(cfg, dataset, float_net):
    """Test accuracy of every range rule x equalisation on/off x bias correction on/off.

    ``cfg`` gives the bits (``wbits``, ``abits``, ``terms``, ``per_channel``); ``float_net``
    is the float ``nn.Sequential`` (left unchanged).  Returns one dict per variant with keys
    ``wbits, abits, terms, range, cle, bias_correction, accuracy``.
    """
    rows = []
    for rule in RANGES:
        for cle in (False, True):
            for bc in (False, True):
                c = dataclasses.replace(cfg, method="ptq", ptq_range=rule, ptq_cle=cle, ptq_bias_correction=bc)
                net = runs.build_network(c, dataset.image_shape, dataset.num_classes, float_model=float_net,
                                         method=PTQ(c))
                quantize(net, rule, cle=cle, bias_correction=bc)
                rows.append({"wbits": c.wbits, "abits": c.abits, "terms": c.terms, "range": rule, "cle": cle,
                             "bias_correction": bc, "accuracy": evaluate(net, dataset.test_x, dataset.test_y)})
    return rows


def ptq_section(args, floats):
    """Data-free PTQ's variants (range rule x equalisation x bias correction), Nayak et al.'s
    comparison, from each dataset's first float run; PyTorch accuracy, which the integer model equals."""
    from quant.data import load_dataset

    lines = ["## Data-free PTQ variants", "",
             "`ptq` with every weight range rule, cross-layer equalisation (CLE) and bias correction (BC) "
             f"on and off, on the float run of seed {args.seeds[0]}; test accuracy (%).  See `docs/methods.md` "
             "for the rules.", ""]
    for fcfg in floats:
        if fcfg.seed != args.seeds[0] or fcfg.channels is not None:
            continue
        dataset = load_dataset(fcfg.data, fcfg.data_dir)
        float_net, _ = runs.load_network(fcfg.out)
        settings = [(w, a) for a in args.abits for w in args.wbits]
        table = {}
        for w, a in settings:
            cfg = run_config(fcfg.data, fcfg.data_dir, "ptq", w, a, 0, "unused", init_from=fcfg.out)
            for r in ptq_variants(cfg, dataset, float_net):
                table.setdefault((r["range"], r["cle"], r["bias_correction"]), {})[(w, a)] = r["accuracy"]
        lines += [f"{fcfg.data}:", "", "| range | CLE | BC | " + " | ".join(f"W{w}/A{a}" for w, a in settings) + " |",
                  "|---|---|---|" + "---|" * len(settings)]
        for (rule, cle, bc), acc in table.items():
            lines.append(f"| {rule} | {'on' if cle else 'off'} | {'on' if bc else 'off'} | "
                         + " | ".join(_pct(acc[k]) for k in settings) + " |")
        lines.append("")
    return lines


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(prog="python bench/methods.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="digits only, W2/A4, 1 epoch, seed 0: exercises every method")
    p.add_argument("--data-dir", type=pathlib.Path, default=DEFAULT_MNIST, help="MNIST IDX folder")
    p.add_argument("--datasets", default=None, help="comma list of digits, mnist (default: both; --quick: digits)")
    p.add_argument("--methods", default=",".join(QUANT_METHODS), help="comma list of methods")
    p.add_argument("--wbits", default=None, help="comma list (default 2,3,4; --quick: 2)")
    p.add_argument("--abits", default=None, help="comma list (default 8,4; --quick: 4)")
    p.add_argument("--seeds", default=None, help="comma list (default 0,1,2; --quick: 0)")
    p.add_argument("--epochs", type=int, default=None,
                   help="QAT epochs of the methods whose source prescribes none (default 8; --quick: 1, for all)")
    p.add_argument("--float-epochs", type=int, default=None, help="float epochs (default 8; --quick: 2)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once (one thread each)")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/methods"), help="run directories")
    p.add_argument("--doc", type=pathlib.Path, default=REPO / "docs" / "results.md", help="Markdown report")
    p.add_argument("--plot", type=pathlib.Path, default=None, help="PNG plot (default: beside --doc)")
    args = p.parse_args(argv)
    q = args.quick
    args.datasets = (args.datasets or ("digits" if q else "digits,mnist")).split(",")
    args.methods = args.methods.split(",")
    try:
        args.wbits = [int(v) for v in (args.wbits or ("2" if q else "2,3,4")).split(",")]
        args.abits = [int(v) for v in (args.abits or ("4" if q else "8,4")).split(",")]
        args.seeds = [int(v) for v in (args.seeds or ("0" if q else "0,1,2")).split(",")]
    except ValueError:
        raise UserError("--wbits, --abits and --seeds take comma lists of integers, e.g. 2,3,4") from None
    args.epochs = args.epochs if args.epochs is not None else (1 if q else 8)
    args.float_epochs = args.float_epochs if args.float_epochs is not None else (2 if q else 8)
    args.plot = args.plot or args.doc.with_suffix(".png")
    for m in args.methods:
        method_class(m)
    bad = [d for d in args.datasets if d not in ("digits", "mnist")]
    if bad:
        raise UserError(f"unknown dataset {bad[0]!r} in --datasets; choose digits and/or mnist")
    if "mnist" in args.datasets and not args.data_dir.is_dir():
        raise UserError(f"MNIST folder {args.data_dir} does not exist; pass --data-dir or --datasets digits")
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, not {args.jobs}")

    floats, configs = plan(args)
    run_all(floats, min(args.jobs, len(floats)))
    run_all(configs, args.jobs)
    rows = collect(configs)
    plot(rows, args.plot, args.datasets, args.wbits, args.abits)
    write_doc(args, rows, ptq_section(args, floats))
    print(f"wrote {args.doc} and {args.plot}: {len(rows)} runs", file=sys.stderr)
    for data in args.datasets:
        for line in goals(rows, data):
            print(f"{data}: {line[2:]}")
    return 0


if __name__ == "__main__":
    main()
