"""Image-classification datasets (scikit-learn digits, MNIST IDX files) as float tensors, plus minibatching."""

import gzip
import math
import pathlib
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from .errors import UserError

DATASETS = ("digits", "mnist")

# Every gzip stream starts with these two bytes (RFC 1952); checking them instead of the
# ".gz" suffix lets a renamed or decompressed-in-place file still load.
_GZIP_MAGIC = b"\x1f\x8b"

# IDX type codes (http://yann.lecun.com/exdb/mnist/), only to name a rejected one in the error.
_IDX_TYPES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}

# Largest pixel value of each source; x = pixel / scale puts every image in [0, 1].
_DIGITS_MAX = 16
_MNIST_MAX = 255

_MNIST_CLASSES = 10


def read_idx(path):
    """Read one IDX file (the MNIST format) of unsigned bytes.

    The file may be gzip-compressed; that is detected from its first two bytes
    (``0x1f 0x8b``), not from its name.

    Parameters
    ----------
    path : str or os.PathLike
        The IDX file.

    Returns
    -------
    numpy.ndarray
        A ``uint8`` array shaped by the dimensions in the header (1 to 4 of them).

    Raises
    ------
    UserError
        The file is missing or unreadable, the gzip stream is corrupt, the header is not an
        unsigned-byte IDX header, or the data is shorter or longer than the header declares.
        The message names the file.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"IDX file {path} does not exist; check the path or download the file again")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read IDX file {path}: {exc.strerror or exc}; check its permissions") from None

    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        # BadGzipFile (an OSError) for a bad header or trailer, EOFError for a cut-off stream,
        # zlib.error for garbage in the deflate data.
        except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as exc:
            reason = str(exc).replace("\n", " ") or type(exc).__name__
            raise UserError(f"{path}: corrupt gzip data ({reason}); download the file again") from None

    if len(raw) < 4:
        raise UserError(
            f"{path}: only {len(raw)} bytes, too short for an IDX header (4 bytes); download the file again"
        )
    if raw[0] != 0 or raw[1] != 0:
        raise UserError(
            f"{path}: not an IDX file (first two bytes are 0x{raw[0]:02x} 0x{raw[1]:02x}, expected 0x00 0x00); "
            "pass an MNIST-format IDX file"
        )
    type_code, ndim = raw[2], raw[3]
    if type_code != 0x08:
        kind = _IDX_TYPES.get(type_code, "unknown")
        raise UserError(
            f"{path}: IDX type code 0x{type_code:02x} ({kind}) is not supported, only 0x08 (unsigned byte); "
            "pass an MNIST-format uint8 IDX file"
        )
    if not 1 <= ndim <= 4:
        raise UserError(
            f"{path}: IDX header declares {ndim} dimensions, expected 1 to 4; pass an MNIST-format IDX file"
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise UserError(
            f"{path}: IDX header declares {ndim} dimensions ({4 * ndim} bytes) but only {len(raw) - 4} follow; "
            "the file is truncated; download it again"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    got = len(raw) - header_len
    if got < expected:
        raise UserError(
            f"{path}: expected {expected} data bytes for shape {dims}, got {got}; "
            "the file is truncated; download it again"
        )
    if got > expected:
        raise UserError(
            f"{path}: expected {expected} data bytes for shape {dims}, got {got} ({got - expected} trailing bytes); "
            "the file is corrupt; download it again"
        )
    # copy() so the array owns writable memory (frombuffer over bytes is read-only, which
    # torch.from_numpy warns about) and the decompressed buffer can be freed.
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims).copy()


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A train/test split of single-channel images.

    Attributes
    ----------
    name : str
        ``"digits"`` or ``"mnist"``.
    train_x, test_x : torch.Tensor
        ``float32`` images of shape ``(N, 1, H, W)`` with values in ``[0, 1]``, computed
        exactly as ``pixel / max_pixel`` in float32 (see :func:`load_digits_dataset` and
        :func:`load_mnist_dir`).
    train_y, test_y : torch.Tensor
        ``int64`` class labels of shape ``(N,)``, in ``0 .. num_classes - 1``.
    num_classes : int
        Number of classes (10 for both datasets).
    """

    # eq=False: the generated __eq__ would compare tensors element-wise and fail on bool();
    # repr=False: the generated __repr__ would print every pixel.
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int = _MNIST_CLASSES

    @property
    def image_shape(self):
        """tuple of int: ``(1, H, W)``, the shape of one image."""
        return tuple(self.train_x.shape[1:])

    def describe(self):
        """One-line summary, e.g. ``"digits: 1437 train / 360 test, 1x8x8, 10 classes"``.

        Returns
        -------
        str
        """
        shape = "x".join(str(d) for d in self.image_shape)
        return f"{self.name}: {len(self.train_y)} train / {len(self.test_y)} test, {shape}, {self.num_classes} classes"

    def __repr__(self):
        return f"Dataset({self.describe()})"


