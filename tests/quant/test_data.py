"""Tests for quant.data: IDX reading, the digits, MNIST, CIFAR-10 and synthetic loaders, and minibatching."""

import gzip
import struct

import numpy as np
import pytest
import torch

from quant.data import (
    DATASETS,
    Dataset,
    batches,
    load_cifar10_dir,
    load_dataset,
    load_digits_dataset,
    load_mnist_dir,
    load_synthetic_dataset,
    read_cifar_batch,
    read_idx,
)
from core.errors import UserError


def idx_bytes(array, type_code=0x08):
    """Serialise ``array`` as an IDX file: two zero bytes, type code, ndim, big-endian dims, data."""
    array = np.asarray(array)
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path, array, *, gz=False, type_code=0x08):
    data = idx_bytes(array, type_code)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_mnist_dir(root, *, n_train=6, n_test=3, side=4, train_labels=None, style="{stem}-{idx}-ubyte.gz"):
    """A tiny MNIST-format folder; returns (root, train pixels, test pixels)."""
    rng = np.random.default_rng(0)
    train_px = rng.integers(0, 256, size=(n_train, side, side), dtype=np.uint8)
    test_px = rng.integers(0, 256, size=(n_test, side, side), dtype=np.uint8)
    if train_labels is None:
        train_labels = np.arange(n_train) % 10
    files = {
        ("train-images", "idx3"): train_px,
        ("train-labels", "idx1"): np.asarray(train_labels),
        ("t10k-images", "idx3"): test_px,
        ("t10k-labels", "idx1"): np.arange(n_test) % 10,
    }
    for (stem, idx), arr in files.items():
        name = style.format(stem=stem, idx=idx)
        write_idx(root / name, arr, gz=name.endswith(".gz"))
    return root, train_px, test_px


def raises_one_line(fn, *needles):
    """Call ``fn``; it must raise a one-line UserError containing each of ``needles``."""
    with pytest.raises(UserError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert str(needle) in msg, msg
    return msg


# --- digits -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


def test_digits_shapes_and_counts(digits):
    assert digits.name == "digits"
    assert digits.train_x.shape == (1437, 1, 8, 8) and digits.test_x.shape == (360, 1, 8, 8)
    assert digits.train_x.dtype == torch.float32 and digits.train_y.dtype == torch.int64
    assert digits.train_y.shape == (1437,) and digits.test_y.shape == (360,)
    assert digits.image_shape == (1, 8, 8)
    assert digits.num_classes == 10
    assert set(digits.train_y.tolist()) == set(range(10)) == set(digits.test_y.tolist())
    assert digits.describe() == "digits: 1437 train / 360 test, 1x8x8, 10 classes"
    assert digits.describe() in repr(digits)


def test_digits_pixel_scaling_is_exact(digits):
    for x in (digits.train_x, digits.test_x):
        assert x.min() >= 0 and x.max() <= 1
        scaled = x * 16
        assert torch.equal(scaled, scaled.round())
        assert scaled.min() == 0 and scaled.max() == 16


def test_digits_split_is_deterministic_and_stratified(digits):
    again = load_dataset("digits")
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(digits, field), getattr(again, field))
    # Stratified: each class's test share is within one sample of 20 %.
    train_counts = torch.bincount(digits.train_y, minlength=10)
    test_counts = torch.bincount(digits.test_y, minlength=10)
    assert ((test_counts - 0.2 * (train_counts + test_counts)).abs() <= 1).all()


def test_dataset_names():
    assert DATASETS == ("digits", "mnist", "cifar10", "synthetic")


# --- read_idx -----------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (4, 2, 3), (2, 2, 2, 2)])
def test_idx_round_trip(tmp_path, gz, shape):
    arr = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    # The name lies on purpose: gzip must be detected by magic bytes, not the suffix.
    path = write_idx(tmp_path / "data.bin", arr, gz=gz)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == shape
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable


