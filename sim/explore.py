"""``python -m sim.explore``: which bit widths and array shape to use for a model on a board.

Every point of the sweep is a quantisation (method, weight bits, activation bits, terms)
and an array shape (rows x cols).  For each point:

* **accuracy**: the integer reference's accuracy on the test split, from a training run
  of that quantisation (``quant.train``; runs are cached in ``--cache``, and a rerun
  trains only what is missing).  The array shape does not change it: the engine computes
  exactly what the reference does.
* **cycles** per image, per step and the array's use: the analytic performance model
  (:mod:`sim.perf`), which the cycle-accurate simulations match exactly.
* **logic cells, flip-flops, memory blocks, Fmax**: the resource model (:mod:`sim.resources`),
  calibrated from real builds; a point that does not fit gets the reason.

The points that fit and are not beaten on accuracy, images per second and logic cells at
once form the Pareto front.  The recommended configuration is the fastest point within
``--tolerance`` of the best accuracy (fewest logic cells on a tie).  It and further Pareto
points (up to ``--max-builds``) are then built for real (yosys + nextpnr, cached), and the
report sets each build's figures beside the model's.  Out: ``explore.md``, ``points.csv``,
``explore.json``, ``accuracy_vs_logic.png`` and ``speed_vs_logic.png`` in ``--out``.

``--calibrate`` instead builds the board family's calibration grid and writes
``sim/calibration/<family>.json``, the measured builds the resource model is fitted to.
``--hardware`` leaves the model out: it builds the engine alone (a random self-test layer)
over array shapes x widths and tabulates logic cells, block RAM and Fmax.
"""

import concurrent.futures
import csv
import dataclasses
import functools
import hashlib
import io
import json
import pathlib
import sys
import time
from dataclasses import dataclass

from core.artifact import load_artifact
from core.boards import BOARDS, board as get_board
from core.cli import make_parser
from core.errors import UserError, cli_main
from core.fileio import write_atomic, write_json
from fpga.flow import build, runs_at_mhz
from hw.program import NetworkProgram
from quant import runs
from quant.config import TrainConfig
from quant.methods import method_class
from quant.training import train_all

from .netsim import check, dataset_codes
from .perf import performance, spram_problem
from .resources import Calibration, capacity_problems, measured, record

#: Array shapes swept by default, per board family (rows a multiple of cols).
ARRAYS = {"ice40": "4x2,4x4,8x4,8x8", "ecp5": "8x8,16x8,16x16,32x16"}
#: The builds a family's resource model is calibrated on: ``(rows, cols, wbits, abits, terms)``.
CALIBRATION = {
    "ice40": [(r, c, w, a, 1) for r, c in ((4, 4), (8, 4), (8, 8)) for w, a in ((2, 2), (2, 3), (2, 4), (4, 4))]
    + [(8, 4, 3, 3, 1), (4, 4, 4, 4, 2), (4, 2, 2, 2, 1), (4, 2, 2, 4, 1)],
    "ecp5": [(r, c, w, a, 1) for r, c in ((8, 8), (16, 8), (16, 16)) for w, a in ((2, 2), (2, 3), (2, 4), (4, 4))]
    + [(16, 8, 3, 3, 1), (8, 8, 4, 4, 2), (32, 16, 4, 4, 1)],
}


@dataclass(frozen=True)
class Quant:
    """A quantisation point: what the training run is asked for."""

    method: str
    wbits: int
    abits: int
    terms: int = 1

    @property
    def label(self):
        return f"{self.method} W{self.wbits}A{self.abits}" + (f"x{self.terms}" if self.terms > 1 else "")

    @property
    def slug(self):
        return f"{self.method}-w{self.wbits}a{self.abits}t{self.terms}"


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def file_sha(path):
    return _sha(pathlib.Path(path).read_bytes())