def _to_images(pixels, max_pixel):
    """uint8 ``(N, H, W)`` pixels -> float32 ``(N, 1, H, W)`` in [0, 1] as ``pixel / max_pixel``."""
    # Divide in float32 from the integer values: for /16 the result is exact (power of two);
    # for /255 it is the correctly rounded float32 quotient, so round(x * 255) gives the pixel back.
    return torch.from_numpy(pixels).unsqueeze(1).to(torch.float32) / max_pixel


def load_digits_dataset():
    """scikit-learn's bundled 8x8 digits (1797 images) with a fixed stratified 80/20 split.

    Pixels are integers 0..16 and become ``x = pixel / 16`` (exact in float32). The split is
    ``train_test_split(test_size=0.2, random_state=0, stratify=y)``: 1437 train / 360 test,
    the same on every call and independent of any training seed.

    Returns
    -------
    Dataset
        Named ``"digits"``, images ``1x8x8``, 10 classes.
    """
    # Imported here so that `import quant.data` stays cheap for MNIST-only users.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    # sklearn hands back float64 holding the integers 0..16; go through uint8 so the
    # scaling below starts from exact integers.
    pixels = x.astype(np.uint8).reshape(-1, 8, 8)
    x_tr, x_te, y_tr, y_te = train_test_split(pixels, y, test_size=0.2, random_state=0, stratify=y)
    return Dataset(
        name="digits",
        train_x=_to_images(np.ascontiguousarray(x_tr), _DIGITS_MAX),
        train_y=torch.from_numpy(np.asarray(y_tr, dtype=np.int64)),
        test_x=_to_images(np.ascontiguousarray(x_te), _DIGITS_MAX),
        test_y=torch.from_numpy(np.asarray(y_te, dtype=np.int64)),
        num_classes=10,
    )


def _mnist_names(stem, idx):
    """The file names accepted for one MNIST file, in the order they are tried."""
    return (f"{stem}-{idx}-ubyte", f"{stem}-{idx}-ubyte.gz", f"{stem}.{idx}-ubyte", f"{stem}.{idx}-ubyte.gz")


def _find_mnist_file(data_dir, stem, idx):
    names = _mnist_names(stem, idx)
    for name in names:
        candidate = data_dir / name
        if candidate.is_file():
            return candidate
    raise UserError(
        f"no {stem} file in {data_dir}; expected one of {', '.join(names)}; "
        "pass --data-dir pointing at a folder with the four MNIST IDX files"
    )


def _load_mnist_split(data_dir, prefix):
    """Read and check one split (``train`` or ``t10k``); returns (uint8 images, int64 labels)."""
    img_path = _find_mnist_file(data_dir, f"{prefix}-images", "idx3")
    lbl_path = _find_mnist_file(data_dir, f"{prefix}-labels", "idx1")
    images = read_idx(img_path)
    labels = read_idx(lbl_path)
    if images.ndim != 3:
        raise UserError(
            f"{img_path}: images must be 3-D (count, rows, cols), got shape {images.shape}; pass an MNIST image file"
        )
    if labels.ndim != 1:
        raise UserError(f"{lbl_path}: labels must be 1-D (count,), got shape {labels.shape}; pass an MNIST label file")
    if len(images) != len(labels):
        raise UserError(
            f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels; "
            "use image and label files from the same download"
        )
    bad = np.flatnonzero(labels >= _MNIST_CLASSES)
    if bad.size:
        i = int(bad[0])
        raise UserError(
            f"{lbl_path}: label {int(labels[i])} at index {i} is outside 0..{_MNIST_CLASSES - 1}; "
            "the label file is corrupt; download it again"
        )
    return images, labels.astype(np.int64)


