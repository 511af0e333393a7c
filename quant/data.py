"""Image-classification datasets (digits, MNIST IDX, CIFAR-10 binary, a synthetic colour set) as float tensors, plus minibatching."""

import gzip
import math
import pathlib
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from core.errors import UserError

DATASETS = ("digits", "mnist", "cifar10", "synthetic")

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
_BYTE_MAX = 255  # MNIST, CIFAR-10 and the synthetic set

_MNIST_CLASSES = 10

# CIFAR-10 binary version (https://www.cs.toronto.edu/~kriz/cifar.html): each record is one
# label byte then 32x32 red, 32x32 green and 32x32 blue bytes, each plane row-major.
_CIFAR_SIDE = 32
_CIFAR_PIXELS = 3 * _CIFAR_SIDE * _CIFAR_SIDE
_CIFAR_RECORD = 1 + _CIFAR_PIXELS
_CIFAR_CLASSES = 10
_CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST = "test_batch.bin"
# the folder the CIFAR-10 binary tarball unpacks to; --data-dir may name it or its parent
_CIFAR_SUBDIR = "cifar-10-batches-bin"

# The synthetic colour set (see load_synthetic_dataset).
_SYNTH_SEED = 20240607
_SYNTH_SIDE = 16
_SYNTH_TRAIN = 2000
_SYNTH_TEST = 500
# bar colours (R, G, B) in 0..255 with equal sums, so that brightness alone cannot tell them apart
_SYNTH_COLOURS = ((215, 45, 45), (45, 215, 45))
_SYNTH_ORIENTATIONS = ("horizontal", "vertical")
_SYNTH_CLASSES = len(_SYNTH_COLOURS) * len(_SYNTH_ORIENTATIONS)


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
    """A train/test split of images.

    Attributes
    ----------
    name : str
        One of :data:`DATASETS`.
    train_x, test_x : torch.Tensor
        ``float32`` images of shape ``(N, C, H, W)`` (``C`` is 1 for digits and MNIST, 3 for
        CIFAR-10 and the synthetic set) with values in ``[0, 1]``, computed exactly as
        ``pixel / max_pixel`` in float32 (see the loaders).
    train_y, test_y : torch.Tensor
        ``int64`` class labels of shape ``(N,)``, in ``0 .. num_classes - 1``.
    num_classes : int
        Number of classes (10, or 4 for the synthetic set).
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
        """tuple of int: ``(C, H, W)``, the shape of one image."""
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
    """uint8 ``(N, H, W)`` or ``(N, C, H, W)`` pixels -> float32 ``(N, C, H, W)`` in [0, 1] as
    ``pixel / max_pixel`` (``C`` is 1 for the three-dimensional form)."""
    x = torch.from_numpy(pixels)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    # Divide in float32 from the integer values: for /16 the result is exact (power of two);
    # for /255 it is the correctly rounded float32 quotient, so round(x * 255) gives the pixel back.
    return x.to(torch.float32) / max_pixel


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
    if len(images) == 0:
        raise UserError(f"{img_path} holds 0 images: the {prefix} split is empty; pass IDX files with images in them")
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
        train_x=_to_images(train_px, _BYTE_MAX),
        train_y=torch.from_numpy(train_y),
        test_x=_to_images(test_px, _BYTE_MAX),
        test_y=torch.from_numpy(test_y),
        num_classes=_MNIST_CLASSES,
    )


def read_cifar_batch(path):
    """Read one file of the CIFAR-10 binary version (``data_batch_N.bin`` or ``test_batch.bin``).

    Each record is one label byte (0..9) followed by 3072 pixel bytes: the 32x32 red, green
    and blue planes, each row-major.

    Parameters
    ----------
    path : str or os.PathLike
        The batch file.

    Returns
    -------
    pixels : numpy.ndarray
        ``uint8`` images of shape ``(N, 3, 32, 32)``.
    labels : numpy.ndarray
        ``int64`` labels of shape ``(N,)``.

    Raises
    ------
    UserError
        The file is missing, unreadable or empty, its size is not a whole number of
        3073-byte records, or a label is outside 0..9.  The message names the file.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"CIFAR-10 file {path} does not exist; check the path or unpack the binary version again")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read CIFAR-10 file {path}: {exc.strerror or exc}; check its permissions") from None
    if not raw:
        raise UserError(f"{path}: empty file (0 records); download and unpack the CIFAR-10 binary version again")
    count, rest = divmod(len(raw), _CIFAR_RECORD)
    if rest:
        raise UserError(
            f"{path}: {len(raw)} bytes is not a whole number of {_CIFAR_RECORD}-byte records "
            f"(1 label byte + {_CIFAR_PIXELS} pixel bytes; {count} records and {rest} bytes over); "
            "the file is truncated or not the CIFAR-10 binary version; download it again"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(count, _CIFAR_RECORD)  # (N, 1 + 3*32*32)
    labels = records[:, 0]
    bad = np.flatnonzero(labels >= _CIFAR_CLASSES)
    if bad.size:
        i = int(bad[0])
        raise UserError(
            f"{path}: label {int(labels[i])} of record {i} is outside 0..{_CIFAR_CLASSES - 1}; the file is corrupt "
            "or not CIFAR-10 (CIFAR-100 records have two label bytes); download the CIFAR-10 binary version again"
        )
    # copy() so the images own writable memory and the file's bytes can be freed
    pixels = records[:, 1:].reshape(count, 3, _CIFAR_SIDE, _CIFAR_SIDE).copy()  # (N, C, H, W): planes in RGB order
    return pixels, labels.astype(np.int64)


def _cifar_folder(data_dir):
    """The folder holding the batch files: ``data_dir`` or its ``cifar-10-batches-bin`` subfolder."""
    if not data_dir.is_dir():
        raise UserError(
            f"CIFAR-10 directory {data_dir} does not exist or is not a directory; pass --data-dir pointing at "
            f"the unpacked {_CIFAR_SUBDIR} folder of the CIFAR-10 binary version"
        )
    inner = data_dir / _CIFAR_SUBDIR
    names = _CIFAR_TRAIN + (_CIFAR_TEST,)
    if not any((data_dir / n).is_file() for n in names) and inner.is_dir():
        return inner
    return data_dir


def load_cifar10_dir(data_dir):
    """Load CIFAR-10 from a folder of its binary version's batch files.

    The folder (or its ``cifar-10-batches-bin`` subfolder) must hold ``test_batch.bin`` and at
    least one of ``data_batch_1.bin`` .. ``data_batch_5.bin``; the training split is the
    batches present, in order.  Pixels 0..255 become ``x = pixel / 255``, computed in float32,
    as for MNIST.  Nothing is downloaded.

    Parameters
    ----------
    data_dir : str or os.PathLike
        The folder.

    Returns
    -------
    Dataset
        Named ``"cifar10"``, images ``3x32x32``, 10 classes.

    Raises
    ------
    UserError
        The folder is missing, it lacks ``test_batch.bin`` or every training batch (the
        message names what is missing), or any error of :func:`read_cifar_batch`.
    """
    folder = _cifar_folder(pathlib.Path(data_dir))
    train_files = [folder / n for n in _CIFAR_TRAIN if (folder / n).is_file()]
    missing = []
    if not train_files:
        missing.append(f"every training batch ({_CIFAR_TRAIN[0]} .. {_CIFAR_TRAIN[-1]}, at least one is needed)")
    if not (folder / _CIFAR_TEST).is_file():
        missing.append(_CIFAR_TEST)
    if missing:
        raise UserError(
            f"CIFAR-10 folder {folder} lacks {' and '.join(missing)}; pass --data-dir pointing at the unpacked "
            f"{_CIFAR_SUBDIR} folder of the CIFAR-10 binary version"
        )
    parts = [read_cifar_batch(f) for f in train_files]
    test_px, test_y = read_cifar_batch(folder / _CIFAR_TEST)
    return Dataset(
        name="cifar10",
        train_x=_to_images(np.concatenate([px for px, _ in parts]), _BYTE_MAX),
        train_y=torch.from_numpy(np.concatenate([y for _, y in parts])),
        test_x=_to_images(test_px, _BYTE_MAX),
        test_y=torch.from_numpy(test_y),
        num_classes=_CIFAR_CLASSES,
    )


def synthetic_pixels(count, rng):
    """``count`` images of the synthetic colour set, drawn from ``rng``: see :func:`load_synthetic_dataset`.

    Returns
    -------
    pixels : numpy.ndarray
        ``uint8`` of shape ``(count, 3, 16, 16)``.
    labels : numpy.ndarray
        ``int64`` of shape ``(count,)``; every class ``count // 4`` or ``count // 4 + 1`` times.
    """
    side = _SYNTH_SIDE
    labels = rng.permutation(np.arange(count) % _SYNTH_CLASSES)
    colour, vertical = np.divmod(labels, len(_SYNTH_ORIENTATIONS))
    length = rng.integers(6, 11, size=count)
    width = rng.integers(2, 4, size=count)
    h = np.where(vertical == 1, length, width)  # bar height and width in pixels
    w = np.where(vertical == 1, width, length)
    y0 = rng.integers(0, side - h + 1)[:, None, None, None]
    x0 = rng.integers(0, side - w + 1)[:, None, None, None]
    yy = np.arange(side)[None, None, :, None]
    xx = np.arange(side)[None, None, None, :]
    bar = (yy >= y0) & (yy < y0 + h[:, None, None, None]) & (xx >= x0) & (xx < x0 + w[:, None, None, None])
    fg = np.asarray(_SYNTH_COLOURS)[colour] + rng.integers(-30, 31, size=(count, 3))  # (N, 3)
    bg = rng.integers(0, 90, size=(count, 3))  # a dim random colour per image
    img = np.where(bar, fg[:, :, None, None], bg[:, :, None, None]) + rng.normal(0.0, 12.0, (count, 3, side, side))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), labels.astype(np.int64)


