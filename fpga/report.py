"""Read yosys's and nextpnr's outputs into one report: resources, Fmax, critical path, checks.

Sources, all written by the build into its folder: ``yosys_stat.json`` (``stat -json`` of
the mapped design: flip-flops, carries, DSP and multiplier cells), ``nextpnr_report.json``
(``--report``: placed utilisation per cell type, Fmax per clock, critical paths) and
``nextpnr.log`` (the utilisation table when placement fails, so a design that does not
fit is reported with the figure that failed).
"""

import json
import pathlib
import re

from hw.yosys import MULTIPLIER_CELLS

#: Report rows and the placed (nextpnr) or mapped (yosys) cell types they count, per family;
#: a type ending in ``*`` counts every type it begins.
RESOURCES = {
    "ice40": {
        "logic cells": ("pnr", ("ICESTORM_LC",)),
        "LUT4s": ("yosys", ("SB_LUT4",)),
        "flip-flops": ("yosys", ("SB_DFF*",)),  # every SB_DFF variant (enable, set/reset, negedge)
        "carry cells": ("yosys", ("SB_CARRY",)),
        "block RAM (4 kbit)": ("pnr", ("ICESTORM_RAM",)),
        "SPRAM (256 kbit)": ("pnr", ("ICESTORM_SPRAM",)),
        "DSP blocks": ("pnr", ("ICESTORM_DSP",)),
        "I/O": ("pnr", ("SB_IO",)),
    },
    "ecp5": {
        "logic cells (LUT4s + carry)": ("pnr", ("TRELLIS_COMB",)),
        "LUT4s": ("yosys", ("LUT4",)),
        "flip-flops": ("pnr", ("TRELLIS_FF",)),
        "carry cells (CCU2C)": ("yosys", ("CCU2C",)),
        "block RAM (DP16KD)": ("pnr", ("DP16KD",)),
        "distributed RAM": ("pnr", ("TRELLIS_RAMW",)),
        "DSP blocks": ("pnr", ("MULT18X18D", "ALU54B")),
        "I/O": ("pnr", ("TRELLIS_IO",)),
    },
}
#: Rows whose "available" is shown as a percentage (the device's limits).
CAPACITY_ROWS = ("logic cells", "logic cells (LUT4s + carry)", "block RAM (4 kbit)", "block RAM (DP16KD)",
                 "SPRAM (256 kbit)", "flip-flops", "I/O")

