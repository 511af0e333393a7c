"""The resource model: logic cells, flip-flops, memory blocks and Fmax of a network design
on a board, predicted from real builds.

Memory blocks are counted, not fitted: :func:`sim.perf.network_memories` maps every memory
the way yosys's ``memory_libmap`` does.  Logic cells and flip-flops are a non-negative
linear model of a few counts that follow from the design's derived widths
(:func:`features`): the processing elements' shifters and adders, their registers, the
per-column partial-sum adder and requantiser, the systolic skew registers, the memory
bits yosys leaves to soft logic and the whole-window input packer's lanes.  Fmax is a linear model of the clock period.  The
coefficients are fitted, by least squares, to the measured builds recorded in
``sim/calibration/<family>.json``, which ``python -m sim.explore --calibrate`` writes from
real yosys + nextpnr runs; :func:`Calibration.errors` gives the fit's errors, each build
left out of its own fit.
"""

import json
import math
import pathlib
from dataclasses import dataclass

import numpy as np

from core.errors import UserError
from core.fileio import write_json
from core.hwconfig import HwConfig
from hw.array import skew_ram_groups
from hw.network import spram_buffers

from .perf import block_counts, map_memories, memory_list

CALIBRATION_DIR = pathlib.Path(__file__).resolve().with_name("calibration")

#: The counts the logic-cell and flip-flop models are linear in (see :func:`features`).
FEATURES = ("fixed", "pe_shifters", "pe_adders", "pe_registers", "columns", "left_shift", "skew", "logits",
            "memory_logic", "window_packer")
#: The counts the clock period is linear in (the accumulator's carry chains; the spread of a
#: bigger array, whose requantisers feed the buffers from further away).
PERIOD_FEATURES = ("fixed", "acc_bits", "pes")


def design(program):
    """What the models read of a design (:class:`hw.program.NetworkProgram`): its config,
    its logits and its memories (:func:`sim.perf.memory_list`).  Calibration records keep
    it, so a changed model refits without rebuilding."""
    return {"config": program.cfg.to_dict(), "num_classes": program.num_classes, "logit_bits": program.logit_bits,
            "memories": memory_list(program), "spram": list(spram_buffers(program, True)),
            "packer": program.packer.mode, "weight_skew": True}


def features(d, family):
    """The counts of a design (:func:`design`) the logic-cell and flip-flop models are linear in."""
    cfg = HwConfig.from_dict(d["config"])
    pes = cfg.rows * cfg.cols
    select = max(1, math.ceil(math.log2(cfg.shift_levels)))
    rq_levels = max(1, math.ceil(math.log2(cfg.acc_bits + cfg.max_left + 1)))
    logic_bits = sum(m.bits for m in map_memories(d["memories"], family, d.get("spram")) if m.mapped_to == "logic")
    return {
        "fixed": 1.0,
        # per PE and term: a shifter (product_bits outputs, a select of shift_levels inputs)
        "pe_shifters": float(pes * cfg.terms * cfg.product_bits * select),
        # and an adder of the partial sum's width
        "pe_adders": float(pes * cfg.terms * cfg.dot_bits),
        # per PE: weight code, activation and partial-sum registers
        "pe_registers": float(pes * (cfg.code_bits + cfg.abits + cfg.dot_bits)),
        # per column: partial-sum adder, requantiser (a barrel shifter) and its output, pooling register
        "columns": float(cfg.cols * (cfg.acc_bits * (1 + rq_levels) + cfg.out_bits + cfg.abits)),
        # per column, in a design for logits that shift left: the left-shifting path
        "left_shift": float(cfg.cols * (cfg.acc_bits + cfg.max_left) * math.ceil(math.log2(cfg.max_left + 1))),
        # input skew (a triangle of activation registers), output deskew and the weight
        # codes' skew along the diagonal (a record from before it has none)
        "skew": float(input_skew_bits(cfg) + cfg.cols * (cfg.cols - 1) // 2 * cfg.dot_bits
                      + (weight_skew_bits(cfg) if d.get("weight_skew") else 0) + input_reg_bits(cfg)),
        # the logit registers, their read multiplexer and the host link's comparison
        "logits": float(d["num_classes"] * d["logit_bits"]),
        "memory_logic": float(logic_bits),
        # the whole-window input packer writes each code into every lane it belongs to (a
        # record from before it has no packer, and its designs had none)
        "window_packer": float(cfg.rows * cfg.abits if d.get("packer") == "window" else 0),
    }


def input_skew_bits(cfg):
    """Flip-flops that delay row ``k``'s activation ``k`` cycles (:class:`hw.array.SystolicArray`);
    with ``skew_ram`` only what the block RAM of a row's group leaves (:func:`hw.array.skew_ram_groups`)."""
    if not cfg.skew_ram:
        return cfg.abits * cfg.rows * (cfg.rows - 1) // 2
    return cfg.abits * sum(k - base for rows, base in skew_ram_groups(cfg) for k in rows)


def input_reg_bits(cfg):
    """Flip-flops of ``input_reg``'s stage: an activation vector and a weight word (the
    calibration's designs before it have none; ``bram_reg``'s stage is in the fit)."""
    return (cfg.rows * cfg.abits + cfg.wgt_lanes * cfg.cols * cfg.code_bits) if cfg.input_reg else 0