def load_synthetic_dataset():
    """A synthetic colour set: 4 classes of 3x16x16 images that need colour and shape to tell apart.

    Each image is a bar, 6 to 10 pixels long and 2 or 3 wide, at a random position on a dim
    background of a random colour (each channel 0..89), with Gaussian pixel noise (sigma 12).
    The class is the bar's colour and orientation, ``2 * colour + vertical``:

    ======  ============  ==========
    class   colour        bar
    ======  ============  ==========
    0       red           horizontal
    1       red           vertical
    2       green         horizontal
    3       green         vertical
    ======  ============  ==========

    Red is ``(215, 45, 45)`` and green ``(45, 215, 45)``, each channel jittered by up to 30;
    both have the same sum, so brightness alone cannot tell them apart and orientation needs
    the spatial layout.  Pixels 0..255 become ``x = pixel / 255`` in float32, as for MNIST.
    The set is drawn from a fixed seed (the same on every call and machine, whatever the
    training seed), 2000 train and 500 test images with every class equally often, in a few
    milliseconds: the quick 3-channel dataset of the tests and examples.  A small CNN learns
    it to over 90 % in a few epochs.

    Returns
    -------
    Dataset
        Named ``"synthetic"``, images ``3x16x16``, 4 classes.
    """
    rng = np.random.default_rng(_SYNTH_SEED)
    train_px, train_y = synthetic_pixels(_SYNTH_TRAIN, rng)
    test_px, test_y = synthetic_pixels(_SYNTH_TEST, rng)
    return Dataset(
        name="synthetic",
        train_x=_to_images(train_px, _BYTE_MAX),
        train_y=torch.from_numpy(train_y),
        test_x=_to_images(test_px, _BYTE_MAX),
        test_y=torch.from_numpy(test_y),
        num_classes=_SYNTH_CLASSES,
    )