# --- accuracy: training runs, cached ----------------------------------------------------
class Trainer:
    """The training runs of a sweep: one float run and one run per quantisation.

    ``model`` is a model name (``cnn``, ``mlp``: trained on ``data``) or a run folder
    (``quant.train --out``), whose config is the recipe every point follows and whose own
    run stands for its own quantisation."""

    def __init__(self, model, *, data, data_dir, epochs, float_epochs, cache, seed=0):
        self.cache = pathlib.Path(cache)
        self.run_dir, own = None, None
        path = pathlib.Path(model)
        if (path / runs.CONFIG).exists():
            self.run_dir = path
            own = TrainConfig.from_dict(json.loads((path / runs.CONFIG).read_text()), str(path / runs.CONFIG))
            data, data_dir, model = own.data, own.data_dir, own.model
            epochs = own.epochs if epochs is None else epochs
        elif "/" in model or model.startswith("."):
            raise UserError(f"--model {model}: no run there ({path / runs.CONFIG} is missing); give a run folder "
                            "written by `python -m quant.train --out`, or a model name (cnn, mlp)")
        self.own = own
        self.data, self.data_dir, self.model = data, data_dir, model
        self.epochs = 8 if epochs is None else epochs
        self.seed = seed
        # a run folder's recipe (its epochs, learning rate, float start) trains apart from the default's
        self.folder = self.cache / (f"{data}-{model}" + (f"-as-{path.name}" if own is not None else ""))
        if own is not None and own.init_from:
            self.float_out = own.init_from
            self.float_cfg = None
        else:  # the float start, of the run's own network (its spec) when there is a run
            base = dataclasses.asdict(own) if own is not None else {}
            base.update(data=data, data_dir=data_dir, model=model, method="float", epochs=float_epochs, seed=seed,
                        init_from=None, out=str(self.folder / "float"))
            self.float_cfg = TrainConfig.from_dict(base, "explore").validate()
            self.float_out = self.float_cfg.out

    def config(self, q):
        """The training config of quantisation ``q`` (the run folder's own when it is its)."""
        own = self.own
        if own is not None and (own.method, own.wbits, own.abits, own.terms) == (q.method, q.wbits, q.abits, q.terms):
            return own
        base = dataclasses.asdict(own) if own is not None else {}
        base.update(data=self.data, data_dir=self.data_dir, model=self.model, method=q.method, wbits=q.wbits,
                    abits=q.abits, terms=q.terms, epochs=self.epochs, init_from=self.float_out, golden=8,
                    seed=self.seed if own is None else own.seed,
                    out=str(self.folder / f"{q.slug}-e{self.epochs}"))
        return TrainConfig.from_dict(base, "explore").validate()

    def run(self, quants, jobs):
        """Train what is missing; ``{quant: (accuracy, artifact path)}``."""
        if self.float_cfg is not None:
            train_all([self.float_cfg], 1)
        configs = {q: self.config(q) for q in quants}
        train_all([c for c in configs.values() if c is not self.own], jobs)
        out = {}
        for q, c in configs.items():
            folder = self.run_dir if c is self.own else pathlib.Path(c.out)
            summary = runs.summary(folder) if c is self.own else runs.finished(c)
            if summary is None or summary.get("reference_accuracy") is None:
                raise UserError(f"the run in {folder} has no integer-reference accuracy in {runs.SUMMARY}; "
                                "retrain it with `python -m quant.train`")
            out[q] = (summary["reference_accuracy"], folder / summary.get("artifact", "artifact.npz"))
        return out


def parse_sizes(text):
    """``"2x2,4x8"`` -> ``[(2, 2), (4, 8)]``."""
    sizes = []
    for item in text.split(","):
        try:
            rows, cols = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise UserError(f"bad array size {item!r}: write ROWSxCOLS, e.g. --sizes 4x4,8x8") from None
        sizes.append((rows, cols))
    return sizes


def parse_ints(text, what):
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"bad {what} list {text!r}: write comma-separated integers") from None


# --- one point -----------------------------------------------------------------------------
def program_for(art, rows, cols, board):
    return NetworkProgram.for_board(art.network, board, {"rows": rows, "cols": cols})


def evaluate(q, accuracy, art_path, art, rows, cols, board, calibration):
    """One row of the sweep: the quantisation, the array, and every modelled figure."""
    row = {"method": q.method, "wbits": q.wbits, "abits": q.abits, "terms": q.terms, "quant": q.label,
           "rows": rows, "cols": cols, "array": f"{rows}x{cols}", "pes": rows * cols, "accuracy": accuracy,
           "artifact": str(art_path)}
    try:
        program = program_for(art, rows, cols, board)
    except UserError as exc:
        return row | {"fits": False, "reason": str(exc)}
    perf = performance(program, family=board.family)
    pred = calibration.predict(program)
    problems = capacity_problems(pred.logic, pred.blocks, board)
    why = spram_problem(program) if board.family == "ice40" else None
    if why:
        problems.append(f"SPRAM buffers: {why}")
    row |= {
        "cycles": perf.cycles, "step_cycles": [s.cycles for s in perf.steps],
        "utilisation": perf.utilisation, "conv_utilisation": perf.conv_utilisation,
        "acc_bits": perf.acc_bits, "layer_acc_bits": [s.acc_bits for s in perf.steps],
        "logic": round(pred.logic), "ff": round(pred.ff), "fmax_mhz": round(pred.fmax_mhz, 2),
        # at the clock the board would run: its PLL's just below that Fmax (fpga.flow.pll_clock)
        "clock_mhz": runs_at_mhz(board, pred.fmax_mhz),
        "images_per_s": runs_at_mhz(board, pred.fmax_mhz) * 1e6 / perf.cycles, "blocks": pred.blocks,
        "memory_logic_bits": perf.footprint.get("logic", 0),
        "fits": not problems, "reason": "; ".join(problems), "source": "model",
    }
    return row


