"""The hardware artifact: save/load round trip and one-line errors for every kind of damage."""

import json
import zipfile

import numpy as np
import pytest

from core import arith
from core import reference
from core.artifact import FORMAT, SCHEMA_VERSION, load_artifact, save_artifact
from core.errors import UserError

from tests.conftest import GOLDEN


@pytest.fixture(scope="module")
def artifact(trained_runs):
    return load_artifact(trained_runs.artifact)


# -- round trip ---------------------------------------------------------------------------------


def test_trained_artifact_has_expected_layers(artifact):
    net = artifact.network
    assert [layer.kind for layer in net.layers] == ["conv2d", "maxpool2d", "conv2d", "maxpool2d", "flatten", "linear"]
    assert net.input_shape == (1, 8, 8) and net.input_bits == 4 and net.num_classes == 10
    assert artifact.golden.inputs.shape == (GOLDEN, 1, 8, 8)
    assert [o.shape[1:] for o in artifact.golden.outputs] == [layer.out_shape for layer in net.layers]
    assert artifact.meta["config"]["method"] == "pow2"


def test_round_trip_is_identical(artifact, tmp_path):
    path = tmp_path / "copy.npz"
    save_artifact(path, artifact)
    again = load_artifact(path)

    a, b = artifact.network, again.network
    assert (a.input_shape, a.input_bits, a.num_classes, a.output_exp) == (
        b.input_shape, b.input_bits, b.num_classes, b.output_exp)
    assert len(a.layers) == len(b.layers)
    for la, lb in zip(a.layers, b.layers):
        assert la.meta() == lb.meta()
        assert sorted(la.arrays) == sorted(lb.arrays)
        for key in la.arrays:
            assert la.arrays[key].shape == lb.arrays[key].shape, key
            assert np.array_equal(la.arrays[key], lb.arrays[key]), key

    ga, gb = artifact.golden, again.golden
    assert np.array_equal(ga.inputs, gb.inputs)
    assert np.array_equal(ga.labels, gb.labels)
    assert len(ga.outputs) == len(gb.outputs)
    for oa, ob in zip(ga.outputs, gb.outputs):
        assert oa.shape == ob.shape and np.array_equal(oa, ob)
    assert again.meta == artifact.meta
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_reference_reproduces_golden_outputs_exactly(artifact, tmp_path):
    path = tmp_path / "copy.npz"
    save_artifact(path, artifact)
    again = load_artifact(path)
    outs = reference.run(again.network, again.golden.inputs)
    assert len(outs) == len(again.golden.outputs)
    for i, (got, want) in enumerate(zip(outs, again.golden.outputs)):
        assert got.shape == want.shape, i
        assert np.array_equal(got, want), f"layer {i} differs"


# -- damage ---------------------------------------------------------------------------------------