def load_dataset(name, data_dir=None):
    """Load a dataset by name.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`: ``"digits"`` (bundled with scikit-learn), ``"mnist"``,
        ``"cifar10"`` or ``"synthetic"`` (generated, :func:`load_synthetic_dataset`).
    data_dir : str or os.PathLike, optional
        Folder with the MNIST IDX files or the CIFAR-10 binary batches; required for
        ``"mnist"`` and ``"cifar10"``, ignored for ``"digits"`` and ``"synthetic"``.

    Returns
    -------
    Dataset

    Raises
    ------
    UserError
        Unknown name, ``"mnist"`` or ``"cifar10"`` without ``data_dir``, or any error of
        :func:`load_mnist_dir` or :func:`load_cifar10_dir`.
    """
    if name == "digits":
        return load_digits_dataset()
    if name == "synthetic":
        return load_synthetic_dataset()
    if name == "mnist":
        if data_dir is None:
            raise UserError("--data mnist needs --data-dir DIR, a folder with the four MNIST IDX files")
        return load_mnist_dir(data_dir)
    if name == "cifar10":
        if data_dir is None:
            raise UserError("--data cifar10 needs --data-dir DIR, a folder with the CIFAR-10 binary version's "
                            "data_batch_N.bin and test_batch.bin")
        return load_cifar10_dir(data_dir)
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