_UTIL_LINE = re.compile(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%")


def _matches(cell, pattern):
    return cell.startswith(pattern[:-1]) if pattern.endswith("*") else cell == pattern


def placed_utilisation(folder):
    """``{cell type: (used, available)}`` from the report, else from the log's table."""
    folder = pathlib.Path(folder)
    report = folder / "nextpnr_report.json"
    if report.exists():
        util = json.loads(report.read_text()).get("utilization", {})
        return {k: (int(v["used"]), int(v["available"])) for k, v in util.items()}
    log = folder / "nextpnr.log"
    found = {}
    if log.exists():
        for m in _UTIL_LINE.finditer(log.read_text(errors="replace")):
            found[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return found


def mapped_cells(folder):
    """Cell type -> count of the synthesised top (yosys ``stat -json``)."""
    stat = json.loads((pathlib.Path(folder) / "yosys_stat.json").read_text())
    modules = stat.get("modules", {})
    top = stat.get("design", {})
    cells = top.get("num_cells_by_type", top.get("cells"))
    if cells is None and modules:  # one module: its own counts
        mod = next(iter(modules.values()))
        cells = mod.get("num_cells_by_type") or mod.get("cells") or {}
    return {str(k): int(v) for k, v in (cells or {}).items()}


def fmax(folder):
    """``{clock: (achieved MHz, constraint MHz)}`` from nextpnr's report."""
    report = pathlib.Path(folder) / "nextpnr_report.json"
    if not report.exists():
        return {}
    data = json.loads(report.read_text()).get("fmax", {})
    return {k: (float(v["achieved"]), float(v["constraint"])) for k, v in data.items()}


def critical_path(folder):
    """A one-line summary of the slowest clock's critical path: start and end cells,
    total delay, logic and routing shares, and the source lines nextpnr attributes."""
    report = pathlib.Path(folder) / "nextpnr_report.json"
    if not report.exists():
        return None
    paths = json.loads(report.read_text()).get("critical_paths", [])
    paths = [p for p in paths if p.get("path") and "async" not in (p.get("from", "") + p.get("to", ""))]
    if not paths:
        return None
    worst = max(paths, key=lambda p: sum(float(s.get("delay", 0)) for s in p["path"]))
    steps = worst["path"]
    total = sum(float(s.get("delay", 0)) for s in steps)
    routing = sum(float(s.get("delay", 0)) for s in steps if s.get("type") == "routing")
    start = steps[0].get("from", {}).get("cell", "?")
    end = steps[-1].get("to", {}).get("cell", "?")
    return {"from": start, "to": end, "ns": round(total, 2), "routing_ns": round(routing, 2),
            "logic_ns": round(total - routing, 2), "steps": len(steps)}


def build_report(folder, board, *, target_mhz, record):
    """The report dict of a finished (or failed) build in ``folder``."""
    util = placed_utilisation(folder)
    cells = mapped_cells(folder) if (pathlib.Path(folder) / "yosys_stat.json").exists() else {}
    rows = []
    for label, (source, types) in RESOURCES[board.family].items():
        if source == "pnr":
            used = sum(util.get(t, (0, 0))[0] for t in types)
            avail = sum(util.get(t, (0, 0))[1] for t in types)
        else:
            used, avail = sum(n for cell, n in cells.items() if any(_matches(cell, t) for t in types)), None
        if label == "flip-flops" and board.family == "ice40":
            avail = util.get("ICESTORM_LC", (0, None))[1]
        rows.append({"resource": label, "used": used, "available": avail})
    clocks = fmax(folder)
    multipliers = {k: v for k, v in cells.items() if k in MULTIPLIER_CELLS and v}
    dsp = sum(r["used"] for r in rows if r["resource"] == "DSP blocks")
    failures = []
    for r in rows:
        if r["available"] and r["used"] > r["available"] and r["resource"] in CAPACITY_ROWS:
            failures.append(f"{r['resource']}: {r['used']} used, the device has {r['available']}")
    if dsp:
        failures.append(f"{dsp} DSP block(s) in the design: the datapath must have none")
    if multipliers:
        failures.append(f"multiplier cells {multipliers} in the netlist: the datapath must have none")
    worst = min((a for a, _ in clocks.values()), default=None)
    if worst is None and not failures:
        failures.append("nextpnr reported no Fmax (see nextpnr.log)")
    elif worst is not None and worst < target_mhz:
        failures.append(f"Fmax {worst:.2f} MHz is below the {target_mhz:g} MHz target")
    return {
        "board": board.name, "family": board.family, "device": " ".join(board.pnr_device),
        "resources": rows,
        "fmax_mhz": {k: round(a, 2) for k, (a, _) in clocks.items()},
        "target_mhz": target_mhz,
        "goal_mhz": board.target_mhz,
        "meets_goal": worst is not None and worst >= board.target_mhz,
        "board_clock_mhz": board.board_clock_mhz,
        "critical_path": critical_path(folder),
        "dsp_blocks": dsp,
        "multiplier_cells": sum(multipliers.values()),
        "passed": not failures,
        "failures": failures,
        "design": record,
    }


def network_figures(report):
    """Cycles, PE use and images per second of a network design at the nextpnr Fmax and at
    the clock it runs at (its PLL's, or the board's oscillator)."""
    d = report["design"]
    fmax = min(report["fmax_mhz"].values(), default=None)
    runs_at = d.get("clock_mhz", report["board_clock_mhz"])
    return {
        "cycles_per_image": d["cycles"],
        "conv_pe_use": d["conv_pe_use"],
        "clock_mhz": runs_at,
        "images_per_s_fmax": fmax * 1e6 / d["cycles"] if fmax else None,
        "images_per_s": runs_at * 1e6 / d["cycles"],
        "mac_bound": d["macs"] and d["config"]["rows"] * d["config"]["cols"] * runs_at * 1e6 / d["macs"],
    }


def _build_step(b, kept):
    at = "the oscillator" if b["pll_mhz"] is None else f"PLL {b['pll_mhz']:.4g} MHz"
    step = f"{at} -> Fmax {b['fmax_mhz']:.2f} MHz" if b["fmax_mhz"] else f"{at} -> no Fmax"
    return step + (" (kept)" if kept else "")


def design_lines(report):
    d = report["design"]
    if d.get("design") != "network":
        return [f"Self-test: layer {d['layer']}, golden sample {d['sample']}, {d['cycles']} engine cycles, expected "
                f"checksum 0x{d['expected_checksum']:08x}."]
    f = network_figures(report)
    lines = [f"Network engine behind a UART link at {d['baud']} baud ({d['clocks_per_bit']} clocks a bit); "
             f"model {d['artifact']}.", "",
             "| step | K tiles | N blocks | positions | cycles | PE use |", "|---|---:|---:|---:|---:|---:|"]
    for s in d["steps"]:
        lines.append(f"| {'+'.join(s['layers'])} | {s['k_tiles']} | {s['n_blocks']} | {s['positions']} | "
                     f"{s['cycles']} | {s['pe_use']:.1%} |")
    lines += ["", f"- cycles per image: **{f['cycles_per_image']}**; PE use over the conv layers: "
              f"**{f['conv_pe_use']:.1%}**" if f["conv_pe_use"] is not None else
              f"- cycles per image: **{f['cycles_per_image']}**"]
    pll = d.get("pll")
    source = (f"the {pll['primitive']} PLL's {pll['out_mhz']:.4g} MHz" if pll else
              f"the {report['board_clock_mhz']:g} MHz oscillator")
    lines.append(f"- images per second at the clock the board runs, {source}: **{f['images_per_s']:.0f}** "
                 f"({f['images_per_s'] / f['mac_bound']:.1%} of the MAC bound, {f['mac_bound']:.0f}: PEs x clock / "
                 "MACs); compute only, the UART carries the image and the reply")
    clock = report.get("clock")
    if clock:
        lines.append(f"- clock chosen from the placed Fmax, the PLL at most {clock['margin']:.0%} below it; builds: "
                     + "; ".join(_build_step(b, i == clock.get("kept")) for i, b in enumerate(clock["builds"])))
    if f["images_per_s_fmax"]:
        lines.append(f"- at the nextpnr Fmax it would be {f['images_per_s_fmax']:.0f}")
    return lines


def markdown(report):
    """The report as a Markdown table and a few lines."""
    d = report["design"]
    cfg = d["config"]
    lines = [
        f"# {report['board']} ({report['device']}): {cfg['rows']}x{cfg['cols']} array, "
        f"A{cfg['abits']} W{cfg['wbits']}x{cfg['terms']}, {d['derived']['acc_bits']}-bit accumulators",
        "",
        *design_lines(report),
        "",
        "| resource | used | available | use |",
        "|---|---:|---:|---:|",
    ]
    for r in report["resources"]:
        avail = r["available"]
        share = f"{r['used'] / avail:.0%}" if avail else ""
        lines.append(f"| {r['resource']} | {r['used']} | {avail if avail else ''} | {share} |")
    lines.append("")
    for clock, mhz in report["fmax_mhz"].items():
        lines.append(f"- Fmax `{clock}`: **{mhz:.2f} MHz** (build target {report['target_mhz']:.4g} MHz; "
                     f"goal {report['goal_mhz']:g} MHz: {'met' if report['meets_goal'] else 'NOT met'}; "
                     f"the oscillator is {report['board_clock_mhz']:g} MHz)")
    cp = report["critical_path"]
    if cp:
        lines.append(f"- critical path: {cp['from']} -> {cp['to']}, {cp['ns']} ns ({cp['logic_ns']} ns logic, "
                     f"{cp['routing_ns']} ns routing, {cp['steps']} steps)")
    lines.append(f"- DSP blocks: {report['dsp_blocks']}; multiplier cells: {report['multiplier_cells']}")
    lines.append(f"- result: {'PASS' if report['passed'] else 'FAIL: ' + '; '.join(report['failures'])}")
    return "\n".join(lines) + "\n"
