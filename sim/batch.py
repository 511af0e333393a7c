"""Batch simulation of the network core: many images through a Verilated ``network_core`` driven by
a C++ harness (``sim/batch_main.cpp``), with no Python in the per-cycle loop.

The core's Verilog ports (synchronous to ``clk``, active-high synchronous reset ``rst``):
``in_first``, ``in_valid``, ``in_data`` (``input_bits`` wide), ``start``, ``logit_addr`` in;
``in_ready``, ``busy``, ``done``, ``step_done``, ``logit_data`` (signed, ``logit_bits`` wide) out. The harness
drives them as ``sim/batch_main.cpp`` describes: per image an ``in_first`` cycle, the codes
(honouring ``in_ready``), idle cycles until ``busy`` is low, the ``start`` cycle, cycles until
``done``, then the logits read combinationally (``logit_addr`` set, no clock edge) after the
rising edge that ends the ``done`` cycle. The cycle count of an image is the number of rising
edges from the one that ends its ``start`` cycle to the last one before ``done`` is high: with
the ``start`` cycle as cycle 1, the cycles before the one in which ``done`` is high. A core whose
``done`` is high in the cycle right after the ``start`` cycle counts 1. This is the count of
:func:`sim.amaranth_sim.run_network` (which reads ``done`` after each tick) and of
:meth:`hw.program.NetworkProgram.cycles`. ``step_done`` is read in the same cycles (after the
``start`` cycle, up to and including the ``done`` cycle): the counts at which it is high end the
program's steps, and an image's step cycles are their differences (the first from the ``start``
cycle, counted 0), which sum to its cycle count; each step's is
``plan.cycles() + hw.program.STEP_OVERHEAD``. An image with a number of such cycles other than
``n_steps`` fails the run. The design is reset (``rst`` high for 4 cycles) once per process, not
per image.

File formats (little-endian), one pair per process:

* input: ``b"NCBATCH2"``; uint32 ``n_images``, ``n_inputs``, ``num_classes``, ``logit_bits``,
  ``input_bits``, ``first_image`` (the global index of the file's first image, for messages),
  ``n_steps`` (``0xffffffff``: ``step_done`` is not watched); uint64 ``cycle_limit``; then
  ``n_images * n_inputs`` uint8 codes, image by image.
* output: ``b"NCRESLT2"``; uint32 ``n_images``, ``num_classes``, ``n_steps`` (0 when not
  watched); then per image a uint64 cycle count, ``n_steps`` uint64 step cycle counts and
  ``num_classes`` int32 logits (sign-extended from ``logit_bits``).

The executable is ``<build_dir>/obj/batch``; run by hand it is ``batch INPUT OUTPUT [TRACE.vcd]``
and exits 0, 2 (bad arguments or files), 3 (a cycle limit was exceeded) or 4 (an image's number
of ``step_done`` cycles was not ``n_steps``).
"""

import collections
import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from core.errors import UserError
from core.fileio import write_json
from sim import runner

TOP = "network_core"
HARNESS = pathlib.Path(__file__).resolve().with_name("batch_main.cpp")
EXECUTABLE = "batch"
IN_MAGIC = b"NCBATCH2"
OUT_MAGIC = b"NCRESLT2"
HANG_STATUS = 3  # the harness's exit status when a cycle limit is exceeded
STEPS_STATUS = 4  # ... when an image's number of step_done cycles is not n_steps
NO_STEPS = 0xFFFFFFFF  # n_steps when step_done is not watched

#: Verilator arguments of every batch build (``--trace-vcd`` is added for a waves build).
VERILATOR_ARGS = ("--cc", "--exe", "--build", "-O3", "--x-assign", "fast", "--x-initial", "fast",
                  "--threads", "1", *runner.BASE_BUILD_ARGS)

#: C++ optimisation for the batch build, replacing :func:`sim.runner.verilator_env`'s (which
#: keeps cocotb builds' compile time down). The batch simulates tens of millions of cycles, so
#: the per-cycle code (OPT_FAST) and Verilator's runtime library (OPT_GLOBAL) get -O2; there is
#: no cocotb symbol table here, so the run-once code (OPT_SLOW) is small, and -O0 is enough.
CXX_OPT = ("OPT_FAST=-O2", "OPT_SLOW=-O0", "OPT_GLOBAL=-O2")