def test_idx_missing_file(tmp_path):
    raises_one_line(lambda: read_idx(tmp_path / "nope-idx1-ubyte"), "nope-idx1-ubyte", "does not exist")


def test_idx_header_too_short(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"\x00\x00")
    raises_one_line(lambda: read_idx(path), path, "too short")


def test_idx_bad_magic(tmp_path):
    path = tmp_path / "bad-magic"
    path.write_bytes(b"\x12\x34" + idx_bytes(np.zeros(3))[2:])
    raises_one_line(lambda: read_idx(path), path, "0x12 0x34")


def test_idx_wrong_type_code(tmp_path):
    path = write_idx(tmp_path / "floats", np.zeros(4), type_code=0x0D)
    raises_one_line(lambda: read_idx(path), path, "0x0d")


@pytest.mark.parametrize("ndim", [0, 5])
def test_idx_bad_ndim(tmp_path, ndim):
    path = tmp_path / "ndim"
    path.write_bytes(bytes([0, 0, 8, ndim]) + b"\x00\x00\x00\x01" * ndim + b"\x00")
    raises_one_line(lambda: read_idx(path), path, f"{ndim} dimensions")


def test_idx_truncated_dims(tmp_path):
    path = tmp_path / "dims"
    path.write_bytes(bytes([0, 0, 8, 3]) + b"\x00\x00\x00\x02")
    raises_one_line(lambda: read_idx(path), path, "truncated")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated_data(tmp_path, gz):
    data = idx_bytes(np.zeros((2, 3, 3)))[:-5]
    path = tmp_path / "trunc"
    path.write_bytes(gzip.compress(data) if gz else data)
    raises_one_line(lambda: read_idx(path), path, "expected 18", "got 13", "the file is truncated; download it again")


def test_idx_trailing_bytes(tmp_path):
    path = tmp_path / "trailing"
    path.write_bytes(idx_bytes(np.zeros((2, 3))) + b"\x00\x00")
    raises_one_line(lambda: read_idx(path), path, "expected 6", "got 8")


@pytest.mark.parametrize(
    "payload",
    [
        b"\x1f\x8b" + b"garbage that is not deflate data" * 3,  # bad header
        gzip.compress(idx_bytes(np.zeros(50)))[:-12],  # stream cut short
    ],
    ids=["garbage", "cut"],
)
def test_idx_corrupt_gzip(tmp_path, payload):
    path = tmp_path / "corrupt.gz"
    path.write_bytes(payload)
    raises_one_line(lambda: read_idx(path), path, "gzip")


# --- load_mnist_dir -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "style", ["{stem}-{idx}-ubyte", "{stem}-{idx}-ubyte.gz", "{stem}.{idx}-ubyte", "{stem}.{idx}-ubyte.gz"]
)
def test_mnist_dir_name_styles_and_exact_scaling(tmp_path, style):
    root, train_px, test_px = make_mnist_dir(tmp_path, style=style)
    ds = load_mnist_dir(root)
    assert ds.name == "mnist" and ds.num_classes == 10
    assert ds.train_x.shape == (6, 1, 4, 4) and ds.test_x.shape == (3, 1, 4, 4)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert ds.train_y.tolist() == [0, 1, 2, 3, 4, 5]
    # x == float32(pixel) / 255, and the pixels come back exactly.
    expected = torch.from_numpy(train_px).unsqueeze(1).float() / 255
    assert torch.equal(ds.train_x, expected)
    assert torch.equal((ds.test_x * 255).round().to(torch.uint8).squeeze(1), torch.from_numpy(test_px))
    assert ds.describe() == "mnist: 6 train / 3 test, 1x4x4, 10 classes"


def test_mnist_missing_dir(tmp_path):
    raises_one_line(lambda: load_mnist_dir(tmp_path / "absent"), "absent", "does not exist", "--data-dir")


def test_mnist_dir_is_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    raises_one_line(lambda: load_mnist_dir(path), path, "not a directory")