def pareto(rows):
    """The fitting rows no other fitting row beats: at least as accurate, as fast and as
    small, and strictly better in one."""
    fit = [r for r in rows if r["fits"]]

    def beats(a, b):
        ge = a["accuracy"] >= b["accuracy"] and a["images_per_s"] >= b["images_per_s"] and a["logic"] <= b["logic"]
        gt = a["accuracy"] > b["accuracy"] or a["images_per_s"] > b["images_per_s"] or a["logic"] < b["logic"]
        return ge and gt

    return [r for r in fit if not any(beats(o, r) for o in fit if o is not r)]


def recommend(rows, tolerance):
    """The fastest fitting row within ``tolerance`` of the best fitting accuracy; fewer
    logic cells, then higher accuracy, break ties.  ``None`` when nothing fits."""
    fit = [r for r in rows if r["fits"]]
    if not fit:
        return None
    best = max(r["accuracy"] for r in fit)
    near = [r for r in fit if r["accuracy"] >= best - tolerance - 1e-12]
    return max(near, key=lambda r: (r["images_per_s"], -r["logic"], r["accuracy"]))


# --- builds, cached ----------------------------------------------------------------------------
_DESIGN_SOURCES = ("hw/*.py", "templates/*.py", "templates/**/*.j2", "fpga/build.py", "core/boards.py",
                   "fpga/report.py")


@functools.lru_cache(maxsize=None)
def design_version():
    """A hash of the sources a build's design and report come from: a changed engine, link
    or template is built again rather than taken from the cache."""
    root = pathlib.Path(__file__).resolve().parent.parent
    files = sorted({p for pattern in _DESIGN_SOURCES for p in root.glob(pattern)})
    return _sha(b"".join(p.relative_to(root).as_posix().encode() + p.read_bytes() for p in files))[:12]


def build_folder(cache, board, art_path, rows, cols, label):
    key = _sha(json.dumps({"artifact": file_sha(art_path), "rows": rows, "cols": cols, "board": board.name,
                           "design": design_version()}, sort_keys=True).encode())[:10]
    return pathlib.Path(cache) / "builds" / board.name / f"{label}-{rows}x{cols}-{key}"


def _build(board_name, folder, art_path, rows, cols):
    """One network build in a worker process (cached: a folder with a report is reused)."""
    report_path = pathlib.Path(folder) / "report.json"
    if report_path.exists():
        return json.loads(report_path.read_text())
    return build(board_name, out=folder, artifact_path=str(art_path), given={"rows": rows, "cols": cols},
                 design="network")


def _folder_of(cache, board, row):
    if "cycles" not in row:  # the engine cannot run it: nothing to build
        return None
    q = Quant(row["method"], row["wbits"], row["abits"], row["terms"])
    return build_folder(cache, board, row["artifact"], row["rows"], row["cols"], q.slug)


def apply_build(row, report, folder, board):
    """Put a build's measured figures in place of the model's (kept under ``model``): the
    logic cells, flip-flops, memory blocks, Fmax and whether it fits the device."""
    got = measured(report, board.family)
    problems = capacity_problems(got["logic"], got["blocks"], board, measured=True)
    if got["fmax_mhz"] is None and not problems:
        problems.append("did not place")
    fits = not problems
    row["model"] = {k: row[k] for k in ("logic", "ff", "fmax_mhz", "clock_mhz", "images_per_s", "blocks", "fits",
                                        "reason")}
    row["built"] = dict(got, folder=str(folder), passed=report["passed"])
    fmax = got["fmax_mhz"] or row["fmax_mhz"]
    # the clock the bitstream runs at (its PLL's); a report from before the PLL: the rule's
    clock = report.get("design", {}).get("clock_mhz") or runs_at_mhz(board, fmax)
    row.update(logic=got["logic"], ff=got["ff"], blocks=got["blocks"], fits=fits, source="build",
               fmax_mhz=fmax, clock_mhz=clock, images_per_s=clock * 1e6 / row["cycles"],
               reason="" if fits else "built: " + "; ".join(problems))