_PORTS_1BIT = {"clk": "input", "rst": "input", "in_first": "input", "in_valid": "input", "in_ready": "output",
               "start": "input", "busy": "output", "done": "output", "step_done": "output"}
_LOG_TAIL = 20

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BatchBuild:
    """A built batch simulator of a network core, for :func:`run_batch`.

    Attributes
    ----------
    build_dir : pathlib.Path
        ``build_root / f"batch-{key}"``: ``network_core.v``, ``batch_main.cpp``, ``config.json``,
        ``build.log`` and the Verilator objects in ``obj/``.
    executable : pathlib.Path
        The harness executable (``build_dir / "obj" / "batch"``).
    input_bits, num_classes, logit_bits : int
        The core's parameters the build was checked against.
    waves : bool
        Whether the executable can write a VCD trace (``run_batch(..., trace=path)``).
    """

    build_dir: pathlib.Path
    executable: pathlib.Path
    input_bits: int
    num_classes: int
    logit_bits: int
    waves: bool = False


def build_batch(verilog, *, input_bits, num_classes, logit_bits, build_root=None, waves=False):
    """Build (or reuse) the batch simulator of a network core.

    The build directory is ``build_root / f"batch-{key}"`` where ``key`` is the first 12 hex digits
    of a SHA-1 over the Verilog text, the harness source, the parameters, the Verilator and C++
    flags and the Verilator version; a build is reused when that directory holds an executable
    and a ``.stamp`` written after a successful build. A lock on ``.lock`` serialises concurrent
    builds of one directory.

    Parameters
    ----------
    verilog : str or os.PathLike
        The core's Verilog text (top module ``network_core``, e.g. from
        ``sim.runner.verilog_text(core, name="network_core")``), or the path of a file holding it
        (a ``str`` is taken as text when it contains a newline).
    input_bits : int
        Width of ``in_data`` (1..8; codes are bytes).
    num_classes : int
        Number of logits; ``logit_addr`` must be wide enough to address them.
    logit_bits : int
        Width of ``logit_data`` (1..32).
    build_root : str or os.PathLike, optional
        Parent of the build directories; default ``<repo>/build/sim``.
    waves : bool, optional
        Build with VCD tracing, for ``run_batch(..., trace=path)`` (slower; for a few images).

    Returns
    -------
    BatchBuild

    Raises
    ------
    core.errors.UserError
        If the Verilog file is missing, its ``network_core`` lacks a port or has one of the wrong
        direction or width, a parameter is out of range, or Verilator is not usable.
    RuntimeError
        If the Verilator build fails; the message quotes the end of ``build.log``.
    """
    for label, value, low, high in (("input_bits", input_bits, 1, 8), ("logit_bits", logit_bits, 1, 32),
                                    ("num_classes", num_classes, 1, 1 << 31)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
            raise UserError(f"{label} must be an integer in {low}..{high}, not {value!r}")
    input_bits, num_classes, logit_bits = int(input_bits), int(num_classes), int(logit_bits)
    text = _verilog_text(verilog)
    check_ports(text, input_bits=input_bits, num_classes=num_classes, logit_bits=logit_bits)

    env = runner.verilator_env()
    env["MAKEFLAGS"] = _replace_make_overrides(env["MAKEFLAGS"], CXX_OPT)
    jobs = max(1, min(2, os.cpu_count() or 1))
    args = [*VERILATOR_ARGS, *(["--trace-vcd"] if waves else []), "--top-module", TOP, "--Mdir", "obj",
            "-o", EXECUTABLE, "--build-jobs", str(jobs)]
    harness = HARNESS.read_text()
    config = {"input_bits": input_bits, "num_classes": num_classes, "logit_bits": logit_bits, "waves": bool(waves)}
    stamp = hashlib.sha1(json.dumps([text, harness, config, args, CXX_OPT,
                                     importlib.metadata.version("verilator")]).encode()).hexdigest()
    root = pathlib.Path(build_root) if build_root is not None else runner.DEFAULT_BUILD_ROOT
    build_dir = (root / f"batch-{stamp[:12]}").absolute()
    result = BatchBuild(build_dir=build_dir, executable=build_dir / "obj" / EXECUTABLE, input_bits=input_bits,
                        num_classes=num_classes, logit_bits=logit_bits, waves=bool(waves))

    build_dir.mkdir(parents=True, exist_ok=True)
    stamp_file = build_dir / ".stamp"
    build_log = build_dir / "build.log"
    with runner._locked(build_dir / ".lock"):
        if result.executable.is_file() and runner._read_text(stamp_file) == stamp:
            return result
        stamp_file.unlink(missing_ok=True)
        shutil.rmtree(build_dir / "obj", ignore_errors=True)  # the key covers every input: start clean
        runner._write_text(build_dir / f"{TOP}.v", text)
        runner._write_text(build_dir / HARNESS.name, harness)
        write_json(build_dir / "config.json", {**config, "verilator_args": args, "make": list(CXX_OPT)})
        verilator = shutil.which("verilator", path=env["PATH"])
        command = [verilator, *args, f"{TOP}.v", HARNESS.name]
        log.info("building the batch simulator in %s (log: %s)", build_dir, build_log)
        started = time.monotonic()
        with open(build_log, "w") as log_file:
            log_file.write(" ".join(command) + "\n")
            log_file.flush()
            proc = subprocess.run(command, cwd=build_dir, env={**os.environ, **env}, stdout=log_file,
                                  stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0 or not result.executable.is_file():
            raise RuntimeError(f"Verilator build of the batch simulator failed (exit {proc.returncode}); "
                               f"last lines of {build_log}:\n{runner._tail(build_log)}")
        with open(build_log, "a") as log_file:
            log_file.write(f"build took {time.monotonic() - started:.1f} s\n")
        for pch in (build_dir / "obj").glob("*.gch"):
            pch.unlink()
        runner._write_text(stamp_file, stamp)
    return result


def run_batch(build, codes, *, cycle_limit, steps=None, jobs=None, progress=True, trace=None):
    """Run images through a batch simulator.

    Parameters
    ----------
    build : BatchBuild
        From :func:`build_batch`.
    codes : array_like of int, shape (N, n_inputs)
        Each row is one image's input codes (0 .. 2**input_bits - 1), in the order the core takes them.
    cycle_limit : int
        Largest cycle count (as counted above) an image may take before ``done``; also the most
        consecutive cycles ``in_ready`` may stay low, and ``busy`` high before ``start``.
    steps : int, optional
        The number of steps of the core's program: watch ``step_done``, require exactly this many
        cycles with it high in every image's run and return the step cycles as well.
    jobs : int, optional
        Processes to split the images across (each on a contiguous share, its own reset);
        default ``min(2, os.cpu_count())``; never more than N.
    progress : bool, optional
        Copy the harness's progress lines (about every 10% of a process's images) to stderr.
    trace : str or os.PathLike, optional
        Write a VCD trace of the whole run there (a ``waves=True`` build; runs one process).

    Returns
    -------
    logits : numpy.ndarray of int64, shape (N, num_classes)
    cycles : numpy.ndarray of int64, shape (N,)
    step_cycles : numpy.ndarray of int64, shape (N, steps)
        Only with ``steps``: each step's cycles (see above); a row sums to the image's ``cycles``.

    Raises
    ------
    core.errors.UserError
        If a code is out of range, an image exceeded ``cycle_limit`` (the message names the
        image by its index in ``codes`` and what it waited for), or (with ``steps``) an image's
        run had another number of ``step_done`` cycles.
    RuntimeError
        If the harness failed otherwise (the message quotes its stderr).
    """
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must have shape (N, n_inputs), not {codes.shape}")
    if codes.size and not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be integers, not {codes.dtype}")
    top = (1 << build.input_bits) - 1
    if codes.size and (codes.min() < 0 or codes.max() > top):
        bad = int(np.flatnonzero((codes < 0).any(axis=1) | (codes > top).any(axis=1))[0])
        raise UserError(f"image {bad} has input codes outside 0..{top} (input_bits={build.input_bits}); "
                        "quantise the inputs for this core")
    if isinstance(cycle_limit, bool) or not isinstance(cycle_limit, (int, np.integer)) or cycle_limit < 1:
        raise ValueError(f"cycle_limit must be a positive integer, not {cycle_limit!r}")
    n_images, n_inputs = codes.shape
    if n_images >= 1 << 32 or n_inputs >= 1 << 32:
        raise ValueError(f"too many images or codes per image: {codes.shape}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer))
                              or not 0 <= steps < NO_STEPS):
        raise ValueError(f"steps must be a non-negative integer, not {steps!r}")
    n_steps = NO_STEPS if steps is None else int(steps)
    jobs = min(2, os.cpu_count() or 1) if jobs is None else int(jobs)
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    if trace is not None:
        if not build.waves:
            raise UserError("tracing needs a batch simulator built with build_batch(..., waves=True)")
        jobs = 1
    jobs = min(jobs, n_images)
    if n_images == 0:
        empty = np.zeros((0, build.num_classes), np.int64), np.zeros(0, np.int64)
        return empty if steps is None else (*empty, np.zeros((0, n_steps), np.int64))

    bounds = np.linspace(0, n_images, jobs + 1).round().astype(int)
    data = np.ascontiguousarray(codes, dtype=np.uint8)
    runs = build.build_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="batch-", dir=runs) as tmp:
        tmp = pathlib.Path(tmp)
        procs = []
        try:
            for j in range(jobs):
                first, stop = int(bounds[j]), int(bounds[j + 1])
                in_path, out_path = tmp / f"in{j}.bin", tmp / f"out{j}.bin"
                _write_input(in_path, data[first:stop], build, first, int(cycle_limit), n_steps)
                command = [str(build.executable), str(in_path), str(out_path)]
                if trace is not None:
                    command.append(str(pathlib.Path(trace).absolute()))
                proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, errors="replace")
                prefix = f"[job {j + 1}/{jobs}] " if jobs > 1 else ""
                procs.append(_Job(proc, prefix, progress, out_path, stop - first))
            failed = _wait(procs)
        finally:
            for job in procs:
                if job.proc.poll() is None:
                    job.proc.kill()
                job.proc.wait()
                job.reader.join()
        if failed is not None:
            _raise_for(failed, cycle_limit)
        parts = [_read_output(job.out_path, job.n_images, build.num_classes, 0 if steps is None else n_steps)
                 for job in procs]
    logits = np.concatenate([p[0] for p in parts]).astype(np.int64)
    cycles = np.concatenate([p[1] for p in parts]).astype(np.int64)
    if steps is None:
        return logits, cycles
    return logits, cycles, np.concatenate([p[2] for p in parts]).astype(np.int64)


