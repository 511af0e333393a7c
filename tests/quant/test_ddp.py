"""Data-parallel training (quant.distributed): 2 processes under torchrun train what 1 process trains.

A float run of a network with BatchNorm2d, BatchNorm1d and dropout, and a pow2 W4/A4 run from it,
each trained by ``python -m torch.distributed.run --standalone --nproc_per_node 2 -m quant.train``
and by one process with the same config and global batch: digits' 1437 training images in
batches of 64, so the last batch of 29 splits 15/14.

Tolerance.  The two processes compute what one computes except for the order of float sums: a
gradient is the sum of two half-batch sums, BatchNorm's statistics combine the two shards'.  That
is a few float32 ulps per step.  Measured after the float run's 69 steps: at most 5.4e-6 of a
tensor's largest element (the hidden linear layer behind the dropout), 1e-7 to 3e-7 elsewhere.
``REL_TOL`` allows 2e-5.  What it rules out, measured on the same run: BatchNorm normalising by each
process's own statistics moves weights by up to 0.13 of their scale, dropout masks drawn per
process by up to 0.33.  Integer state (activation exponents, counters) and the exported integer
codes must be equal.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from quant import runs
from quant.artifact import load_artifact
from quant.distributed import World, from_environment
from quant.errors import UserError
from quant.train import main as train_main

from tests.conftest import REPO, one_thread

REL_TOL = 2e-5

NET = """\
[model]
layers = [
  { type = "conv", out = 8, kernel = 3, padding = 1, bias = false },
  { type = "bn" },
  { type = "relu" },
  { type = "maxpool", kernel = 2 },
  { type = "flatten" },
  { type = "linear", out = 32, bias = false },
  { type = "bn" },
  { type = "relu" },
  { type = "dropout", p = 0.25 },
  { type = "linear" },
]
"""
COMMON = ["--data", "digits", "--batch-size", "64", "--seed", "0", "--no-progress"]
FLOAT = ["--method", "float", "--epochs", "3"]
POW2 = ["--method", "pow2", "--wbits", "4", "--abits", "4", "--epochs", "2", "--golden", "8"]


def torchrun(args, *, module="quant.train", timeout=300):
    """``module`` under torchrun with 2 processes on this machine (a free port: --standalone);
    returns ``(exit status, output)``.  The whole process group is killed afterwards, so no
    worker outlives the call, on a timeout either."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", module, *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
    return proc.returncode, out


class Runs:
    def __init__(self, base):
        self.base = base
        self.toml = base / "net.toml"
        self.float1, self.float2 = base / "float-1", base / "float-2"
        self.pow2_1, self.pow2_2 = base / "pow2-1", base / "pow2-2"
        self.resumed = base / "float-2-resumed"


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    r = Runs(tmp_path_factory.mktemp("ddp"))
    r.toml.write_text(NET)
    net = ["--config", r.toml, *COMMON]
    with one_thread():  # as torchrun's processes run (OMP_NUM_THREADS=1)
        train_main([str(a) for a in [*net, *FLOAT, "--out", r.float1]])
        train_main([str(a) for a in [*net, *POW2, "--init-from", r.float1, "--out", r.pow2_1]])
    code, out = torchrun([*net, *FLOAT, "--out", r.float2])
    assert code == 0, out
    code, out = torchrun([*net, *POW2, "--init-from", r.float1, "--out", r.pow2_2])
    assert code == 0, out
    # the float run again, stopped (as by Ctrl-C) before its third epoch, then resumed
    code, out = torchrun(["2", *net, *FLOAT, "--out", r.resumed], module="tests.quant.interrupt_train")
    assert code != 0 and "interrupted" in out, out
    assert runs.load_checkpoint(r.resumed)["epoch"] == 2
    code, out = torchrun(["--resume", r.resumed, "--no-progress"])
    assert code == 0, out
    return r


def model_state(run):
    return runs.load_checkpoint(run)["model"]


def read_log(run):
    return [json.loads(line) for line in (run / runs.LOG).read_text().splitlines()]


def summary(run):
    return json.loads((run / runs.SUMMARY).read_text())


def assert_within_reduction_order(one, two):
    """Float tensors within ``REL_TOL`` of their largest element; every other tensor equal."""
    assert one.keys() == two.keys()
    for k in one:
        if one[k].is_floating_point():
            scale = one[k].abs().max().clamp_min(torch.finfo(one[k].dtype).tiny)
            rel = float((one[k] - two[k]).abs().max() / scale)
            assert rel <= REL_TOL, f"{k}: 1 vs 2 processes differ by {rel:.2e} of its scale"
        else:
            assert torch.equal(one[k], two[k]), k


def test_float_run_is_the_one_process_run(ddp_runs):
    assert_within_reduction_order(model_state(ddp_runs.float1), model_state(ddp_runs.float2))
    one, two = read_log(ddp_runs.float1), read_log(ddp_runs.float2)
    assert [line["epoch"] for line in two] == [1, 2, 3]
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4) and b["lr"] == a["lr"]