def build_all(jobs, items, board):
    """Build ``items`` (``(label, folder, artifact, rows, cols)``), ``jobs`` at a time, with
    a progress line each; returns ``{label: report}``."""
    todo = [it for it in items if not (pathlib.Path(it[1]) / "report.json").exists()]
    print(f"builds: {len(items) - len(todo)} cached, {len(todo)} to run on {board.name}", file=sys.stderr, flush=True)
    out, t0 = {}, time.monotonic()
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(_build, board.name, f, a, r, c): label for label, f, a, r, c in items}
        for i, fut in enumerate(concurrent.futures.as_completed(futures), 1):
            label = futures[fut]
            out[label] = fut.result()
            print(f"[build {i}/{len(items)}] {label}  ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
    return out


# --- the report ---------------------------------------------------------------------------------
def _pct(v):
    return "-" if v is None else f"{100 * v:.2f}"


def _int(v):
    return "-" if v is None else f"{v:,.0f}"


def _pyplot():
    """matplotlib's pyplot, without a display (imported when a plot is drawn: it is slow to load)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(rows, front, rec, board, out):
    plt = _pyplot()

    fit = [r for r in rows if r["fits"]]
    over = [r for r in rows if not r["fits"] and "logic" in r]
    cap = dict(board.capacity)
    logic_cap = next(iter(cap.values()))
    for name, key, label in (("accuracy_vs_logic.png", "accuracy", "test accuracy (%)"),
                             ("speed_vs_logic.png", "images_per_s", "images / s at the PLL clock (compute)")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        scale = 100 if key == "accuracy" else 1
        for arr in sorted({r["array"] for r in rows}, key=lambda a: [int(v) for v in a.split("x")]):
            pts = [r for r in fit if r["array"] == arr]
            if pts:
                ax.scatter([r["logic"] for r in pts], [scale * r[key] for r in pts], label=f"{arr}", alpha=0.7)
        if over:
            ax.scatter([r["logic"] for r in over], [scale * r[key] for r in over], marker="x", color="grey",
                       label="does not fit")
        built = [r for r in rows if r.get("source") == "build"]
        if built:
            ax.scatter([r["logic"] for r in built], [scale * r[key] for r in built], marker="+", s=90, color="black",
                       label="built (measured)")
        fr = sorted(front, key=lambda r: r["logic"])
        ax.scatter([r["logic"] for r in fr], [scale * r[key] for r in fr], facecolors="none", edgecolors="black",
                   s=120, linewidths=1.5, label="Pareto front")
        if rec is not None:
            ax.scatter([rec["logic"]], [scale * rec[key]], marker="*", s=300, color="red", label="recommended")
        ax.axvline(logic_cap, color="grey", linestyle="--", linewidth=1)
        ax.set(xlabel="logic cells (measured where built, else the model's)", ylabel=label,
               title=f"{board.name}: {label} vs logic cells")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)


CSV_FIELDS = ("quant", "method", "wbits", "abits", "terms", "array", "rows", "cols", "pes", "accuracy", "cycles",
              "utilisation", "conv_utilisation", "acc_bits", "logic", "ff", "fmax_mhz", "clock_mhz", "images_per_s", "blocks",
              "fits", "pareto", "recommended", "source", "model_logic", "model_ff", "model_fmax_mhz", "reason")


def write_csv(rows, path):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        flat = dict(r, **{f"model_{k}": v for k, v in r.get("model", {}).items()})
        w.writerow({k: (json.dumps(flat[k]) if isinstance(flat.get(k), dict) else flat.get(k)) for k in CSV_FIELDS})
    write_atomic(path, lambda tmp: pathlib.Path(tmp).write_text(buf.getvalue()))


def _blocks(b):
    return ", ".join(f"{n} {k}" for k, n in sorted(b.items())) if b else "0"


def simulate(rec, board, trainer, limit):
    """The recommended design on the cycle-accurate engine (Verilator) over the first
    ``limit`` test images: its accuracy, its logits against the reference, its cycles."""
    art = load_artifact(rec["artifact"])
    program = program_for(art, rec["rows"], rec["cols"], board)
    inputs, labels = dataset_codes(art.network, trainer.data, trainer.data_dir, limit=limit)
    print(f"simulating {rec['quant']} {rec['array']} on {len(inputs)} test images (Verilator)", file=sys.stderr,
          flush=True)
    report = check(program, inputs, labels, progress=False)
    return {k: report[k] for k in ("images", "prediction_differences", "logit_differences", "cycles_per_image",
                                   "cycle_counts_as_planned", "hardware_accuracy", "reference_accuracy", "steps",
                                   "wall_seconds")}


def _model_err(r, k):
    m = r.get("model")
    if not m or not r["built"].get(k if k != "logic" else "logic"):
        return "-"
    b = r["built"]["fmax_mhz" if k == "fmax_mhz" else k]
    return f"{m[k]:,}" + (f" ({100 * (m[k] - b) / b:+.1f} %)" if b else "")


def markdown(meta, rows, front, rec, calibration_errors, simulated=None):
    board = meta["board"]
    built = [r for r in rows if r.get("source") == "build"]
    lines = [f"# Co-design sweep: {meta['model']} on {board}", "",
             f"{len(rows)} points: {len(meta['quants'])} quantisations x {len(meta['arrays'])} array shapes "
             f"({', '.join(meta['arrays'])}); accuracy on the {meta['data']} test split (integer reference); "
             f"{sum(r['fits'] for r in rows)} fit the device; {len(front)} on the Pareto front; {len(built)} built "
             "for real (their measured figures replace the model's).", ""]
    lines += ["## Recommended", ""]
    if rec is not None:
        src = "measured on the build" if rec.get("source") == "build" else "modelled; not built"
        lines.append(f"**{rec['quant']} on a {rec['array']} array**: {_pct(rec['accuracy'])} % accuracy, "
                     f"{rec['cycles']:,} cycles an image, {rec['logic']:,} logic cells, {rec['ff']:,} flip-flops, "
                     f"{_blocks(rec['blocks'])}, Fmax {rec['fmax_mhz']} MHz, so a {rec['clock_mhz']:.4g} MHz clock (the "
                     f"board's PLL) and {rec['images_per_s']:,.0f} images/s ({src}).")
        if rec.get("source") == "build":
            m = rec["model"]
            lines += ["", f"The model predicted {m['logic']:,} logic cells, {m['ff']:,} flip-flops, "
                          f"{_blocks(m['blocks'])} and {m['fmax_mhz']} MHz; the build is in "
                          f"`{rec['built']['folder']}` (`report.md`, `top` bitstream)."]
        if simulated:
            sim = simulated
            same = "equal to" if sim["cycle_counts_as_planned"] else "NOT equal to"
            lines += ["", f"Cycle-accurate simulation (Verilator) of {sim['images']} test images: "
                          f"{_pct(sim['hardware_accuracy'])} % accuracy, {sim['logit_differences']} images with a "
                          f"logit different from the integer reference, {sim['cycles_per_image']:,} cycles an image "
                          f"({same} the model's, and step by step: "
                          + ", ".join(f"{s['measured_cycles'][1]:,}" for s in sim["steps"]) + ")."]
    else:
        lines.append("Nothing fits this board; see the reasons below.")
    lines += ["", "## Pareto front", "",
              "Not beaten at once on accuracy, images/s and logic cells by another point that fits.", "",
              "| quantisation | array | accuracy % | cycles/image | PE use, conv % | logic cells | flip-flops "
              "| memory blocks | Fmax MHz | images/s | figures | model: logic cells (error) | model: Fmax (error) |",
              "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---:|"]
    for r in sorted(front, key=lambda r: r["logic"]):
        star = " **(recommended)**" if r is rec else ""
        lines.append(f"| {r['quant']}{star} | {r['array']} | {_pct(r['accuracy'])} | {r['cycles']:,} | "
                     f"{_pct(r['conv_utilisation'])} | {r['logic']:,} | {r['ff']:,} | {_blocks(r['blocks'])} | "
                     f"{r['fmax_mhz']} | {r['images_per_s']:,.0f} | {r.get('source', 'model')} | "
                     f"{_model_err(r, 'logic')} | {_model_err(r, 'fmax_mhz')} |")
    if built:
        errs = [abs(r["model"]["logic"] - r["logic"]) / r["logic"] for r in built]
        ferrs = [abs(r["model"]["fmax_mhz"] - r["built"]["fmax_mhz"]) / r["built"]["fmax_mhz"] for r in built
                 if r["built"]["fmax_mhz"]]
        blocks_ok = sum(r["model"]["blocks"] == r["blocks"] for r in built)
        lines += ["", f"The resource model against the {len(built)} builds of this sweep's points: logic cells "
                      f"within {100 * max(errs):.1f} % (mean {100 * sum(errs) / len(errs):.1f} %)"
                  + (f", Fmax within {100 * max(ferrs):.1f} %" if ferrs else "")
                  + f"; memory blocks exact on {blocks_ok} of {len(built)}."]
        fresh = [r for r in built if not r.get("calibration")]
        if fresh:
            fe = [abs(r["model"]["logic"] - r["logic"]) / r["logic"] for r in fresh]
            names = ", ".join(f"{r['quant']} {r['array']}" for r in fresh)
            lines[-1] += (f" The {len(fresh)} of them whose configuration is not one of the calibration builds "
                          f"({names}): logic cells within {100 * max(fe):.1f} %.")
    lines += ["", "## Every point", "", "| quantisation | array | accuracy % | cycles/image | logic cells | Fmax MHz "
              "| images/s | figures | fits |", "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        fits = "yes" if r["fits"] else f"no: {r['reason']}"
        lines.append(f"| {r['quant']} | {r['array']} | {_pct(r['accuracy'])} | {_int(r.get('cycles'))} | "
                     f"{_int(r.get('logic'))} | {r.get('fmax_mhz', '-')} | {_int(r.get('images_per_s'))} | "
                     f"{r.get('source', '-')} | {fits} |")
    if calibration_errors:
        lg = [abs(e["logic"]) for e in calibration_errors]
        fm = [abs(e["fmax"]) for e in calibration_errors if e["fmax"] is not None]
        lines += ["", "## Resource model", "",
                  f"Calibrated on {len(calibration_errors)} builds (`sim/calibration/{meta['family']}.json`); each "
                  f"build predicted by a fit without it: logic cells within {100 * max(lg):.1f} % (mean "
                  f"{100 * sum(lg) / len(lg):.1f} %)" + (f", Fmax within {100 * max(fm):.1f} %" if fm else "")
                  + f", memory blocks exact on {sum(e['blocks_equal'] for e in calibration_errors)} of "
                  f"{len(calibration_errors)}."]
    lines += ["", "Cycles come from the performance model (`sim.perf`), equal to the cycle-accurate simulation's; "
              "images/s are compute only, at the clock the bitstream runs: its PLL's, the fastest at most "
              "5 % below the Fmax (`fpga.flow.pll_clock`).", ""]
    return "\n".join(lines)


def key(r):
    return (r["quant"], r["array"])


# --- --hardware: the engine alone over array shapes and widths -----------------------------
def point_row(rows, cols, abits, wbits, report):
    logic = report["resources"][0]
    bram = next(r for r in report["resources"] if r["resource"].startswith("block RAM"))
    fmax = min(report["fmax_mhz"].values(), default=None)
    return {"rows": rows, "cols": cols, "abits": abits, "wbits": wbits, "pes": rows * cols,
            "logic": logic["used"], "logic_available": logic["available"], "bram": bram["used"],
            "fmax_mhz": fmax, "meets_goal": report["meets_goal"], "fits": not any(
                "used, the device has" in f for f in report["failures"]),
            "failures": report["failures"]}


def hardware_plot(points, board, path):
    plt = _pyplot()

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for key in sorted({(p["abits"], p["wbits"]) for p in points}):
        pts = sorted((p for p in points if (p["abits"], p["wbits"]) == key), key=lambda p: p["pes"])
        label = f"A{key[0]} W{key[1]}"
        a1.plot([p["pes"] for p in pts], [p["logic"] for p in pts], "o-", label=label)
        fm = [p for p in pts if p["fmax_mhz"]]
        a2.plot([p["pes"] for p in fm], [p["fmax_mhz"] for p in fm], "o-", label=label)
    avail = max(p["logic_available"] or 0 for p in points)
    if avail:
        a1.axhline(avail, color="grey", linestyle="--", label="device")
    a2.axhline(BOARDS[board].target_mhz, color="grey", linestyle="--", label="goal")
    a1.set(xlabel="PEs (rows x cols)", ylabel="logic cells", title=f"{board}: logic")
    a2.set(xlabel="PEs (rows x cols)", ylabel="Fmax (MHz)", title=f"{board}: Fmax")
    for a in (a1, a2):
        a.legend()
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def hardware_sweep(args, board):
    """Build the layer engine with its self-test on a random layer (:func:`fpga.flow.random_case`)
    for every array shape x activation bits x weight bits on ``board``: logic cells, block RAM and
    Fmax of each (``sweep.md``, ``sweep.json``, ``sweep.png``); a point that does not fit is kept,
    with the figure that failed.  No training: the hardware side of the trade-off alone."""
    out = pathlib.Path(args.out or f"build/explore/{board.name}-hardware")
    points = []
    for abits in parse_ints(args.abits or "4", "--abits"):
        for wbits in parse_ints(args.wbits or "4", "--wbits"):
            for rows, cols in parse_sizes(args.arrays or "2x2,4x4,8x8"):
                # memories as fit_config sizes them for the demo CNN
                given = dict(rows=rows, cols=cols, abits=abits, wbits=wbits, max_fan_in=args.max_fan_in,
                             max_left=args.max_left, act_depth=64, wgt_depth=1024, par_depth=4, psum_depth=256,
                             out_depth=128)
                report = build(board.name, out=out / f"{rows}x{cols}-a{abits}w{wbits}", given=given,
                               design="selftest")
                points.append(point_row(rows, cols, abits, wbits, report))
                p = points[-1]
                print(f"{rows}x{cols} A{abits} W{wbits}: {p['logic']} logic cells, {p['bram']} BRAM, "
                      f"Fmax {p['fmax_mhz']} MHz{'' if p['fits'] else ' (does not fit)'}", flush=True)
    write_json(out / "sweep.json", points)
    lines = [f"# {board.name}: the engine over array shapes and widths", "",
             "| array | A | W | PEs | logic cells | BRAM | Fmax (MHz) | fits |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for p in points:
        lines.append(f"| {p['rows']}x{p['cols']} | {p['abits']} | {p['wbits']} | {p['pes']} | {p['logic']} | "
                     f"{p['bram']} | {p['fmax_mhz'] if p['fmax_mhz'] else '-'} | {'yes' if p['fits'] else 'no'} |")
    write_atomic(out / "sweep.md", lambda tmp: pathlib.Path(tmp).write_text("\n".join(lines) + "\n"))
    hardware_plot(points, board.name, out / "sweep.png")
    print(f"wrote {out / 'sweep.md'}, sweep.json and sweep.png")
    return 0


# --- the command -------------------------------------------------------------------------------
def _sweep_quants(args):
    quants = []
    for method in args.methods.split(","):
        only = method_class(method).wbits_only
        for w in parse_ints(args.wbits, "--wbits"):
            if only is not None and w not in only:
                continue
            for a in parse_ints(args.abits, "--abits"):
                for t in parse_ints(args.terms, "--terms"):
                    quants.append(Quant(method, w, a, t))
    if not quants:
        raise UserError("the sweep is empty: no --wbits the --methods accept")
    return quants


def calibrate(args, board, trainer):
    method = args.methods.split(",")[0]
    grid = [(r, c, Quant(method, w, a, t)) for r, c, w, a, t in CALIBRATION[board.family]]
    acc = trainer.run(sorted({q for _, _, q in grid}, key=lambda q: (q.wbits, q.abits, q.terms)), args.jobs)
    items = []
    for r, c, q in grid:
        path = acc[q][1]
        items.append((f"{q.slug}-{r}x{c}", build_folder(args.cache, board, path, r, c, q.slug), path, r, c))
    reports = build_all(args.jobs, items, board)
    records = []
    for label, folder, path, r, c in items:
        program = program_for(load_artifact(path), r, c, board)
        records.append(record(program, reports[label], board.family, label))
    cal = Calibration(board.family, records)
    path = cal.save(args.calibration)
    print(f"wrote {path}: {len(records)} builds", file=sys.stderr)
    for e in cal.errors():
        fm = "-" if e["fmax"] is None else f"{100 * e['fmax']:+.1f} %"
        print(f"  {e['label']:<28} logic {100 * e['logic']:+.1f} %  ff {100 * e['ff']:+.1f} %  Fmax {fm}  "
              f"blocks {'exact' if e['blocks_equal'] else 'differ'}")
    return 0


def explore(args, board, trainer):
    calibration = Calibration.load(board.family, args.calibration)
    quants = _sweep_quants(args)
    arrays = parse_sizes(args.arrays or ARRAYS[board.family])
    acc = trainer.run(quants, args.jobs)
    rows, t0 = [], time.monotonic()
    total = len(quants) * len(arrays)
    for q in quants:
        accuracy, path = acc[q]
        art = load_artifact(path)
        for r, c in arrays:
            rows.append(evaluate(q, accuracy, path, art, r, c, board, calibration))
            if len(rows) % 10 == 0 or len(rows) == total:
                print(f"points: {len(rows)}/{total} ({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
    # real builds: any already in the cache, then the recommended point and Pareto points
    # spread over the front's logic range; a build's figures replace the model's, so the
    # front and the recommendation are worked out again until the recommended point is built
    built = {}
    calibrated = {rec["label"] for rec in calibration.records}
    for r in rows:
        folder = _folder_of(args.cache, board, r)
        if folder is not None and (folder / "report.json").exists():
            apply_build(r, json.loads((folder / "report.json").read_text()), folder, board)
            built[key(r)] = r["built"]
            r["calibration"] = folder.name.rsplit("-", 1)[0] in calibrated
    budget = args.max_builds  # the first round: the recommended point and Pareto points up to this many
    while True:
        front, rec = pareto(rows), recommend(rows, args.tolerance)
        if rec is None or args.max_builds == 0 or key(rec) in built:
            break
        # a build moves the figures, and another point may become the recommended one: it
        # is built in turn (each point at most once), beyond the budget if need be
        to_build = [rec]
        others = sorted((r for r in front if key(r) not in built and r is not rec), key=lambda r: r["logic"])
        room = budget - 1
        if room > 0 and others:
            step = max(1, len(others) / room)
            to_build += [others[int(i * step)] for i in range(min(room, len(others)))]
        budget -= len(to_build)
        items = [(f"{r['quant']} {r['array']}", _folder_of(args.cache, board, r), r["artifact"], r["rows"],
                  r["cols"]) for r in to_build]
        reports = build_all(args.jobs, items, board)
        for (label, folder, *_), r in zip(items, to_build):
            apply_build(r, reports[label], folder, board)
            built[key(r)] = r["built"]
            r["calibration"] = folder.name.rsplit("-", 1)[0] in calibrated
    for r in rows:
        r["pareto"] = any(r is f for f in front)
        r["recommended"] = r is rec
    verified = None
    if rec is not None and args.simulate:
        verified = simulate(rec, board, trainer, args.simulate)
    out = pathlib.Path(args.out or f"build/explore/{board.name}")
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "board": board.name, "family": board.family, "data": trainer.data,
            "quants": [q.label for q in quants], "arrays": [f"{r}x{c}" for r, c in arrays],
            "tolerance": args.tolerance}
    text = markdown(meta, rows, front, rec, calibration.errors(), verified)
    write_atomic(out / "explore.md", lambda tmp: pathlib.Path(tmp).write_text(text))
    write_csv(rows, out / "points.csv")
    write_json(out / "explore.json", {"meta": meta, "points": rows, "simulated": verified})
    plot(rows, front, rec, board, out)
    print(text)
    print(f"wrote {out / 'explore.md'}, points.csv, explore.json, accuracy_vs_logic.png, speed_vs_logic.png")
    return 0


@cli_main
def main(argv=None):
    parser = make_parser("python -m sim.explore", __doc__.splitlines()[0],
                         epilog="example: python -m sim.explore --model cnn --data mnist --data-dir DIR "
                                "--board icebreaker --wbits 2,3,4 --abits 2,3,4")
    parser.add_argument("--model", default="cnn",
                        help="a model name (cnn, mlp), or a run folder whose recipe the sweep follows")
    parser.add_argument("--board", default="icebreaker", choices=sorted(BOARDS))
    parser.add_argument("--data", default="digits", help="dataset when --model is a name (digits, mnist)")
    parser.add_argument("--data-dir", help="the dataset's folder (mnist)")
    parser.add_argument("--methods", default="pow2", help="quantisation methods, comma-separated")
    parser.add_argument("--wbits", help="weight bits, comma-separated (default 2,3,4; with --hardware, 4)")
    parser.add_argument("--abits", help="activation bits, comma-separated (default 2,3,4; with --hardware, 4)")
    parser.add_argument("--terms", default="1", help="powers of two per weight, comma-separated")
    parser.add_argument("--arrays", help="array shapes ROWSxCOLS (default: "
                                         + "; ".join(f"{k}: {v}" for k, v in ARRAYS.items())
                                         + "; with --hardware, 2x2,4x4,8x8)")
    parser.add_argument("--epochs", type=int, help="QAT epochs of each run (default 8, or the run folder's)")
    parser.add_argument("--float-epochs", type=int, default=8, help="epochs of the float run the points start from")
    parser.add_argument("--tolerance", type=float, default=0.005,
                        help="accuracy the recommendation may give up for speed (default 0.005, half a point)")
    parser.add_argument("--max-builds", type=int, default=4,
                        help="real builds: the recommended point, then Pareto points (default 4; 0 builds none); "
                             "should a build move the recommendation, the new one is built too")
    parser.add_argument("--simulate", type=int, default=2000, metavar="N",
                        help="run the recommended design on the cycle-accurate engine over N test images "
                             "(default 2000; 0: none)")
    parser.add_argument("--jobs", type=int, default=2, help="trainings and builds at a time")
    parser.add_argument("--cache", default="runs/explore", help="training runs and builds (reused by a rerun)")
    parser.add_argument("--out", help="report folder (default build/explore/<board>)")
    parser.add_argument("--calibrate", action="store_true",
                        help="build the family's calibration grid and write the resource model's data")
    parser.add_argument("--calibration", help="the calibration file (default sim/calibration/<family>.json)")
    parser.add_argument("--hardware", action="store_true",
                        help="no model: build the engine with a random self-test layer for every --arrays x --abits "
                             "x --wbits, and tabulate logic cells, block RAM and Fmax")
    parser.add_argument("--max-fan-in", type=int, default=144,
                        help="with --hardware: the fan-in the accumulators hold (default 144, the demo CNN's deepest)")
    parser.add_argument("--max-left", type=int, default=1,
                        help="with --hardware: largest left shift of a logits requantiser (default 1, as the MNIST "
                             "CNN needs)")
    args = parser.parse_args(argv)
    board = get_board(args.board)
    if args.hardware:
        return hardware_sweep(args, board)
    args.wbits, args.abits = args.wbits or "2,3,4", args.abits or "2,3,4"
    if args.max_builds < 0 or args.simulate < 0 or args.jobs < 1 or not 0 <= args.tolerance < 1:
        raise UserError("--max-builds and --simulate must be >= 0, --jobs >= 1 and --tolerance in [0, 1)")
    trainer = Trainer(args.model, data=args.data, data_dir=args.data_dir, epochs=args.epochs,
                      float_epochs=args.float_epochs, cache=args.cache)
    return calibrate(args, board, trainer) if args.calibrate else explore(args, board, trainer)


if __name__ == "__main__":
    sys.exit(main())