def check_ports(text, *, input_bits, num_classes, logit_bits):
    """Raise :class:`UserError` unless the Verilog's ``network_core`` has the batch ports.

    Extra ports are allowed (inputs are held at 0). Returns ``{name: (direction, width)}``.
    """
    ports = read_ports(text)
    need = {name: (direction, 1) for name, direction in _PORTS_1BIT.items()}
    need["in_data"] = ("input", input_bits)
    need["logit_data"] = ("output", logit_bits)
    addr_bits = max(1, (num_classes - 1).bit_length())
    for name, (direction, width) in need.items():
        if name not in ports:
            raise UserError(f"the network_core Verilog has no port {name}; the batch harness needs "
                            f"{', '.join(need)} and logit_addr")
        if ports[name] != (direction, width):
            raise UserError(f"network_core port {name} is {ports[name][0]} [{ports[name][1]} bits], expected "
                            f"{direction} [{width} bits] (input_bits={input_bits}, logit_bits={logit_bits})")
    if ports.get("logit_addr", ("", 0))[0] != "input" or ports["logit_addr"][1] < addr_bits:
        raise UserError(f"network_core needs an input logit_addr of at least {addr_bits} bits for "
                        f"num_classes={num_classes}, found {ports.get('logit_addr', 'none')}")
    return ports


