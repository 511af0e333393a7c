"""Bad input to every command: a non-zero exit, one line naming the problem, no traceback, and
nothing the user made changed.

Each case runs the command's ``main(argv)`` in this process on files a fixture writes (corrupt
and empty IDX files, damaged and tampered artifacts, bad TOML, junk images, a run directory
that holds another run) and checks the three promises; the table is the issue's list and more.
"""

import hashlib
import pathlib
import shutil
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from fpga.build import main as fpga_build
from fpga.run import main as fpga_run
from hw.generate import main as hw_generate
from quant.diverge import main as diverge
from quant.export import main as export
from quant.import_qonnx import main as import_qonnx
from quant.train import main as train
from sim.explore import main as sim_explore
from sim.formal import main as sim_formal
from sim.layers import main as sim_layers
from sim.lint import main as sim_lint
from sim.network import main as sim_network
from templates.hls import main as hls

from .conftest import one_thread


def idx(path, array, type_code=0x08):
    """Write ``array`` (uint8) as an IDX file."""
    a = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, type_code, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    pathlib.Path(path).write_bytes(header + a.tobytes())


def mnist_dir(folder, train=20, test=10, *, images=None):
    """A folder of the four MNIST IDX files with random digits (``images`` overrides the test images)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    if images is not None:
        (folder / "t10k-images-idx3-ubyte").write_bytes(images)
    return folder


@dataclass
class Workspace:
    root: pathlib.Path
    run: pathlib.Path  # a finished pow2 run (a copy: cases may not change it)
    artifact: pathlib.Path


@pytest.fixture(scope="module")
def ws(trained_runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    run = root / "run"
    shutil.copytree(trained_runs.pow2, run)
    art = run / "artifact.npz"
    mnist_dir(root / "good-mnist")
    mnist_dir(root / "empty-mnist", test=0)
    truncated = (root / "good-mnist" / "t10k-images-idx3-ubyte").read_bytes()[:-100]
    mnist_dir(root / "truncated-mnist", images=truncated)
    mnist_dir(root / "magic-mnist", images=b"\x00\x01\x08\x03" + truncated[4:])
    mnist_dir(root / "float-mnist")
    idx(root / "float-mnist" / "t10k-images-idx3-ubyte", np.zeros((10, 28, 28)), type_code=0x0D)
    (root / "cifar").mkdir()
    (root / "cifar" / "test_batch.bin").write_bytes(bytes(3073 * 2 - 5))
    (root / "cifar" / "data_batch_1.bin").write_bytes(bytes(3073))
    (root / "junk.npz").write_bytes(b"PK\x03\x04 not a zip at all")
    (root / "random.npz").write_bytes(np.random.default_rng(1).bytes(4000))
    tampered = np.load(art)
    arrays = {k: tampered[k] for k in tampered.files}
    first_weighted = next(k for k in arrays if k.endswith("weight_shift"))
    arrays[first_weighted] = arrays[first_weighted] + 100  # shifts beyond the codes
    np.savez(root / "tampered.npz", **arrays)
    arrays = {k: tampered[k] for k in tampered.files}
    arrays["manifest"] = np.frombuffer(b'{"format": "shiftnn-artifact", "schema_version": 99}', dtype=np.uint8)
    np.savez(root / "future.npz", **arrays)
    (root / "syntax.toml").write_text("epochs = [1, 2\n")
    (root / "unknown.toml").write_text("epochs = 1\ncolour = 'red'\n")
    (root / "badtype.toml").write_text("epochs = 'many'\n")
    (root / "badlayer.toml").write_text("[model]\nlayers = [{ type = 'conv', out = 4 }, { type = 'softmax' }]\n")
    (root / "bn-after-relu.toml").write_text(
        "method = 'pow2'\n[model]\nlayers = [{ type = 'conv', out = 4, padding = 1 }, { type = 'relu' }, "
        "{ type = 'bn' }, { type = 'flatten' }, { type = 'linear' }]\n")
    (root / "gap7.toml").write_text(
        "method = 'pow2'\n[model]\nlayers = [{ type = 'conv', out = 4, kernel = 2 }, { type = 'relu' }, "
        "{ type = 'gap' }, { type = 'flatten' }, { type = 'linear' }]\n")
    (root / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.fromarray(np.zeros((5, 5), np.uint8), mode="L").save(root / "wrong-size.png")
    np.save(root / "ints.npy", np.zeros((1, 8, 8), dtype=np.int32))
    (root / "junk.onnx").write_bytes(b"definitely not protobuf")
    broken = root / "broken-run"
    shutil.copytree(run, broken)
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (root / "afile").write_text("a file where a folder should be\n")
    for name, arch in (("other-arch-run", [{"type": "conv", "out": 3, "kernel": 3, "padding": 1}, {"type": "relu"},
                                           {"type": "flatten"}, {"type": "linear", "out": 0}]),
                       ("bad-arch-run", [{"type": "conv", "out": 3}, {"type": "transformer"}])):
        folder = root / name  # a run whose recorded network is not the one its weights are for
        shutil.copytree(run, folder)
        state = torch.load(folder / "checkpoint.pt", weights_only=False)
        state["config"]["arch"] = arch
        torch.save(state, folder / "checkpoint.pt")
    return Workspace(root=root, run=run, artifact=art)


def snapshot(root):
    """Hash of every file under ``root``: the cases must leave each one as it was."""
    return {p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


# (id, command, argv as a function of the workspace, words the one line must contain)
CASES = [
    # quant.train: data
    ("train-missing-data-dir", train, lambda w: ["--data", "mnist", "--data-dir", str(w.nowhere)], "nowhere"),
    ("train-mnist-without-dir", train, lambda w: ["--data", "mnist"], "--data-dir"),
    ("train-truncated-idx", train, lambda w: ["--data", "mnist", "--data-dir", str(w.truncated_mnist_dir)],
     "t10k-images"),
    ("train-bad-idx-magic", train, lambda w: ["--data", "mnist", "--data-dir", str(w.magic_mnist_dir)],
     "t10k-images"),
    ("train-float-idx", train, lambda w: ["--data", "mnist", "--data-dir", str(w.float_mnist_dir)], "float32"),
    ("train-empty-split", train, lambda w: ["--data", "mnist", "--data-dir", str(w.empty_mnist_dir)], "0 images"),
    ("train-cifar-truncated", train, lambda w: ["--data", "cifar10", "--data-dir", str(w.cifar)], "test_batch.bin"),
    ("train-unknown-data", train, lambda w: ["--data", "imagenet"], "imagenet"),
    # quant.train: flags and configs
    ("train-unknown-method", train, lambda w: ["--method", "magic"], "magic"),
    ("train-wbits-9", train, lambda w: ["--wbits", "9"], "--wbits"),
    ("train-abits-0", train, lambda w: ["--abits", "0"], "--abits"),
    ("train-terms-4", train, lambda w: ["--terms", "4"], "--terms"),
    ("train-negative-epochs", train, lambda w: ["--epochs", "-1"], "--epochs"),
    ("train-batch-0", train, lambda w: ["--batch-size", "0"], "--batch-size"),
    ("train-lr-0", train, lambda w: ["--lr", "0"], "--lr"),
    ("train-not-a-number", train, lambda w: ["--epochs", "many"], "many"),
    ("train-unknown-flag", train, lambda w: ["--colour", "red"], "--colour"),
    ("train-missing-toml", train, lambda w: ["--config", str(w.missing_toml)], "missing.toml"),
    ("train-toml-syntax", train, lambda w: ["--config", str(w.syntax_toml)], "syntax.toml"),
    ("train-toml-unknown-key", train, lambda w: ["--config", str(w.unknown_toml)], "colour"),
    ("train-toml-bad-type", train, lambda w: ["--config", str(w.badtype_toml)], "epochs"),
    ("train-toml-bad-layer", train, lambda w: ["--config", str(w.badlayer_toml)], "softmax"),
    ("train-bn-placement", train, lambda w: ["--config", str(w.bn_after_relu_toml), "--epochs", "0"],
     "directly after a Conv2d or Linear"),
    ("train-gap-not-power-of-two", train, lambda w: ["--config", str(w.gap7_toml), "--epochs", "0"], "layer 2"),
    ("train-unknown-model", train, lambda w: ["--model", "resnet152"], "resnet152"),
    ("train-factory-missing", train, lambda w: ["--model", "no_such_pkg.nets:tiny"], "no_such_pkg"),
    ("train-init-from-missing", train, lambda w: ["--init-from", str(w.nowhere)], "nowhere"),
    ("train-out-holds-another-run", train, lambda w: ["--method", "float", "--epochs", "1", "--out", str(w.run)],
     "holds another run"),
    ("train-out-is-a-file", train, lambda w: ["--out", str(w.afile)], "is a file"),
    ("train-resume-missing", train, lambda w: ["--resume", str(w.nowhere)], "nowhere"),
    ("train-resume-corrupt", train, lambda w: ["--resume", str(w.broken_run)], "unreadable"),
    ("train-resume-other-network", train, lambda w: ["--resume", str(w.other_arch_run)], "does not fit"),
    ("train-resume-unknown-layer", train, lambda w: ["--resume", str(w.bad_arch_run)], "transformer"),
    ("export-other-network", export, lambda w: [str(w.other_arch_run)], "does not fit"),
    ("train-resume-with-flags", train, lambda w: ["--resume", str(w.run), "--wbits", "3"], "--resume"),
    # quant.export
    ("export-missing-run", export, lambda w: [str(w.nowhere)], "nowhere"),
    ("export-corrupt-checkpoint", export, lambda w: [str(w.broken_run)], "unreadable"),
    ("export-golden-0", export, lambda w: [str(w.run), "--golden", "0", "--out", str(w.new_npz)], "--golden"),
    ("export-no-args", export, lambda w: [], "run_dir"),
    # quant.diverge
    ("diverge-missing-artifact", diverge, lambda w: [str(w.nowhere_npz)], "does not exist"),
    ("diverge-not-a-zip", diverge, lambda w: [str(w.junk_npz)], "junk.npz"),
    ("diverge-random-bytes", diverge, lambda w: [str(w.random_npz)], "random.npz"),
    ("diverge-tampered-codes", diverge, lambda w: [str(w.tampered_npz)], "shift outside"),
    ("diverge-future-schema", diverge, lambda w: [str(w.future_npz)], "schema version 99"),
    ("diverge-index-out-of-range", diverge, lambda w: [str(w.artifact), "--index", "999"], "999"),
    # quant.import_qonnx
    ("import-missing", import_qonnx, lambda w: [str(w.nowhere_onnx)], "does not exist"),
    ("import-junk", import_qonnx, lambda w: [str(w.junk_onnx)], "not a readable ONNX file"),
    ("import-golden-0", import_qonnx, lambda w: [str(w.junk_onnx), "--golden", "0"], "--golden"),
    # hw.generate, sim.lint
    ("generate-rows-0", hw_generate, lambda w: ["--rows", "0", "--out", str(w.rtl)], "rows"),
    ("generate-too-wide", hw_generate, lambda w: ["--abits", "8", "--wbits", "5", "--terms", "3",
                                                  "--max-fan-in", "100000", "--out", str(w.rtl)], "32"),
    ("generate-missing-artifact", hw_generate, lambda w: ["--artifact", str(w.nowhere_npz), "--out", str(w.rtl)],
     "does not exist"),
    ("lint-missing-file", sim_lint, lambda w: [str(w.nowhere_v), "--top", "engine"], "nowhere.v"),
    # sim.formal
    ("formal-unknown-block", sim_formal, lambda w: ["--blocks", "pe,alu", "--out", str(w.rtl)], "alu"),
    ("formal-jobs-0", sim_formal, lambda w: ["--jobs", "0", "--out", str(w.rtl)], "--jobs"),
    ("formal-missing-artifact", sim_formal, lambda w: ["--configs", "random", "--random", "0", "--artifact",
                                                       str(w.nowhere_npz), "--out", str(w.rtl)], "does not exist"),
    # sim.layers, sim.network
    ("layers-corrupt-artifact", sim_layers, lambda w: [str(w.junk_npz)], "junk.npz"),
    ("layers-samples-0", sim_layers, lambda w: [str(w.artifact), "--samples", "0", "--rtl", str(w.rtl)],
     "--samples"),
    ("layers-layer-does-not-fit", sim_layers, lambda w: [str(w.artifact), "--act-depth", "4", "--rtl", str(w.rtl)],
     "--act-depth"),
    ("network-missing-artifact", sim_network, lambda w: [str(w.nowhere_npz)], "does not exist"),
    ("network-rows-not-multiple", sim_network, lambda w: [str(w.artifact), "--rows", "6", "--cols", "4"],
     "multiple of cols"),
    ("network-mnist-without-dir", sim_network, lambda w: [str(w.artifact), "--data", "mnist"], "--data-dir"),
    ("network-missing-fpga-report", sim_network, lambda w: [str(w.artifact), "--fpga-report", str(w.nowhere_json)],
     "nowhere.json"),
    # fpga.build, fpga.run, sim.explore
    ("build-unknown-board", fpga_build, lambda w: ["--board", "de10"], "de10"),
    ("build-tampered-artifact", fpga_build, lambda w: ["--artifact", str(w.tampered_npz), "--out", str(w.fpga)],
     "shift outside"),
    ("build-bad-clock", fpga_build, lambda w: ["--artifact", str(w.artifact), "--clock", "fast", "--out", str(w.fpga)],
     "--clock 'fast'"),
    ("build-selftest-with-pll", fpga_build, lambda w: ["--design", "selftest", "--clock", "30", "--out", str(w.fpga)],
     "oscillator"),
    ("build-clock-below-the-pll", fpga_build, lambda w: ["--artifact", str(w.artifact), "--clock", "5",
                                                         "--out", str(w.fpga)], "no clock at or below 5 MHz"),
    ("build-unknown-layer", fpga_build, lambda w: ["--artifact", str(w.artifact), "--design", "selftest",
                                                   "--layer", "conv99", "--out", str(w.fpga)], "conv99"),
    ("explore-hardware-bad-arrays", sim_explore, lambda w: ["--hardware", "--arrays", "8by8"], "8by8"),
    ("run-missing-port", fpga_run, lambda w: ["--port", str(w.no_such_tty), str(w.wrong_size_png)], "no-such-tty"),
    ("run-missing-image", fpga_run, lambda w: ["--port", "loop://", str(w.nowhere_png)], "does not exist"),
    ("run-junk-png", fpga_run, lambda w: ["--port", "loop://", str(w.junk_png)], "junk.png"),
    ("run-int-npy", fpga_run, lambda w: ["--port", "loop://", str(w.ints_npy)], "int32"),
    ("run-limit-0", fpga_run, lambda w: ["--port", "loop://", "--limit", "0", str(w.wrong_size_png)], "--limit"),
    ("run-bad-baud", fpga_run, lambda w: ["--port", "loop://", "--baud", "-9", str(w.wrong_size_png)], "--baud"),
    # templates.hls
    ("hls-missing-artifact", hls, lambda w: [str(w.nowhere_npz), "--out", str(w.hls)], "does not exist"),
    ("hls-samples-0", hls, lambda w: [str(w.artifact), "--samples", "0", "--out", str(w.hls)], "--samples"),
]


class _Names:
    """``w.truncated_mnist_dir`` -> ``root/truncated-mnist``; ``w.junk_npz`` -> ``root/junk.npz``."""

    def __init__(self, ws):
        self.ws = ws

    def __getattr__(self, name):
        if name in ("run", "artifact"):
            return getattr(self.ws, name)
        stem = name.removesuffix("_dir")
        for ext in ("npz", "toml", "png", "npy", "onnx", "json", "v"):
            if stem.endswith(f"_{ext}"):
                stem = stem[: -len(ext) - 1] + "." + ext
                break
        return self.ws.root / stem.replace("_", "-")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_leaves_the_users_files(case, ws, capsys):
    _, command, argv, words = case
    before = snapshot(ws.root)
    with one_thread():
        try:
            code = command([str(a) for a in argv(_Names(ws))])
        except SystemExit as exc:
            code = exc.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None), f"exit {code}: {out}{err}"
    assert "Traceback" not in err + out
    assert len(lines) == 1, err
    assert words in lines[0], lines[0]
    assert snapshot(ws.root) == {k: v for k, v in before.items()}, "a file the user had was changed"


def test_the_table_covers_every_command_and_forty_cases():
    assert len(CASES) >= 40
    assert {c[1] for c in CASES} == {train, export, diverge, import_qonnx, hw_generate, sim_lint, sim_layers,
                                      sim_network, fpga_build, sim_explore, fpga_run, hls, sim_formal}
