"""Command-line entry points: quant.train run directories, --resume, --config, quant.export, quant.diverge,
and one-line errors (exit status 2) for bad flags and inputs."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from core.artifact import load_artifact, save_artifact
from quant import diverge, export, runs
from quant.config import TrainConfig
from quant.train import main as train_main

from tests.conftest import FLOAT_EPOCHS, GOLDEN, POW2_EPOCHS, one_thread

CONFIG_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def read_json(path):
    return json.loads(path.read_text())


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / runs.LOG).read_text().splitlines()]


def tmp_files(run_dir):
    return sorted(name for name in os.listdir(run_dir) if name.endswith(".tmp"))


def exit_code(main, argv):
    """Run a ``cli_main`` entry point; its exit status (0 when it returns normally)."""
    try:
        rv = main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code
    return 0 if rv is None else rv


def one_error_line(capsys):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


# -- run directories --------------------------------------------------------------------------------


def test_float_run_directory(trained_runs):
    d = trained_runs.float
    cfg = read_json(d / runs.CONFIG)
    assert set(cfg) == CONFIG_FIELDS
    assert cfg["method"] == "float" and cfg["model"] == "cnn" and cfg["data"] == "digits"
    assert cfg["epochs"] == FLOAT_EPOCHS and cfg["out"] == str(d)

    log = read_log(d)
    assert [line["epoch"] for line in log] == list(range(1, FLOAT_EPOCHS + 1))
    for line in log:
        assert line["loss"] > 0 and 0 <= line["test_accuracy"] <= 1

    s = read_json(d / runs.SUMMARY)
    assert s["method"] == "float" and s["float_source"] == "this run"
    assert s["float_accuracy"] == log[-1]["test_accuracy"] > 0.5
    assert s["quantized_accuracy"] is None and s["reference_accuracy"] is None and s["artifact"] is None
    assert s["seconds_per_epoch"] > 0
    assert not (d / runs.ARTIFACT).exists()
    assert runs.load_checkpoint(d)["epoch"] == FLOAT_EPOCHS


def test_pow2_run_directory(trained_runs):
    d = trained_runs.pow2
    cfg = read_json(d / runs.CONFIG)
    assert set(cfg) == CONFIG_FIELDS
    assert cfg["method"] == "pow2" and cfg["wbits"] == 4 and cfg["abits"] == 4 and cfg["terms"] == 1
    assert cfg["epochs"] == POW2_EPOCHS and cfg["golden"] == GOLDEN
    assert cfg["init_from"] == str(trained_runs.float)

    log = read_log(d)
    assert [line["epoch"] for line in log] == list(range(1, POW2_EPOCHS + 1))
    for line in log:
        assert set(line) >= {"epoch", "loss", "test_accuracy"}
        assert line["loss"] > 0 and 0 <= line["test_accuracy"] <= 1

    s = read_json(d / runs.SUMMARY)
    float_summary = read_json(trained_runs.float / runs.SUMMARY)
    # the float accuracy is re-measured from the source checkpoint: identical weights, identical number
    assert s["float_accuracy"] == float_summary["float_accuracy"]
    assert s["float_source"] == str(trained_runs.float)
    assert s["quantized_accuracy"] == log[-1]["test_accuracy"] > 0.5
    assert s["reference_accuracy"] == s["quantized_accuracy"]
    assert s["logit_mismatches"] == 0 and s["prediction_mismatches"] == 0
    assert s["seconds_per_epoch"] > 0
    assert s["test_images"] == 360
    assert s["artifact"] == runs.ARTIFACT and (d / runs.ARTIFACT).is_file()
    assert load_artifact(d / runs.ARTIFACT).golden.inputs.shape[0] == GOLDEN

    state = runs.load_checkpoint(d)
    assert state["epoch"] == POW2_EPOCHS and state["config"].method == "pow2"


def test_no_temporary_files_remain(trained_runs):
    for d in (trained_runs.float, trained_runs.pow2):
        assert tmp_files(d) == []


# -- --resume -----------------------------------------------------------------------------------------


def test_resume_continues_the_run(trained_runs, tmp_path):
    d = tmp_path / "run"
    common = ["--no-progress"]
    train_main(["--method", "pow2", "--init-from", str(trained_runs.float), "--epochs", "1", "--golden", "4",
                "--out", str(d), *common])
    first = read_log(d)
    assert [line["epoch"] for line in first] == [1]
    assert runs.load_checkpoint(d)["epoch"] == 1

    train_main(["--resume", str(d), "--epochs", "2", *common])
    log = read_log(d)
    assert [line["epoch"] for line in log] == [1, 2]
    assert log[0] == first[0]  # appended, not rewritten
    state = runs.load_checkpoint(d)
    assert state["epoch"] == 2 and state["config"].method == "pow2"
    assert read_json(d / runs.CONFIG)["epochs"] == 2
    s = read_json(d / runs.SUMMARY)
    assert s["quantized_accuracy"] == log[-1]["test_accuracy"]
    assert s["logit_mismatches"] == 0 and s["prediction_mismatches"] == 0
    assert s["float_source"] == str(trained_runs.float)  # carried over in the checkpoint
    assert load_artifact(d / runs.ARTIFACT).golden.inputs.shape[0] == 4
    assert tmp_files(d) == []


@pytest.mark.parametrize("extra", [["--lr", "0.1"], ["--method", "float"], ["--config", "x.toml"]],
                         ids=["lr", "method", "config"])
def test_resume_refuses_other_flags(trained_runs, capsys, extra):
    before = (trained_runs.float / runs.CHECKPOINT).read_bytes()
    assert exit_code(train_main, ["--resume", trained_runs.float, "--epochs", "5", *extra, "--no-progress"]) == 2
    assert "--resume" in one_error_line(capsys)
    assert (trained_runs.float / runs.CHECKPOINT).read_bytes() == before


def test_resume_without_checkpoint(tmp_path, capsys):
    assert exit_code(train_main, ["--resume", tmp_path / "nothing", "--no-progress"]) == 2
    assert "no checkpoint" in one_error_line(capsys)


def test_failed_checkpoint_write_keeps_the_previous_one(trained_runs, tmp_path, monkeypatch):
    d = tmp_path / "run"
    shutil.copytree(trained_runs.float, d)
    before = (d / runs.CHECKPOINT).read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space left"):
        train_main(["--resume", str(d), "--epochs", str(FLOAT_EPOCHS + 1), "--no-progress"])
    monkeypatch.undo()

    assert (d / runs.CHECKPOINT).read_bytes() == before
    assert runs.load_checkpoint(d)["epoch"] == FLOAT_EPOCHS
    assert tmp_files(d) == []


def test_log_matches_checkpoint_after_failed_write(trained_runs, tmp_path, monkeypatch):
    d = tmp_path / "run"
    shutil.copytree(trained_runs.float, d)

    def broken_save(obj, f, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        train_main(["--resume", str(d), "--epochs", str(FLOAT_EPOCHS + 1), "--no-progress"])
    monkeypatch.undo()
    train_main(["--resume", str(d), "--epochs", str(FLOAT_EPOCHS + 1), "--no-progress"])
    assert [line["epoch"] for line in read_log(d)] == list(range(1, FLOAT_EPOCHS + 2))


# -- quant.export ---------------------------------------------------------------------------------------


def test_export_writes_requested_golden_vectors(trained_runs, tmp_path, capsys):
    out = tmp_path / "exported.npz"
    assert exit_code(export.main, [trained_runs.pow2, "--out", out, "--golden", "4"]) == 0
    assert str(out) in capsys.readouterr().err
    art = load_artifact(out)
    ref = load_artifact(trained_runs.artifact)
    assert art.golden.inputs.shape[0] == 4
    assert np.array_equal(art.golden.inputs, ref.golden.inputs[:4])
    assert np.array_equal(art.golden.labels, ref.golden.labels[:4])
    for a, b in zip(art.golden.outputs, ref.golden.outputs, strict=True):
        assert np.array_equal(a, b[:4])
    for la, lb in zip(art.network.layers, ref.network.layers, strict=True):
        assert la.meta() == lb.meta()
        for k in la.arrays:
            assert np.array_equal(la.arrays[k], lb.arrays[k])
    assert tmp_files(tmp_path) == []


def test_export_float_run_is_refused(trained_runs, tmp_path, capsys):
    out = tmp_path / "float.npz"
    assert exit_code(export.main, [trained_runs.float, "--out", out, "--golden", "4"]) == 2
    assert "not quantised" in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("argv,fragment", [
    (["--golden", "0"], "--golden"),
    (["--golden", "-3"], "--golden"),
], ids=["golden-0", "golden-negative"])
def test_export_bad_golden(trained_runs, tmp_path, capsys, argv, fragment):
    assert exit_code(export.main, [trained_runs.pow2, "--out", tmp_path / "x.npz", *argv]) == 2
    assert fragment in one_error_line(capsys)


def test_export_missing_run(tmp_path, capsys):
    assert exit_code(export.main, [tmp_path / "missing", "--out", tmp_path / "x.npz"]) == 2
    assert "no checkpoint" in one_error_line(capsys)


# -- quant.diverge --------------------------------------------------------------------------------------


def test_diverge_agrees_on_a_fresh_artifact(trained_runs, capsys):
    assert exit_code(diverge.main, [trained_runs.artifact]) == 0
    assert f"golden and reference agree on every layer of {GOLDEN} input(s)" in capsys.readouterr().out
    assert exit_code(diverge.main, [trained_runs.artifact, "--a", "torch-int", "--b", "reference"]) == 0
    assert exit_code(diverge.main, [trained_runs.artifact, "--a", "golden", "--b", "torch-int", "--index", "3"]) == 0
    assert "of 1 input(s)" in capsys.readouterr().out


@pytest.fixture
def tampered(trained_runs, tmp_path):
    """The pow2 artifact with one golden output of layer 2 changed: (path, sample, channel, y, x, old, new)."""
    art = load_artifact(trained_runs.artifact)
    out = art.golden.outputs[2]
    assert out.ndim == 4  # (N, C, H, W)
    sample, channel, y, x = 5, 7, 1, 2
    old = int(out[sample, channel, y, x])
    out[sample, channel, y, x] = old + 1
    path = tmp_path / "tampered.npz"
    save_artifact(path, art)
    return path, art.network.layers[2].name, sample, channel, y, x, old, old + 1


def test_diverge_names_the_first_difference(tampered, capsys):
    path, name, sample, channel, y, x, old, new = tampered
    assert exit_code(diverge.main, [path]) == 1
    out = capsys.readouterr().out.strip()
    assert out == (f"first difference: layer 2 ({name}), sample {sample}, channel {channel} "
                   f"position (y={y}, x={x}): golden={new} reference={old}")


def test_diverge_with_index(tampered, capsys):
    path, name, sample, channel, y, x, old, new = tampered
    assert exit_code(diverge.main, [path, "--index", sample, "--a", "reference", "--b", "golden"]) == 1
    out = capsys.readouterr().out
    assert f"layer 2 ({name}), sample {sample}, channel {channel}" in out
    assert f"reference={old} golden={new}" in out
    assert exit_code(diverge.main, [path, "--index", sample - 1]) == 0


@pytest.mark.parametrize("index", [GOLDEN, -1, 1000])
def test_diverge_index_out_of_range(trained_runs, capsys, index):
    assert exit_code(diverge.main, [trained_runs.artifact, "--index", index]) == 2
    line = one_error_line(capsys)
    assert f"--index {index}" in line and f"0..{GOLDEN - 1}" in line


def test_diverge_missing_artifact(tmp_path, capsys):
    assert exit_code(diverge.main, [tmp_path / "none.npz"]) == 2
    assert "does not exist" in one_error_line(capsys)


def test_diverge_input_needs_two_backends(trained_runs, tmp_path, capsys):
    npy = tmp_path / "in.npy"
    np.save(npy, load_artifact(trained_runs.artifact).golden.inputs[:2])
    assert exit_code(diverge.main, [trained_runs.artifact, "--input", npy]) == 2
    assert "golden" in one_error_line(capsys)
    assert exit_code(diverge.main, [trained_runs.artifact, "--input", npy, "--a", "torch-int"]) == 0
    assert "of 2 input(s)" in capsys.readouterr().out


# -- bad flags and inputs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlp") / "run"
    with one_thread():
        train_main(["--model", "mlp", "--method", "float", "--epochs", "0", "--out", str(d), "--no-progress"])
    return d


def _toml(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def _corrupt_checkpoint(tmp_path):
    d = tmp_path / "corrupt"
    d.mkdir()
    (d / runs.CHECKPOINT).write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return d


BAD = {
    # id: (argv builder (tmp_path, trained_runs, mlp_run) -> argv, fragments of the error line)
    "unknown-method": (lambda t, r, m: ["--method", "nope"], ["unknown method 'nope'", "--method"]),
    "wbits-9": (lambda t, r, m: ["--wbits", "9"], ["weight bits 9", "--wbits"]),
    "abits-0": (lambda t, r, m: ["--abits", "0"], ["activation bits 0", "--abits"]),
    "terms-4": (lambda t, r, m: ["--terms", "4"], ["--terms"]),
    "negative-epochs": (lambda t, r, m: ["--epochs", "-1"], ["--epochs must be >= 0"]),
    "zero-batch": (lambda t, r, m: ["--batch-size", "0"], ["--batch-size"]),
    "not-an-int": (lambda t, r, m: ["--wbits", "four"], ["--wbits", "'four'"]),
    "unknown-flag": (lambda t, r, m: ["--bogus", "1"], ["--bogus"]),
    "mnist-without-dir": (lambda t, r, m: ["--data", "mnist"], ["--data-dir"]),
    "mnist-missing-dir": (lambda t, r, m: ["--data", "mnist", "--data-dir", "/nonexistent"], ["/nonexistent"]),
    "unknown-dataset": (lambda t, r, m: ["--data", "cifar"], ["unknown dataset 'cifar'"]),
    "config-unknown-key": (lambda t, r, m: ["--config", _toml(t, "epochs = 1\nbogus = 2\n")],
                           ["unknown key 'bogus'", "config.toml"]),
    "config-invalid-toml": (lambda t, r, m: ["--config", _toml(t, "epochs = = 3\n[x\n")],
                            ["not valid TOML", "config.toml"]),
    "config-wrong-type": (lambda t, r, m: ["--config", _toml(t, 'epochs = "three"\n')], ["'epochs'", "int"]),
    "config-missing": (lambda t, r, m: ["--config", t / "missing.toml"], ["missing.toml", "does not exist"]),
    "init-from-missing": (lambda t, r, m: ["--init-from", t / "nowhere"], ["no checkpoint", "nowhere"]),
    "init-from-corrupt": (lambda t, r, m: ["--init-from", _corrupt_checkpoint(t)],
                          ["checkpoint.pt", "unreadable"]),
    "init-from-other-model": (lambda t, r, m: ["--model", "cnn", "--init-from", m], ["--model mlp", "--model cnn"]),
    "float-from-quantised": (lambda t, r, m: ["--method", "float", "--init-from", r.pow2], ["quantised"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_flags_exit_2_with_one_error_line(case, trained_runs, mlp_run, tmp_path, capsys):
    build, fragments = BAD[case]
    out = tmp_path / "run"
    argv = [*build(tmp_path, trained_runs, mlp_run), "--out", out, "--no-progress"]
    if "--epochs" not in argv:
        argv += ["--epochs", "0"]  # should a check be missing, fail fast instead of training
    capsys.readouterr()
    assert exit_code(train_main, argv) == 2
    line = one_error_line(capsys)
    for frag in fragments:
        assert frag in line, line
    assert not out.exists()  # refused before anything is written
    assert capsys.readouterr().out == ""


# -- --config -----------------------------------------------------------------------------------------------


def test_config_file_values_and_flag_overrides(tmp_path):
    toml = _toml(tmp_path, 'method = "float"\nmodel = "mlp"\nepochs = 0\nlr = 0.01\nseed = 3\n'
                           'batch_size = 32\nper_channel = false\n')
    out = tmp_path / "run"
    train_main(["--config", str(toml), "--seed", "5", "--batch-size", "16", "--out", str(out), "--no-progress"])
    cfg = read_json(out / runs.CONFIG)
    assert cfg["method"] == "float" and cfg["model"] == "mlp" and cfg["epochs"] == 0  # from the file
    assert cfg["lr"] == 0.01 and cfg["per_channel"] is False  # from the file
    assert cfg["seed"] == 5 and cfg["batch_size"] == 16  # flags win
    assert cfg["wbits"] == TrainConfig.wbits and cfg["data"] == "digits"  # defaults
    assert runs.load_checkpoint(out)["config"].model == "mlp"


def test_config_file_with_train_table(tmp_path):
    out = tmp_path / "from-toml"
    toml = _toml(tmp_path, f'[train]\nmethod = "float"\nmodel = "mlp"\nepochs = 0\nlr = 1\nout = "{out}"\n')
    train_main(["--config", str(toml), "--no-progress"])
    cfg = read_json(out / runs.CONFIG)
    assert cfg["out"] == str(out) and cfg["model"] == "mlp"
    assert cfg["lr"] == 1.0 and isinstance(cfg["lr"], float)


# -- --help -------------------------------------------------------------------------------------------------


def test_help_lists_the_flags():
    proc = subprocess.run([sys.executable, "-m", "quant.train", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m quant.train")
    for flag in ("--data", "--data-dir", "--model", "--method", "--wbits", "--abits", "--epochs", "--seed",
                 "--out", "--config", "--resume", "--init-from"):
        assert flag in proc.stdout, flag