def read_ports(text, name=TOP):
    """``{port: (direction, width)}`` of module ``name`` in Verilog ``text`` (a light parser for
    generated Verilog: ANSI or not, constant ``[msb:lsb]`` ranges)."""
    text = re.sub(r"\(\*.*?\*\)|/\*.*?\*/|//[^\n]*", " ", text, flags=re.S)
    match = re.search(rf"\bmodule\s+{re.escape(name)}\b(.*?)\bendmodule\b", text, flags=re.S)
    if match is None:
        raise UserError(f"the Verilog has no module {name}; convert the core with name={name!r}")
    ports = {}
    ident = r"[A-Za-z_]\w*"
    decl = re.compile(rf"\b(input|output)\s+(?:(?:wire|reg|logic)\s+)?(?:signed\s+)?"
                      rf"(?:\[\s*(\d+)\s*:\s*(\d+)\s*\]\s*)?({ident}(?:\s*,\s*(?!input\b|output\b|inout\b){ident})*)")
    for direction, msb, lsb, names in decl.findall(match.group(1)):
        width = abs(int(msb) - int(lsb)) + 1 if msb else 1
        for port in re.split(r"\s*,\s*", names.strip()):
            ports[port] = (direction, width)
    return ports


@dataclasses.dataclass
class _Job:
    proc: subprocess.Popen
    prefix: str
    progress: bool
    out_path: pathlib.Path
    n_images: int
    tail: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=_LOG_TAIL))
    reader: threading.Thread = None

    def __post_init__(self):
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            line = line.rstrip("\n")
            self.tail.append(line)
            if self.progress and not line.startswith("error:"):
                print(self.prefix + line, file=sys.stderr, flush=True)
        self.proc.stderr.close()