def test_mnist_missing_file(tmp_path):
    make_mnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    msg = raises_one_line(lambda: load_mnist_dir(tmp_path), "t10k-labels", tmp_path)
    assert "t10k-labels.idx1-ubyte.gz" in msg  # lists the accepted names


def test_mnist_images_not_3d(tmp_path):
    make_mnist_dir(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((6, 16)), gz=True)
    raises_one_line(lambda: load_mnist_dir(tmp_path), "train-images", "3-D", "(6, 16)")


def test_mnist_labels_not_1d(tmp_path):
    make_mnist_dir(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros((6, 1)), gz=True)
    raises_one_line(lambda: load_mnist_dir(tmp_path), "train-labels", "1-D")


def test_mnist_count_mismatch(tmp_path):
    make_mnist_dir(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5), gz=True)
    raises_one_line(lambda: load_mnist_dir(tmp_path), "6 images", "5 labels", "train-labels")


def test_mnist_label_out_of_range(tmp_path):
    make_mnist_dir(tmp_path, train_labels=[0, 1, 2, 12, 4, 5])
    raises_one_line(lambda: load_mnist_dir(tmp_path), "label 12", "index 3", "train-labels")


def test_mnist_corrupt_file_is_named(tmp_path):
    make_mnist_dir(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot gzip at all")
    raises_one_line(lambda: load_mnist_dir(tmp_path), "t10k-images-idx3-ubyte.gz")


# --- CIFAR-10 binary ----------------------------------------------------------------------


def cifar_bytes(labels, pixels):
    """Serialise CIFAR-10 binary records: per image its label byte, then its 3x32x32 pixel bytes."""
    labels = np.asarray(labels, dtype=np.uint8)
    return np.concatenate([labels[:, None], pixels.reshape(len(labels), -1)], axis=1).tobytes()


def make_cifar_dir(root, *, train_batches=(1, 2), n_train=4, n_test=3):
    """A tiny CIFAR-10 folder; returns (root, [(pixels, labels) per train batch], (test pixels, labels))."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    train = []
    for b in train_batches:
        px = rng.integers(0, 256, size=(n_train, 3, 32, 32), dtype=np.uint8)
        y = (np.arange(n_train) + b) % 10
        (root / f"data_batch_{b}.bin").write_bytes(cifar_bytes(y, px))
        train.append((px, y))
    test_px = rng.integers(0, 256, size=(n_test, 3, 32, 32), dtype=np.uint8)
    test_y = np.arange(n_test) % 10
    (root / "test_batch.bin").write_bytes(cifar_bytes(test_y, test_px))
    return root, train, (test_px, test_y)


def test_cifar_batch_layout():
    # one record by hand: label 7, red plane 1s, green plane 2s, blue plane 3s except pixel (y=0, x=1)
    record = bytes([7]) + bytes([1] * 1024) + bytes([2] * 1024) + bytes([3, 250] + [3] * 1022)
    px = np.frombuffer(record[1:], dtype=np.uint8).reshape(1, 3, 32, 32)
    assert cifar_bytes([7], px) == record
    assert px[0, 0, 5, 5] == 1 and px[0, 1, 5, 5] == 2 and px[0, 2, 0, 1] == 250


def test_cifar_dir_loads_a_subset_of_batches_with_exact_scaling(tmp_path):
    root, train, (test_px, test_y) = make_cifar_dir(tmp_path, train_batches=(1, 3))
    ds = load_cifar10_dir(root)
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert ds.train_x.shape == (8, 3, 32, 32) and ds.test_x.shape == (3, 3, 32, 32)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert ds.image_shape == (3, 32, 32)
    # the batches present, in order; x == float32(pixel) / 255 with the planes as channels R, G, B
    assert ds.train_y.tolist() == [1, 2, 3, 4, 3, 4, 5, 6]
    expected = torch.from_numpy(np.concatenate([px for px, _ in train])).float() / 255
    assert torch.equal(ds.train_x, expected)
    assert torch.equal((ds.test_x * 255).round().to(torch.uint8), torch.from_numpy(test_px))
    assert ds.test_y.tolist() == test_y.tolist()
    assert ds.describe() == "cifar10: 8 train / 3 test, 3x32x32, 10 classes"


def test_cifar_unpacked_subfolder_is_found(tmp_path):
    make_cifar_dir(tmp_path / "cifar-10-batches-bin")
    assert load_dataset("cifar10", tmp_path).describe() == "cifar10: 8 train / 3 test, 3x32x32, 10 classes"


def test_cifar_missing_dir(tmp_path):
    raises_one_line(lambda: load_cifar10_dir(tmp_path / "absent"), "absent", "does not exist", "--data-dir")


def test_cifar_missing_test_batch(tmp_path):
    make_cifar_dir(tmp_path)
    (tmp_path / "test_batch.bin").unlink()
    msg = raises_one_line(lambda: load_cifar10_dir(tmp_path), tmp_path, "lacks test_batch.bin", "--data-dir")
    assert "data_batch" not in msg  # the training batches that are there are not reported missing


def test_cifar_missing_every_train_batch(tmp_path):
    make_cifar_dir(tmp_path, train_batches=())
    raises_one_line(lambda: load_cifar10_dir(tmp_path), tmp_path, "data_batch_1.bin .. data_batch_5.bin", "--data-dir")


def test_cifar_missing_everything_names_both(tmp_path):
    raises_one_line(lambda: load_cifar10_dir(tmp_path), "data_batch_1.bin", "test_batch.bin")


def test_cifar_truncated_record(tmp_path):
    make_cifar_dir(tmp_path)
    path = tmp_path / "data_batch_2.bin"
    path.write_bytes(path.read_bytes()[:-100])
    raises_one_line(lambda: load_cifar10_dir(tmp_path), path, f"{4 * 3073 - 100} bytes",
                    "not a whole number of 3073-byte records", "3 records and 2973 bytes over", "download it again")


def test_cifar_empty_file(tmp_path):
    make_cifar_dir(tmp_path)
    path = tmp_path / "test_batch.bin"
    path.write_bytes(b"")
    raises_one_line(lambda: load_cifar10_dir(tmp_path), path, "empty file (0 records)")


def test_cifar_bad_label(tmp_path):
    make_cifar_dir(tmp_path)
    path = tmp_path / "data_batch_1.bin"
    raw = bytearray(path.read_bytes())
    raw[2 * 3073] = 10  # the label byte of record 2
    path.write_bytes(bytes(raw))
    raises_one_line(lambda: load_cifar10_dir(tmp_path), path, "label 10 of record 2", "outside 0..9")


def test_cifar_missing_batch_file(tmp_path):
    raises_one_line(lambda: read_cifar_batch(tmp_path / "data_batch_9.bin"), "data_batch_9.bin", "does not exist")


def test_load_dataset_cifar10_needs_data_dir():
    raises_one_line(lambda: load_dataset("cifar10"), "--data cifar10 needs --data-dir")


# --- synthetic ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic():
    return load_synthetic_dataset()


def test_synthetic_shapes_and_scaling(synthetic):
    assert synthetic.name == "synthetic" and synthetic.num_classes == 4
    assert synthetic.train_x.shape == (2000, 3, 16, 16) and synthetic.test_x.shape == (500, 3, 16, 16)
    assert synthetic.train_x.dtype == torch.float32 and synthetic.train_y.dtype == torch.int64
    assert synthetic.image_shape == (3, 16, 16)
    assert synthetic.describe() == "synthetic: 2000 train / 500 test, 3x16x16, 4 classes"
    for x in (synthetic.train_x, synthetic.test_x):
        assert 0 <= x.min() and x.max() <= 1
        pixels = (x * 255).round()
        assert torch.equal(pixels / 255, x)  # pixel / 255 of whole pixels, like MNIST


def test_synthetic_is_deterministic(synthetic):
    torch.manual_seed(123)
    np.random.seed(123)  # neither global seed plays a part
    again = load_dataset("synthetic", "/ignored")
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(synthetic, field), getattr(again, field))
    assert not torch.equal(synthetic.train_x[:500], synthetic.test_x)


def test_synthetic_classes_are_balanced(synthetic):
    assert torch.bincount(synthetic.train_y).tolist() == [500, 500, 500, 500]
    assert torch.bincount(synthetic.test_y).tolist() == [125, 125, 125, 125]
    assert synthetic.train_y[:8].tolist() != sorted(synthetic.train_y[:8].tolist())  # shuffled, not in blocks


def test_synthetic_classes_are_colour_and_orientation(synthetic):
    # class 2 * colour + vertical: red classes are redder than green on average, and a
    # horizontal bar makes more change down the columns (its long edges) than along the rows
    x, y = synthetic.train_x, synthetic.train_y
    redness = (x[:, 0] - x[:, 1]).mean((1, 2))
    down = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().sum((1, 2, 3))
    across = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().sum((1, 2, 3))
    for c in range(4):
        red, vertical = c < 2, c % 2 == 1
        assert (redness[y == c].mean() > 0) == red
        assert (across[y == c].mean() > down[y == c].mean()) == vertical


# --- load_dataset -------------------------------------------------------------------------


def test_load_dataset_unknown_name():
    raises_one_line(lambda: load_dataset("cifar"), "'cifar'", "digits", "mnist")


def test_load_dataset_mnist_needs_data_dir():
    raises_one_line(lambda: load_dataset("mnist"), "--data mnist needs --data-dir")


def test_load_dataset_mnist_from_dir(tmp_path):
    make_mnist_dir(tmp_path)
    assert isinstance(load_dataset("mnist", tmp_path), Dataset)


# --- batches ------------------------------------------------------------------------------


def _epoch(n, batch_size, **kw):
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1) * 10
    y = torch.arange(n)
    out = list(batches(x, y, batch_size, **kw))
    for xb, yb in out:
        assert torch.equal(xb[:, 0], yb.float() * 10)  # x and y stay paired
    return out


def test_batches_in_order_with_partial_last():
    out = _epoch(10, 3, shuffle=False)
    assert [len(yb) for _, yb in out] == [3, 3, 3, 1]
    assert torch.cat([yb for _, yb in out]).tolist() == list(range(10))


def test_batches_shuffle_covers_each_sample_once_and_is_deterministic():
    def order(seed):
        g = torch.Generator().manual_seed(seed)
        return torch.cat([yb for _, yb in _epoch(103, 16, shuffle=True, generator=g)])

    a, b, c = order(0), order(0), order(1)
    assert sorted(a.tolist()) == list(range(103))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.tolist() != list(range(103))


def test_batches_epochs_differ_with_one_generator():
    g = torch.Generator().manual_seed(0)
    first = torch.cat([yb for _, yb in _epoch(50, 7, shuffle=True, generator=g)])
    second = torch.cat([yb for _, yb in _epoch(50, 7, shuffle=True, generator=g)])
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(50))
    assert not torch.equal(first, second)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_batches_rejects_bad_batch_size(bad):
    raises_one_line(lambda: batches(torch.zeros(4, 1), torch.zeros(4), bad, shuffle=False), repr(bad))


# --- real MNIST ---------------------------------------------------------------------------


@pytest.mark.mnist
def test_real_mnist(mnist_dir):
    ds = load_dataset("mnist", mnist_dir)
    assert ds.describe() == "mnist: 8000 train / 2000 test, 1x28x28, 10 classes"
    assert ds.train_x.shape == (8000, 1, 28, 28) and ds.test_x.shape == (2000, 1, 28, 28)
    for x, y in ((ds.train_x, ds.train_y), (ds.test_x, ds.test_y)):
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        scaled = x * 255
        assert torch.allclose(scaled, scaled.round(), atol=1e-4)
        assert y.dtype == torch.int64 and 0 <= y.min() and y.max() <= 9
        assert torch.bincount(y, minlength=10).min() > 0