def weight_skew_bits(cfg):
    """Flip-flops that delay the weight codes to their diagonal (:class:`hw.array.SystolicArray`):
    lane ``g`` by ``g * load_rows`` cycles, then column ``n`` by ``n``."""
    lanes, r = cfg.wgt_lanes, cfg.load_rows
    return cfg.code_bits * (lanes * cfg.cols * (cfg.cols - 1) // 2 + cfg.cols * r * lanes * (lanes - 1) // 2)


def period_features(d):
    cfg = HwConfig.from_dict(d["config"])
    return {"fixed": 1.0, "acc_bits": float(cfg.acc_bits), "pes": float(cfg.rows * cfg.cols)}


def blocks_of(d, family):
    return block_counts(map_memories(d["memories"], family, d.get("spram")))


def _vector(feats, names):
    return np.array([feats[n] for n in names], dtype=float)


def _nnls(a, b):
    """Non-negative least squares (Lawson-Hanson, as in scipy.optimize.nnls), with the
    columns scaled to unit norm first."""
    from scipy.optimize import nnls

    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    x, _ = nnls(a / scale, b)
    return x / scale


@dataclass
class Prediction:
    logic: float
    ff: float
    fmax_mhz: float
    blocks: dict  # block kind -> count (memory mapping)


class Calibration:
    """Measured builds of one FPGA family and the models fitted to them.

    ``records``: one dict per build with its ``design`` (:func:`design`), ``label`` and the
    measured ``logic``, ``ff``, ``fmax_mhz`` (``None`` for a build too big to place) and ``blocks``.
    """

    def __init__(self, family, records, *, check=True):
        self.family, self.records = family, list(records)
        if check and len(self.records) < len(FEATURES):
            raise UserError(f"the {family} resource model needs at least {len(FEATURES)} measured builds, it has "
                            f"{len(self.records)}; run `python -m sim.explore --calibrate --board BOARD`")
        a = np.stack([_vector(features(r["design"], family), FEATURES) for r in self.records])
        self.coef = {t: _nnls(a, np.array([r[t] for r in self.records], dtype=float)) for t in ("logic", "ff")}
        placed = [r for r in self.records if r["fmax_mhz"]]  # a build that did not fit has no Fmax
        a = np.stack([_vector(period_features(r["design"]), PERIOD_FEATURES) for r in placed])
        self.period = np.linalg.lstsq(a, np.array([1e3 / r["fmax_mhz"] for r in placed]), rcond=None)[0]

    @classmethod
    def load(cls, family, path=None):
        path = pathlib.Path(path or CALIBRATION_DIR / f"{family}.json")
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"no resource calibration for {family} at {path}; run `python -m sim.explore "
                            "--calibrate --board BOARD` to build it") from None
        except ValueError as exc:
            raise UserError(f"{path} is not a calibration file ({exc}); rebuild it with --calibrate") from None
        if data.get("family") != family or not isinstance(data.get("records"), list):
            raise UserError(f"{path} is not a {family} calibration; rebuild it with --calibrate")
        return cls(family, data["records"])

    def save(self, path=None):
        path = pathlib.Path(path or CALIBRATION_DIR / f"{self.family}.json")
        write_json(path, {"family": self.family, "features": FEATURES, "period_features": PERIOD_FEATURES,
                          "records": self.records})
        return path

    def predict_design(self, d):
        """The figures of a design (:func:`design`)."""
        feats = _vector(features(d, self.family), FEATURES)
        period = float(_vector(period_features(d), PERIOD_FEATURES) @ self.period)
        return Prediction(logic=float(feats @ self.coef["logic"]), ff=float(feats @ self.coef["ff"]),
                          fmax_mhz=1e3 / period if period > 0 else float("nan"), blocks=blocks_of(d, self.family))

    def predict(self, program):
        return self.predict_design(design(program))

    def errors(self):
        """Per build, the relative error of each model with that build left out of the fit
        (``(predicted - measured) / measured``), and whether the block counts are equal."""
        out = []
        for i, r in enumerate(self.records):
            rest = Calibration(self.family, self.records[:i] + self.records[i + 1:], check=False)
            p = rest.predict_design(r["design"])
            out.append({"label": r["label"], "logic": (p.logic - r["logic"]) / r["logic"],
                        "ff": (p.ff - r["ff"]) / r["ff"],
                        "fmax": (p.fmax_mhz - r["fmax_mhz"]) / r["fmax_mhz"] if r["fmax_mhz"] else None,
                        "blocks_equal": p.blocks == r["blocks"]})
        return out

def measured(report, family):
    """The figures the models predict, read from a build report (:func:`fpga.flow.build`)."""
    res = {r["resource"]: r["used"] for r in report["resources"]}
    logic = res["logic cells" if family == "ice40" else "logic cells (LUT4s + carry)"]
    blocks = {k: v for k, v in res.items() if k.startswith(("block RAM", "SPRAM", "distributed RAM")) and v}
    fmax = min(report["fmax_mhz"].values()) if report.get("fmax_mhz") else None
    return {"logic": logic, "ff": res["flip-flops"], "fmax_mhz": fmax, "blocks": blocks}


def record(program, report, family, label):
    """A calibration record of one build: the design and what the build measured (a build
    too big for the device still counts its cells; it has no Fmax)."""
    return {"label": label, "family": family, "design": design(program), **measured(report, family)}


def capacity_problems(logic, blocks, board, *, measured=False):
    """Why ``logic`` cells and ``blocks`` (kind -> count) do not fit ``board``: one line
    per resource over the device's capacity, naming it and by how much; empty when they fit.
    ``measured`` says the figures come from a build rather than the model."""
    need = "used" if measured else "needed"
    cap = dict(board.capacity)
    logic_name = next(iter(cap))
    problems = []
    if logic > cap[logic_name]:
        problems.append(f"{logic_name}: {'' if measured else 'about '}{logic:,.0f} {need}, the device has "
                        f"{cap[logic_name]:,} ({logic - cap[logic_name]:,.0f} over)")
    for kind, n in blocks.items():
        if n > cap.get(kind, 0):
            problems.append(f"{kind}: {n} {need}, the device has {cap.get(kind, 0)} ({n - cap.get(kind, 0)} over)")
    return problems
