"""Run a cocotb testbench on a generated top: build (cached per config), write the case, simulate."""

import json
import os
import pathlib
import tempfile

from hw.design import TOPS

from . import runner
from .tb import CASE_ENV


def simulate(cfg, top, test_module, testcase, case, *, workdir=None):
    """Simulate ``top`` (``"pe"``, ``"array"`` or ``"engine"``) built from ``cfg`` on Verilator.

    Parameters
    ----------
    cfg : core.hwconfig.HwConfig
        The design; the build is cached per ``(top, cfg)``.
    test_module, testcase : str
        The cocotb module (e.g. ``"sim.cocotb_array"``) and test in it.
    case : dict
        JSON-able test data; the testbench reads it back with :func:`sim.tb.load_case`.
    workdir : path-like, optional
        Where the case file goes (a temporary directory by default).

    Raises
    ------
    AssertionError
        With the testbench's mismatch report, when the test fails.
    """
    build = runner.build(lambda: TOPS[top](cfg), name=top, config={"top": top, **cfg.to_dict()})
    with tempfile.TemporaryDirectory(prefix="case-", dir=workdir) as tmp:
        path = pathlib.Path(tmp) / "case.json"
        path.write_text(json.dumps({**case, "config": cfg.to_dict()}))
        return runner.run(build, test_module, testcase=testcase, extra_env={CASE_ENV: os.fspath(path)})
