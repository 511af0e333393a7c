"""``python -m sim.lint``: Verilator's ``--lint-only -Wall`` on generated Verilog, less the warnings
that Amaranth's output trips harmlessly; exits 1 when any other warning is left."""

import collections
import os
import pathlib
import re
import subprocess
import sys
import tempfile

from core.cli import make_parser
from core.errors import UserError, cli_main

from .runner import verilator_env

#: Verilator warning classes allowed in Amaranth's Verilog, each with why it is harmless there.
#: These are the ones seen on the pe, array and engine tops (plain and pipelined, 1 and 2 terms).
#: Everything else fails the lint, notably LATCH, MULTIDRIVEN, COMBDLY, BLKSEQ, UNDRIVEN,
#: IMPLICIT, SYNCASYNCNET, ALWCOMBORDER and the UNOPT* classes.
ALLOWED = {
    # Amaranth's width rules are its own and exact; yosys writes them out with Verilog's
    # context-sized operators (`a + b` into a wider sum, `!x` of a vector), which Verilator flags.
    "WIDTHEXPAND": "operands zero/sign-extended by Verilog's sizing rules, as Amaranth's semantics ask",
    "WIDTHTRUNC": "logical operators on vectors (`!state`) and results cut to the declared width, as in Amaranth",
    "UNUSEDSIGNAL": "Amaranth declares whole signals of which a design reads only some bits (a struct's fields)",
    "DECLFILENAME": "Amaranth writes every submodule into the top's file, named `top.sub`, not after the file",
    "PROCASSINIT": "registers are declared with their reset value as initial value (power-on state) and "
                   "assigned in an always block",
    # Amaranth assigns each combinational signal its default at the top of the always block, before
    # the `casez`; an uncovered value (an FSM's unused state encodings) keeps that default, so it
    # builds no latch. A real latch is reported as LATCH, which is not allowed.
    "CASEINCOMPLETE": "an uncovered case value keeps the default assigned before the casez: no latch",
    # The RTL is parametric: for some shapes a bound is a counter's largest value, so the test
    # is constant there; yosys folds it. A counter too narrow for its bound would also show
    # here, but the simulations' cycle counts (hw.plan.LayerPlan.cycles) catch that.
}

_MESSAGE = re.compile(r"^%(Warning|Error)(?:-([A-Za-z0-9_]+))?: (.*)$")


def lint_all(verilog_path, top):
    """Every warning of ``verilator --lint-only -Wall`` on ``top`` in ``verilog_path``.

    Returns
    -------
    list of (str, str)
        ``(code, message)`` in the order reported; ``message`` starts with ``file:line:col:``.

    Raises
    ------
    core.errors.UserError
        If the file does not exist, Verilator is not usable, or Verilator cannot read the design
        (a syntax error, no module ``top``): then there is no lint result.
    """
    path = pathlib.Path(verilog_path)
    if not path.is_file():
        raise UserError(f"no Verilog file {path}; write one with `python -m hw.generate`")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", top):
        raise UserError(f"--top must be a Verilog module name, not {top!r}")
    env = {**os.environ, **verilator_env()}
    cmd = ["verilator", "--lint-only", "-Wall", "-Wno-fatal", "--top-module", top, str(path.resolve())]
    with tempfile.TemporaryDirectory(prefix="lint-") as tmp:  # nothing is written, but just in case
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, check=False)
    found, errors = [], []
    for line in (proc.stderr + proc.stdout).splitlines():
        m = _MESSAGE.match(line)
        if m is None:
            continue  # the source excerpts and notes under each message
        kind, code, message = m.groups()
        if kind == "Error":
            errors.append(message if code is None else f"{code}: {message}")
        else:
            found.append((code or "WARNING", message))
    if errors or proc.returncode != 0:
        first = errors[0] if errors else (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"verilator cannot lint {path} (top {top}): {first}")
    return found


def lint(verilog_path, top):
    """The warnings that matter: :func:`lint_all` less the classes in :data:`ALLOWED`."""
    return [(code, message) for code, message in lint_all(verilog_path, top) if code not in ALLOWED]


@cli_main
def main(argv=None):
    parser = make_parser("python -m sim.lint", __doc__.replace("``", ""),
                         epilog="example: python -m hw.generate --top array --rows 2 --cols 2 "
                                "--out build/rtl && python -m sim.lint build/rtl/array.v --top array")
    parser.add_argument("verilog", help="the Verilog file")
    parser.add_argument("--top", required=True, help="its top module (e.g. engine, array, pe)")
    args = parser.parse_args(argv)
    warnings = lint_all(args.verilog, args.top)
    matter = [(code, message) for code, message in warnings if code not in ALLOWED]
    for code, message in matter:
        print(f"{code}: {message}")
    allowed = collections.Counter(code for code, _ in warnings if code in ALLOWED)
    summary = ", ".join(f"{code} x{n}" for code, n in sorted(allowed.items())) or "none"
    print(f"{args.verilog}: {len(matter)} warning(s) that matter; allowed: {summary}", file=sys.stderr)
    return 1 if matter else 0


if __name__ == "__main__":
    sys.exit(main())