def load_mnist_dir(data_dir):
    """Load MNIST (or any MNIST-format 10-class set) from a folder of four IDX files.

    For each of ``train-images``, ``train-labels``, ``t10k-images``, ``t10k-labels`` the
    folder must hold ``{stem}-idxN-ubyte``, ``{stem}.idxN-ubyte`` or either with ``.gz``
    (``N`` is 3 for images, 1 for labels). Pixels 0..255 become ``x = pixel / 255``,
    computed in float32.

    Parameters
    ----------
    data_dir : str or os.PathLike
        The folder.

    Returns
    -------
    Dataset
        Named ``"mnist"``, 10 classes.

    Raises
    ------
    UserError
        The folder or a file is missing, a file is not valid IDX, the images are not 3-D,
        the labels are not 1-D, the image and label counts differ, a label is outside 0..9,
        or train and test images differ in size.
    """
    data_dir = pathlib.Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(
            f"MNIST directory {data_dir} does not exist or is not a directory; "
            "pass --data-dir pointing at a folder with the four MNIST IDX files"
        )
    train_px, train_y = _load_mnist_split(data_dir, "train")
    test_px, test_y = _load_mnist_split(data_dir, "t10k")
    if train_px.shape[1:] != test_px.shape[1:]:
        raise UserError(
            f"{data_dir}: train images are {train_px.shape[1]}x{train_px.shape[2]} but test images are "
            f"{test_px.shape[1]}x{test_px.shape[2]}; use train and test files from the same dataset"
        )
    return Dataset(
        name="mnist",
        train_x=_to_images(train_px, _MNIST_MAX),
        train_y=torch.from_numpy(train_y),
        test_x=_to_images(test_px, _MNIST_MAX),
        test_y=torch.from_numpy(test_y),
        num_classes=_MNIST_CLASSES,
    )


def load_dataset(name, data_dir=None):
    """Load a dataset by name.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`: ``"digits"`` (bundled with scikit-learn) or ``"mnist"``.
    data_dir : str or os.PathLike, optional
        Folder with the MNIST IDX files; required for ``"mnist"``, ignored for ``"digits"``.

    Returns
    -------
    Dataset

    Raises
    ------
    UserError
        Unknown name, ``"mnist"`` without ``data_dir``, or any error of :func:`load_mnist_dir`.
    """
    if name == "digits":
        return load_digits_dataset()
    if name == "mnist":
        if data_dir is None:
            raise UserError("--data mnist needs --data-dir DIR, a folder with the four MNIST IDX files")
        return load_mnist_dir(data_dir)
    raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


def batches(x, y, batch_size, *, shuffle, generator=None):
    """Iterate over ``(xb, yb)`` minibatches for one epoch.

    Parameters
    ----------
    x, y : torch.Tensor
        Inputs and labels with the same first dimension ``n``.
    batch_size : int
        Samples per batch; the last batch holds the remaining ``n % batch_size`` if non-zero.
    shuffle : bool
        Visit samples in the order of ``torch.randperm(n, generator=generator)`` instead of
        ``0 .. n-1``.
    generator : torch.Generator, optional
        Makes the shuffle deterministic.

    Returns
    -------
    iterator of (torch.Tensor, torch.Tensor)
        Every sample appears exactly once.

    Raises
    ------
    UserError
        ``batch_size`` is not a positive integer.
    ValueError
        ``x`` and ``y`` differ in length.
    """
    # Checked here, not inside the generator, so a bad call fails at the call site.
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch size must be a positive integer, got {batch_size!r}; pass --batch-size N with N >= 1")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    return _iter_batches(x, y, batch_size, shuffle, generator)


def _iter_batches(x, y, batch_size, shuffle, generator):
    n = len(x)
    if shuffle:
        # One gather per epoch; the batches below are then views, not per-batch gathers.
        order = torch.randperm(n, generator=generator)
        x, y = x[order], y[order]
    for start in range(0, n, batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]