def read_npz(path):
    """An artifact as ``(manifest dict, {name: array})`` for mutation."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    manifest = json.loads(arrays.pop("manifest").tobytes().decode())
    return manifest, arrays


def write_npz(path, manifest, arrays):
    """Write ``arrays`` plus ``manifest`` (a dict, raw bytes, or None for none) with ``np.savez``."""
    arrays = dict(arrays)
    if isinstance(manifest, dict):
        manifest = json.dumps(manifest).encode()
    if manifest is not None:
        arrays["manifest"] = np.frombuffer(manifest, dtype=np.uint8)
    np.savez(path, **arrays)


def expect_error(path, *fragments, names_file=True):
    with pytest.raises(UserError) as info:
        load_artifact(path)
    msg = str(info.value)
    assert "\n" not in msg, msg
    if names_file:
        assert str(path) in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


def _no_manifest(m, a):
    return None


def _bad_json(m, a):
    return b"{not json"


def _wrong_format(m, a):
    m["format"] = "onnx"
    return m


def _in_shape(m, a):
    m["layers"][2]["in_shape"] = [16, 5, 5]
    return m


def _weight_shape(m, a):
    a["layers.0.weight_shift"] = a["layers.0.weight_shift"][..., :2]
    return m


def _missing_array(m, a):
    del a["layers.2.bias"]
    return m


def _missing_golden(m, a):
    del a["golden.layers.3"]
    return m


def _shift_beyond(m, a):
    levels = arith.shift_levels(m["layers"][2]["wbits"])
    a["layers.2.weight_shift"][0, 0, 0, 0, 0] = levels
    a["layers.2.weight_zero"][0, 0, 0, 0, 0] = 0
    return m


def _sign_code(m, a):
    a["layers.0.weight_sign"][0, 0, 0, 0, 0] = 2
    return m


def _bias_beyond(m, a):
    d = m["layers"][0]
    fan_in = d["in_shape"][0] * d["kernel"][0] * d["kernel"][1]
    bound = arith.product_bound(fan_in, d["in_bits"], d["wbits"], d["terms"])
    a["layers.0.bias"][3] = bound + 1
    return m


def _requant(m, a):
    a["layers.5.requant"][0] += 1
    return m


def _exp_vs_requant(m, a):
    a["layers.0.exp"][1] -= 1
    return m


def _unknown_kind(m, a):
    m["layers"][1]["kind"] = "avgpool3d"
    return m


def _golden_shape(m, a):
    a["golden.layers.5"] = a["golden.layers.5"][:, :5]
    return m


def _golden_inputs(m, a):
    a["golden.inputs"][0, 0, 0, 0] = 2 ** m["input"]["bits"]
    return m


def _float_bias(m, a):
    a["layers.2.bias"] = a["layers.2.bias"].astype(np.float64)
    return m


def _acc_bits(m, a):
    m["layers"][2]["acc_bits"] += 1
    return m


def _missing_key(m, a):
    del m["layers"][0]["wbits"]
    return m


def _chain_bits(m, a):
    m["layers"][2]["in_bits"] = 3
    return m


def _golden_count(m, a):
    m["golden"]["count"] = GOLDEN + 1
    return m


DAMAGE = [
    # (id, mutation, message fragments)
    ("no-manifest", _no_manifest, ["has no manifest"]),
    ("manifest-not-json", _bad_json, ["corrupt manifest"]),
    ("wrong-format", _wrong_format, [f"is not a {FORMAT} file"]),
    ("in-shape-does-not-chain", _in_shape, ["layer 2", "takes shape (16, 5, 5)", "(16, 4, 4)"]),
    ("in-bits-do-not-chain", _chain_bits, ["layer 2", "3-bit inputs"]),
    ("weight-wrong-shape", _weight_shape, ["layer 0", "'layers.0.weight_shift'", "has shape"]),
    ("missing-array", _missing_array, ["layer 2", "missing array 'layers.2.bias'"]),
    ("missing-golden-array", _missing_golden, ["missing array 'golden.layers.3'"]),
    ("shift-beyond-levels", _shift_beyond, ["layer 2", "shift outside 0..6 for 4-bit codes"]),
    ("sign-code", _sign_code, ["layer 0", "sign code other than 0/1"]),
    ("bias-beyond-bound", _bias_beyond, ["layer 0", "bias beyond its accumulator bound"]),
    ("requant-inconsistent", _requant, ["layer 5", "requant shifts disagree with in_exp - exp - out_exp"]),
    ("exp-inconsistent", _exp_vs_requant, ["layer 0", "requant shifts disagree"]),
    ("unknown-kind", _unknown_kind, ["layer 1", "unknown kind 'avgpool3d'"]),
    ("golden-output-shape", _golden_shape, ["'golden.layers.5'", "has shape", "expected"]),
    ("golden-inputs-beyond-bits", _golden_inputs, ["golden inputs exceed the input bits"]),
    ("golden-count", _golden_count, ["'golden.inputs'", "has shape"]),
    ("float-array", _float_bias, ["'layers.2.bias'", "dtype float64, expected integers"]),
    ("acc-bits", _acc_bits, ["layer 2", "records acc_bits"]),
    ("missing-manifest-key", _missing_key, ["KeyError", "wbits"]),
]


@pytest.mark.parametrize("mutate,fragments", [pytest.param(f, fr, id=i) for i, f, fr in DAMAGE])
def test_damaged_artifact_is_a_one_line_user_error(trained_runs, tmp_path, mutate, fragments):
    manifest, arrays = read_npz(trained_runs.artifact)
    manifest = mutate(manifest, arrays)  # the manifest to write: a dict, raw bytes or None
    path = tmp_path / "damaged.npz"
    write_npz(path, manifest, arrays)
    msg = expect_error(path, *fragments)
    assert "re-export" in msg


def test_unmodified_rewrite_loads(trained_runs, tmp_path):
    """The helper itself (np.savez, uncompressed) produces a valid artifact: the damage is what fails."""
    manifest, arrays = read_npz(trained_runs.artifact)
    path = tmp_path / "same.npz"
    write_npz(path, manifest, arrays)
    art = load_artifact(path)
    assert art.golden.inputs.shape[0] == GOLDEN


def test_missing_file(tmp_path):
    path = tmp_path / "nope.npz"
    expect_error(path, "does not exist", "quant.export")


def test_directory_is_not_an_artifact(tmp_path):
    expect_error(tmp_path, "does not exist")


def test_random_bytes(tmp_path):
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    expect_error(path, "is not a readable artifact")


def test_truncated_copy(trained_runs, tmp_path):
    data = trained_runs.artifact.read_bytes()
    path = tmp_path / "truncated.npz"
    path.write_bytes(data[: len(data) // 2])
    expect_error(path, "is not a readable artifact")


def test_schema_version_mismatch(trained_runs, tmp_path):
    manifest, arrays = read_npz(trained_runs.artifact)
    manifest["schema_version"] = SCHEMA_VERSION + 1
    path = tmp_path / "future.npz"
    write_npz(path, manifest, arrays)
    msg = expect_error(path, f"schema version {SCHEMA_VERSION + 1}", f"reads versions 1, {SCHEMA_VERSION}", "re-export")
    assert "quant.export" in msg


def test_graph_layers_round_trip(tmp_path):
    """Average pools and skips (schema 2) survive save and load, and the numpy and torch
    integer models agree on them exactly."""
    from hw.random_layers import random_network
    from quant import torch_int
    from core import reference
    from core.artifact import Artifact, Golden, save_artifact

    rng = np.random.default_rng(3)
    net = random_network(rng, [("conv", 4, 3, 1, 1), ("skipconv", 3, 1, 0), ("conv", 4, 3, 2, 1), ("skipconv", 1, 0, 2),
                               ("avgpool", None), ("flatten",), ("linear", 10)], (3, 8, 8))
    x = rng.integers(0, 16, (6, 3, 8, 8))
    outs = reference.run(net, x)
    assert all(np.array_equal(a, b) for a, b in zip(outs, torch_int.run(net, x)))
    path = tmp_path / "graph.npz"
    save_artifact(path, Artifact(net, Golden(inputs=x, outputs=outs, labels=np.zeros(6, dtype=np.int64)), {}))
    back = load_artifact(path).network
    assert [lay.skip for lay in back.layers] == [None, 0, None, 2, None, None, None]
    assert back.layers[4].kind == "avgpool2d" and back.layers[4].out_bits == 4 + 4
    assert all(np.array_equal(a, b) for a, b in zip(outs, reference.run(back, x)))


def test_stored_member_with_bad_crc(trained_runs, tmp_path):
    """Corrupt bytes inside an uncompressed member: zipfile's CRC check, reported as a UserError."""
    manifest, arrays = read_npz(trained_runs.artifact)
    path = tmp_path / "crc.npz"
    write_npz(path, manifest, arrays)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("golden.layers.0.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    pos = start + info.compress_size - 8  # inside the array data, past the .npy header
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))
    expect_error(path, "BadZipFile")


def _flip_compressed_member(src, dst, member):
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo(member)
    assert info.compress_type == zipfile.ZIP_DEFLATED
    data = bytearray(src.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for k in range(start + 20, start + 40):
        data[k] ^= 0xFF
    dst.write_bytes(bytes(data))


@pytest.mark.parametrize("member", ["manifest.npy", "layers.2.weight_shift.npy"])
def test_corrupt_compressed_member(trained_runs, tmp_path, member):
    path = tmp_path / "corrupt.npz"
    _flip_compressed_member(trained_runs.artifact, path, member)
    expect_error(path)


@pytest.mark.parametrize("field,value", [("wbits", 9), ("terms", 4), ("out_bits", 0)])
def test_bits_outside_hardware_range_name_the_file(trained_runs, tmp_path, field, value):
    manifest, arrays = read_npz(trained_runs.artifact)
    manifest["layers"][0][field] = value
    path = tmp_path / f"{field}.npz"
    write_npz(path, manifest, arrays)
    expect_error(path, str(value))