def _wait(jobs):
    """Wait for every job; the first that fails (others are then killed), or None."""
    while True:
        running = False
        for job in jobs:
            status = job.proc.poll()
            if status is None:
                running = True
            elif status != 0:
                for other in jobs:
                    if other.proc.poll() is None:
                        other.proc.kill()
                return job
        if not running:
            return None
        time.sleep(0.02)


def _raise_for(job, cycle_limit):
    job.proc.wait()
    job.reader.join()
    errors = [line[len("error:"):].strip() for line in job.tail if line.startswith("error:")]
    if job.proc.returncode == HANG_STATUS and errors:
        raise UserError(f"the network core hung: {errors[-1]}; raise cycle_limit (now {cycle_limit}) "
                        "if the core is only slow")
    if job.proc.returncode == STEPS_STATUS and errors:
        raise UserError(f"the network core ran another number of steps: {errors[-1]}")
    tail = "\n".join(job.tail) or "(no output)"
    raise RuntimeError(f"the batch simulator {job.proc.args[0]} failed (exit {job.proc.returncode}); "
                       f"its last lines:\n{tail}")


def _write_input(path, codes, build, first_image, cycle_limit, n_steps):
    n_images, n_inputs = codes.shape
    header = IN_MAGIC + np.array([n_images, n_inputs, build.num_classes, build.logit_bits, build.input_bits,
                                  first_image, n_steps], "<u4").tobytes() + np.array([cycle_limit], "<u8").tobytes()
    with open(path, "wb") as f:
        f.write(header)
        f.write(codes.tobytes())


def _read_output(path, n_images, num_classes, n_steps):
    raw = pathlib.Path(path).read_bytes()
    record = np.dtype([("cycles", "<u8"), ("steps", "<u8", (n_steps,)), ("logits", "<i4", (num_classes,))])
    head = len(OUT_MAGIC) + 12
    if (raw[:len(OUT_MAGIC)] != OUT_MAGIC or len(raw) != head + n_images * record.itemsize
            or tuple(np.frombuffer(raw[len(OUT_MAGIC):head], "<u4")) != (n_images, num_classes, n_steps)):
        raise RuntimeError(f"the batch simulator's output {path} is malformed ({len(raw)} bytes)")
    out = np.frombuffer(raw, record, offset=head)
    return (out["logits"].reshape(n_images, num_classes), out["cycles"],
            out["steps"].reshape(n_images, n_steps))


def _verilog_text(verilog):
    if isinstance(verilog, str) and "\n" in verilog:
        return verilog
    path = pathlib.Path(verilog)
    try:
        return path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read the network core's Verilog {path}: {exc.strerror}") from None


def _replace_make_overrides(makeflags, overrides):
    """``makeflags`` with each ``VAR=...`` word of ``overrides`` replacing the same variable's."""
    names = {o.split("=", 1)[0] + "=" for o in overrides}
    words = [w for w in makeflags.split() if not any(w.startswith(n) for n in names)]
    if "--" not in words:
        words.append("--")
    return " ".join(words + list(overrides))