def test_pow2_run_exports_the_same_integer_model(ddp_runs):
    assert_within_reduction_order(model_state(ddp_runs.pow2_1), model_state(ddp_runs.pow2_2))
    a = load_artifact(ddp_runs.pow2_1 / runs.ARTIFACT)
    b = load_artifact(ddp_runs.pow2_2 / runs.ARTIFACT)
    differing = 0
    for la, lb in zip(a.network.layers, b.network.layers, strict=True):
        assert la.meta() == lb.meta()  # exponents, widths, shapes
        differing += sum(int(np.count_nonzero(la.arrays[k] != lb.arrays[k])) for k in la.arrays)
    assert differing == 0, f"{differing} integer codes differ between 1 and 2 processes"
    for run in (ddp_runs.pow2_1, ddp_runs.pow2_2):
        s = summary(run)
        assert s["logit_mismatches"] == 0 and s["prediction_mismatches"] == 0
        assert s["reference_accuracy"] == s["quantized_accuracy"] > 0.5


def test_rank0_writes_the_run_directory(ddp_runs):
    d = ddp_runs.float2
    assert sorted(os.listdir(d)) == sorted([runs.CONFIG, runs.LOG, runs.CHECKPOINT, runs.SUMMARY])
    one = json.loads((ddp_runs.float1 / runs.CONFIG).read_text())
    two = json.loads((d / runs.CONFIG).read_text())
    assert {k for k in one if one[k] != two[k]} == {"out"}  # the process count is not part of the config
    assert summary(d)["float_accuracy"] == read_log(d)[-1]["test_accuracy"]


def test_resume_under_torchrun_is_the_straight_run(ddp_runs):
    straight, resumed = model_state(ddp_runs.float2), model_state(ddp_runs.resumed)
    assert straight.keys() == resumed.keys()
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
    drop_seconds = [{k: v for k, v in line.items() if k != "seconds"} for line in read_log(ddp_runs.resumed)]
    assert drop_seconds == [{k: v for k, v in line.items() if k != "seconds"} for line in read_log(ddp_runs.float2)]


# -- what torchrun's processes refuse, each with one line, before they connect ----------------------------


def torchrun_env(monkeypatch, rank=0, **extra):
    env = {"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "MASTER_ADDR": "localhost",
           "MASTER_PORT": "29500", **extra}
    for k, v in env.items():
        if v is None:
            monkeypatch.delenv(k, raising=False)
        else:
            monkeypatch.setenv(k, v)


def run_main(argv):
    try:
        with one_thread():
            train_main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code
    return 0


@pytest.mark.parametrize("argv, words", [
    (["--batch-size", "1"], "--batch-size 1 is smaller than the 2 processes"),
    # 1437 training images in batches of 2 leave a last batch of 1
    (["--batch-size", "2"], "the last batch of an epoch holds 1 of the 1437 training images"),
], ids=["batch-below-world", "last-batch-below-world"])
def test_a_batch_that_leaves_a_process_empty_is_refused(argv, words, monkeypatch, tmp_path, capsys):
    torchrun_env(monkeypatch)
    assert run_main(["--data", "digits", "--method", "float", "--epochs", "1", *argv, "--out", tmp_path / "r"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and words in err, err
    assert "Traceback" not in err and not (tmp_path / "r").exists()
    # rank 1 refuses alike, silently: rank 0's line is the one printed
    torchrun_env(monkeypatch, rank=1)
    assert run_main(["--data", "digits", "--method", "float", "--epochs", "1", *argv, "--out", tmp_path / "r"]) == 2
    assert capsys.readouterr().err == ""


def test_an_incomplete_torchrun_environment_is_one_line(monkeypatch, capsys):
    torchrun_env(monkeypatch, MASTER_ADDR=None)
    assert run_main(["--epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MASTER_ADDR" in err and "torchrun" in err, err


def test_the_environment_gives_the_world():
    assert from_environment({}).size == 1  # plain python -m: one process, no torch.distributed
    w = from_environment({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "a", "MASTER_PORT": "1"})
    assert (w.rank, w.size, w.local_rank, w.main) == (3, 4, 1, False)
    with pytest.raises(UserError, match="RANK 4 of WORLD_SIZE 4"):
        from_environment({"WORLD_SIZE": "4", "RANK": "4", "LOCAL_RANK": "0", "MASTER_ADDR": "a", "MASTER_PORT": "1"})


def test_shards_follow_distributed_samplers_rule():
    """Rank r holds positions r, r + N, ... of each global batch: every sample once, none padded."""
    batch = torch.arange(29)
    worlds = [World(rank=r, size=3) for r in range(3)]
    shards = [w.shard(batch) for w in worlds]
    assert [s.tolist() for s in shards] == [list(range(r, 29, 3)) for r in range(3)]
    assert [w.held(29) for w in worlds] == [10, 10, 9]
    assert sorted(torch.cat(shards).tolist()) == batch.tolist()
    one = World()
    assert one.shard(batch) is batch and not one.sharded
