"""Datasets as plain NumPy arrays: splits and k-fold indices.

Three built-in datasets, all returned as a :class:`Dataset` of host arrays
(``x`` float32 ``[N, H, W, C]`` in ``[0, 1]``, ``y`` int32 ``[N]``):

* ``"digits"``: scikit-learn's 8x8 digits (1797 images), embedded, always
  available offline. The default for quick studies and tests.
* ``"mnist"`` and ``"fashion_mnist"``: read from MNIST-format IDX files
  ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` found on disk (see
  :func:`find_data_dir` for where we look), or through
  ``tensorflow-datasets`` when it is installed and the data is prepared or
  downloadable.

Any other data comes in through :func:`from_arrays`. Every problem with the
data raises :class:`DatasetError` (a ``ValueError``) whose message says how to
fix it. Nothing here runs under ``jit``: the tuner moves these arrays to the
device once per study.

This is the only module that may import ``tensorflow_datasets``, and only
lazily inside :func:`_load_tfds`.

Example:
  >>> ds = load_dataset("digits", seed=0)
  >>> ds.input_shape, ds.num_classes
  ((8, 8, 1), 10)
  >>> train_idx, val_idx = kfold_indices(len(ds.y_train), k=5)
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import socket
import threading
import warnings
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "find_data_dir",
    "from_arrays",
    "kfold_indices",
    "load_dataset",
    "read_idx",
]

DATASETS = ("digits", "mnist", "fashion_mnist")

ENV_VAR = "JAXSWARM_DATA_DIR"

# Sub-folders of a data directory that may hold a dataset's IDX files, in the
# order they are tried (torchvision keeps them under `<Name>/raw`).
_SUBDIRS = {
    "mnist": ("mnist", "MNIST", "MNIST/raw"),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist", "FashionMNIST", "FashionMNIST/raw"),
}

# Well-known places, tried after the data_dir argument and $JAXSWARM_DATA_DIR.
# Home-relative entries are expanded at call time (tests move $HOME).
_SYSTEM_DIRS = {
    "mnist": ("~/.cache/jaxswarm/mnist", "~/.keras/datasets/mnist"),
    "fashion_mnist": (
        "/usr/share/datasets/fashion-mnist",  # Debian: dataset-fashion-mnist
        "~/.cache/jaxswarm/fashion_mnist",
        "~/.keras/datasets/fashion-mnist",  # where Keras downloads it
    ),
}

# (split, kind) -> file stem; ".gz" is optional, and a "." before "idx" (the
# spelling of some mirrors) is accepted as well as "-".
_IDX_STEMS = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

_IDX_MAGIC_IMAGES = 0x00000803  # ubyte, 3 dims
_IDX_MAGIC_LABELS = 0x00000801  # ubyte, 1 dim

# IDX type byte -> big-endian NumPy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# Mean training pixel (0..255) of the real datasets; used only to warn when
# one dataset's files are loaded under the other's name.
_MEAN_PIXEL = {"mnist": 33.3, "fashion_mnist": 72.9}

_TFDS_HOST = ("storage.googleapis.com", 443)
_TFDS_HINT = (
    "install the extra with `pip install 'jaxswarm[tfds]'`, or skip TFDS and "
    "put the IDX files {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz in a "
    f"directory passed as data_dir= / --data-dir or ${ENV_VAR}"
)


class DatasetError(ValueError):
    """A dataset is missing, corrupt or malformed; the message says how to fix it."""


class Dataset(NamedTuple):
    """A classification dataset split into train / validation / test arrays.

    Images are float32 ``[N, H, W, C]``; tabular data from :func:`from_arrays`
    is stored as ``[N, 1, 1, F]`` (features as channels) so every dataset has
    the same rank. Use :meth:`flat` for ``[N, H*W*C]`` views.

    Example:
      >>> ds = load_dataset("digits")
      >>> ds.flat(ds.x_train).shape[1] == ds.num_features == 64
      True
    """

    name: str
    x_train: np.ndarray  # f32[N_train, H, W, C], images in [0, 1]
    y_train: np.ndarray  # i32[N_train], values in 0..num_classes-1
    x_val: np.ndarray  # f32[N_val, H, W, C], N_val >= 1 from load_dataset / from_arrays
    y_val: np.ndarray  # i32[N_val]
    x_test: np.ndarray  # f32[N_test, H, W, C]
    y_test: np.ndarray  # i32[N_test]
    num_classes: int
    origin: str = ""  # where the arrays came from: absolute IDX dir, "sklearn", "arrays", "tfds:<dir>"
    # The original label value of each class index (from_arrays keeps y's values, strings included;
    # the named datasets are 0..9), so a model can answer in the caller's labels.
    classes: tuple = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one example, ``(H, W, C)``."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_features(self) -> int:
        """Number of scalar inputs per example, ``H * W * C``."""
        return int(np.prod(self.input_shape))

    def flat(self, x: np.ndarray) -> np.ndarray:
        """Returns ``x`` reshaped to ``[N, H*W*C]`` (a view when possible).

        Args:
          x: array ``[N, H, W, C]`` with this dataset's example shape.

        Returns:
          Array ``[N, num_features]``.
        """
        x = np.asarray(x)
        if x.shape[1:] != self.input_shape:
            raise DatasetError(
                f"flat expects examples of shape {self.input_shape}, got array of shape {x.shape}"
            )
        return x.reshape(x.shape[0], self.num_features)

    def flat_splits(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns ``(x_train, x_val, x_test)`` each flattened to ``[N, F]``."""
        return self.flat(self.x_train), self.flat(self.x_val), self.flat(self.x_test)

    def describe(self) -> str:
        """One-line summary, e.g. for logs and reports."""
        shape = "x".join(str(d) for d in self.input_shape)
        text = (
            f"{self.name}: train {len(self.y_train)}, val {len(self.y_val)}, "
            f"test {len(self.y_test)}; input {shape}; {self.num_classes} classes"
        )
        return f"{text} ({self.origin})" if self.origin else text


# ----------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    source: str = "auto",
) -> Dataset:
    """Loads a named dataset with a seeded, stratified validation split.

    ``digits`` is split 80/20 into train/test by a stratified draw with a fixed
    seed (the test set is the same for every ``seed``, like MNIST's official
    test set); then ``val_fraction`` of the remaining train set is carved out
    as validation, stratified, with ``seed``. For ``mnist`` and
    ``fashion_mnist`` the validation set is carved the same way from the
    official 60000-image train set and the official 10000-image test set is the
    test set.

    Args:
      name: one of :data:`DATASETS` (``-`` and ``_`` are interchangeable).
      data_dir: the directory holding the IDX files (directly or in a
        sub-folder named after the dataset), or a prepared TFDS data
        directory. When given it is the only place read: a missing path, a
        file, or a directory lacking one of the four files is an error, never
        a fall-back to ``$JAXSWARM_DATA_DIR``, system places or TFDS
        elsewhere. When ``None``: ``$JAXSWARM_DATA_DIR``, then system places
        (see :func:`find_data_dir`), then TFDS.
      val_fraction: fraction of the training data held out for validation,
        in ``(0, 1)``; the validation split is never empty.
      seed: seed of the validation split.
      source: ``"auto"`` (IDX files, then TFDS if installed), ``"idx"``
        (files only) or ``"tfds"`` (tensorflow-datasets only). ``digits``
        accepts only ``"auto"``.

    Returns:
      A :class:`Dataset` with float32 images in ``[0, 1]`` and int32 labels;
      its ``origin`` names where the arrays came from (``"sklearn"``, the
      absolute IDX directory read, or ``"tfds:<dir>"``).

    Raises:
      DatasetError: unknown name, a bad ``data_dir``, missing data (within
        seconds, with where we looked and how to get it), a corrupt file, or
        a ``val_fraction`` that leaves a split empty.

    Example:
      >>> ds = load_dataset("digits", val_fraction=0.2, seed=1)
      >>> ds.x_train.dtype, ds.input_shape
      (dtype('float32'), (8, 8, 1))
    """
    key = _canonical_name(name)
    _check_val_fraction(val_fraction)  # before reading 60000 images
    if source not in ("auto", "idx", "tfds"):
        raise DatasetError(f"source must be 'auto', 'idx' or 'tfds', got {source!r}")
    if key == "digits":
        if source != "auto":
            raise DatasetError(
                f"'digits' is embedded (scikit-learn) and has no {source!r} source; use source='auto'"
            )
        if data_dir is not None:  # ignoring it would hide a mistyped --dataset
            raise DatasetError(
                f"'digits' is embedded (scikit-learn) and reads no data_dir (got {os.fspath(data_dir)!r}); "
                "drop data_dir / --data-dir, or ask for 'mnist' or 'fashion_mnist'"
            )
        return _load_digits(val_fraction, seed)

    if data_dir is not None:
        # That directory or an error: never $JAXSWARM_DATA_DIR, system places or TFDS elsewhere.
        root = _given_dir(data_dir, must_exist=source != "tfds")  # TFDS may download into it
        if source == "tfds":
            return _load_tfds(key, root, val_fraction, seed)
        found = find_data_dir(key, root)
        if found is not None:
            return _load_idx_dir(key, found, val_fraction, seed)
        if source == "auto" and _tfds_prepared(root, key) and _tfds_installed():
            return _load_tfds(key, root, val_fraction, seed)
        raise DatasetError(_lacking_message(key, root))

    if source in ("auto", "idx"):
        found = find_data_dir(key, data_dir)
        if found is not None:
            return _load_idx_dir(key, found, val_fraction, seed)
        if source == "idx" or not _tfds_installed():
            raise DatasetError(_missing_message(key, data_dir, tfds_tried=False))
    return _load_tfds(key, data_dir, val_fraction, seed)


def from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str = "arrays",
) -> Dataset:
    """Builds a :class:`Dataset` from any NumPy arrays, with stratified splits.

    Shapes: ``x`` may be ``[N, F]`` (stored as ``[N, 1, 1, F]``), ``[N, H, W]``
    (stored as ``[N, H, W, 1]``) or ``[N, H, W, C]``.

    Values: ``uint8`` inputs are taken as 8-bit images and divided by 255;
    every other numeric dtype is cast to float32 unchanged (no rescaling of
    non-image data: standardize features yourself if they need it). NaN or
    inf is an error.

    Labels: integers (or integral floats), strings or other sortable
    values. They are remapped to ``0..K-1`` in sorted order of the distinct
    values of ``y`` (so labels ``[3, 7, 7, 10]`` become ``[0, 1, 1, 2]``,
    ``["dog", "cat"]`` become ``[1, 0]``); the dataset's ``classes`` keeps
    the original value of each index (``(3, 7, 10)``, ``("cat", "dog")``).
    ``y_test`` must use only labels that occur in ``y``.

    Splits: without ``x_test``, a stratified ``test_fraction`` of the data is
    held out as test, drawn with a fixed seed (the same test set for every
    ``seed``); with ``x_test``, ``test_fraction`` is ignored. Then a
    stratified ``val_fraction`` of the remaining training data becomes the
    validation set, drawn with ``seed``.

    Args:
      x: features, ``[N, F]``, ``[N, H, W]`` or ``[N, H, W, C]``.
      y: class labels ``[N]`` (integers, integral floats or strings).
      x_test: optional test features, same example shape as ``x``.
      y_test: optional test labels; required exactly when ``x_test`` is given.
      val_fraction: validation fraction of the training data, in ``(0, 1)``.
      test_fraction: test fraction of ``x`` when no ``x_test``, in ``[0, 1)``.
      seed: seed of the validation split.
      name: name recorded in the dataset.

    Returns:
      A :class:`Dataset` whose ``classes`` holds the original labels.

    Raises:
      DatasetError: on mismatched lengths, bad shapes, NaN/inf features,
        non-integral float labels, labels that cannot be sorted, fewer than
        2 classes, or fractions that leave the validation or training split
        empty.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> ds = from_arrays(rng.normal(size=(100, 5)), rng.integers(0, 3, 100))
      >>> ds.input_shape, ds.num_classes
      ((1, 1, 5), 3)
      >>> from_arrays(rng.normal(size=(20, 2)), np.array(["no", "yes"] * 10)).classes
      ('no', 'yes')
    """
    _check_val_fraction(val_fraction)
    _check_fraction("test_fraction", test_fraction)
    x = _as_features(x, "x")
    y = _as_labels(y, "y")
    if len(x) != len(y):
        raise DatasetError(f"x has {len(x)} examples but y has {len(y)} labels; they must match")
    if (x_test is None) != (y_test is None):
        raise DatasetError("pass both x_test and y_test, or neither")

    classes = _unique_labels(y, "y")
    if len(classes) < 2:
        raise DatasetError(
            f"y has {len(classes)} distinct label(s) {classes.tolist()}; classification needs at least 2"
        )
    y = np.searchsorted(classes, y).astype(np.int32)
    # One example of a class per split it is drawn into: fewer, and a split lacks it (3 rows split 1/1/1,
    # and a study then reports a perfect validation score beside a test score of 0).
    need = 3 if x_test is None and test_fraction > 0 else 2
    counts = np.bincount(y, minlength=len(classes))
    if counts.min() < need:
        short = int(np.argmin(counts))
        raise DatasetError(
            f"label {classes[short].item()!r} has {counts[short]} example(s); every class needs at least {need} "
            f"(one for training, one for validation{', one for test' if need == 3 else ''}): add examples "
            "or drop the class"
        )

    if x_test is None:
        train_idx, test_idx = _stratified_split(y, test_fraction, np.random.default_rng(_TEST_SEED))
        x_test, y_test = x[test_idx], y[test_idx]
        x, y = x[train_idx], y[train_idx]
    else:
        x_test = _as_features(x_test, "x_test")
        y_test = _as_labels(y_test, "y_test")
        if len(x_test) != len(y_test):
            raise DatasetError(
                f"x_test has {len(x_test)} examples but y_test has {len(y_test)} labels; they must match"
            )
        if x_test.shape[1:] != x.shape[1:]:
            raise DatasetError(
                f"x_test examples have shape {x_test.shape[1:]} but x examples have {x.shape[1:]}"
            )
        if (y_test.dtype.kind == "U") != (classes.dtype.kind == "U"):
            # Strings against numbers: no label can match (and searchsorted would raise).
            raise DatasetError(
                f"y_test holds labels of dtype {y_test.dtype} but y of dtype {classes.dtype}; "
                f"use the same kind of labels (known labels are {classes.tolist()[:20]})"
            )
        unseen = np.setdiff1d(_unique_labels(y_test, "y_test"), classes)
        if unseen.size:
            raise DatasetError(
                f"y_test has labels {unseen.tolist()[:10]} that never occur in y; "
                f"known labels are {classes.tolist()[:20]}"
            )
        y_test = np.searchsorted(classes, y_test).astype(np.int32)

    hint = "pass more examples, or x_test=/y_test= so none is held out for test"
    return _split_train(name, x, y, np.ascontiguousarray(x_test), np.asarray(y_test, np.int32),
                        len(classes), val_fraction, seed, "arrays", hint=hint,
                        classes=tuple(classes.tolist()))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (MNIST format), gzip-compressed or raw.

    The header is two zero bytes, a type byte (0x08 ubyte, 0x09 byte,
    0x0B short, 0x0C int, 0x0D float, 0x0E double), a rank byte, then one
    big-endian uint32 per dimension; the payload must be exactly
    ``prod(dims)`` items. Compression is detected from the gzip magic bytes.

    Args:
      path: file path.

    Returns:
      Array of the declared shape, native byte order (uint8 for MNIST).

    Raises:
      DatasetError: naming the file, for bad gzip data, a bad header, or a
        payload shorter or longer than declared.

    Example:
      >>> images = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")  # doctest: +SKIP
      >>> images.shape, images.dtype  # doctest: +SKIP
      ((10000, 28, 28), dtype('uint8'))
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read IDX file {path}: {e.strerror or e}") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(
                f"IDX file {path} is a corrupt or truncated gzip file ({e}); download it again"
            ) from e
    elif path.suffix == ".gz":
        raise DatasetError(f"IDX file {path} is named .gz but is not gzip data; download it again")

    if len(raw) < 4:
        raise DatasetError(f"IDX file {path} is too short ({len(raw)} bytes) to hold a header")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(
            f"IDX file {path} has bad magic number 0x{raw[:4].hex()}: expected 0x0000TTNN "
            "with type byte TT in 08,09,0b,0c,0d,0e; is it an IDX file?"
        )
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header_len = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header_len:
        raise DatasetError(f"IDX file {path} declares {ndim} dims but its header is truncated or empty")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    payload = len(raw) - header_len
    if payload != expected:
        what = "truncated" if payload < expected else "has trailing bytes"
        raise DatasetError(
            f"IDX file {path} is {what}: header declares shape {dims} ({expected} bytes) "
            f"but the payload has {payload} bytes; download it again"
        )
    arr = np.frombuffer(raw, dtype, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def kfold_indices(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Equal-size k-fold index arrays that stack for ``vmap`` over folds.

    A seeded permutation of ``range(n)`` is cut into ``k`` folds of
    ``m = n // k`` indices; the last ``n % k`` indices of the permutation
    (a seeded, deterministic choice) are dropped so all folds have the same
    size. Fold ``i`` validates on its ``m`` indices and trains on the other
    ``(k - 1) * m``. Each row is sorted.

    Args:
      n: number of examples.
      k: number of folds, ``2 <= k <= n``.
      seed: seed of the permutation.

    Returns:
      ``(train_idx, val_idx)``: int32 arrays ``[k, (k-1)*m]`` and ``[k, m]``.

    Example:
      >>> train_idx, val_idx = kfold_indices(10, 3, seed=0)
      >>> train_idx.shape, val_idx.shape
      ((3, 6), (3, 3))
    """
    n, k = _check_int(n, "n"), _check_int(k, "k")
    if k < 2 or k > n:
        raise ValueError(f"kfold_indices needs 2 <= k <= n, got k={k}, n={n}")
    m = n // k
    perm = np.random.default_rng(seed).permutation(n)[: k * m]
    folds = perm.reshape(k, m)
    val_idx = np.sort(folds, axis=1)
    train_idx = np.stack([np.sort(np.delete(folds, i, axis=0).ravel()) for i in range(k)])
    return train_idx.astype(np.int32), val_idx.astype(np.int32)


def find_data_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """Finds a directory holding all four IDX files of ``name``.

    With ``data_dir``, only ``data_dir`` is searched. Without it, tried in
    order: each path in ``$JAXSWARM_DATA_DIR`` (``os.pathsep``-separated),
    then the system places (for Fashion-MNIST Debian's
    ``/usr/share/datasets/fashion-mnist``; for both
    ``~/.cache/jaxswarm/<name>`` and ``~/.keras/datasets/<name>``). For
    ``data_dir`` and each ``$JAXSWARM_DATA_DIR`` entry, sub-folders named
    after the dataset (``mnist``, ``fashion_mnist``, ``fashion-mnist``,
    torchvision's ``MNIST/raw``, …) are tried before the directory itself,
    so a shared data root with both datasets in sub-folders works; files
    directly in the directory are taken as whichever dataset is asked for.

    Args:
      name: ``"mnist"`` or ``"fashion_mnist"``.
      data_dir: optional directory; when given, the only one searched.

    Returns:
      The first directory with all four files, or ``None``.

    Example:
      >>> find_data_dir("fashion_mnist")  # doctest: +SKIP
      PosixPath('/usr/share/datasets/fashion-mnist')
    """
    key = _canonical_name(name)
    if key not in _SUBDIRS:
        raise DatasetError(f"{name!r} is not read from IDX files; IDX datasets are {sorted(_SUBDIRS)}")
    for candidate in _candidate_dirs(key, data_dir):
        if _idx_files(candidate) is not None:
            return candidate
    return None


# ----------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------

# Seed of the test split of `digits` and `from_arrays` (fixed so the held-out
# test set does not move with the study seed).
_TEST_SEED = 20240917


def _load_digits(val_fraction: float, seed: int) -> Dataset:
    from sklearn.datasets import load_digits  # lazy: sklearn import is ~1 s

    bunch = load_digits()
    x = (np.asarray(bunch.images, np.float32) / 16.0)[..., None]  # [1797, 8, 8, 1]
    y = np.asarray(bunch.target, np.int32)
    train_idx, test_idx = _stratified_split(y, 0.2, np.random.default_rng(_TEST_SEED))
    return _split_train(
        "digits", x[train_idx], y[train_idx], x[test_idx], y[test_idx], 10, val_fraction, seed, "sklearn"
    )


def _load_idx_dir(key: str, directory: Path, val_fraction: float, seed: int) -> Dataset:
    files = _idx_files(directory)
    if files is None:
        raise DatasetError(f"{directory} does not hold the four IDX files of {key}")
    x_tr, y_tr = _read_idx_pair(files["train", "images"], files["train", "labels"], 10)
    x_te, y_te = _read_idx_pair(files["test", "images"], files["test", "labels"], 10)
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DatasetError(
            f"train images in {directory} are {x_tr.shape[1:]} but test images are {x_te.shape[1:]}"
        )
    _warn_if_swapped(key, x_tr, directory)
    # The real directory read, absolute, so a study can record where its data came from.
    return _image_dataset(key, x_tr, y_tr, x_te, y_te, val_fraction, seed, str(directory.resolve()))


def _read_idx_pair(images_path: Path, labels_path: Path, num_classes: int):
    """Reads and cross-checks one images/labels pair of IDX files."""
    for path, magic in ((images_path, _IDX_MAGIC_IMAGES), (labels_path, _IDX_MAGIC_LABELS)):
        head = _peek_header(path)
        if head != magic:
            kind = "images (3-dim ubyte)" if magic == _IDX_MAGIC_IMAGES else "labels (1-dim ubyte)"
            raise DatasetError(
                f"IDX file {path} has magic number 0x{head:08x}, expected 0x{magic:08x} for {kind}"
            )
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if len(images) != len(labels):
        raise DatasetError(
            f"IDX files disagree: {images_path} has {len(images)} images but "
            f"{labels_path} has {len(labels)} labels"
        )
    if labels.size and labels.max() >= num_classes:
        raise DatasetError(
            f"IDX file {labels_path} has label {int(labels.max())}, outside 0..{num_classes - 1}"
        )
    return images, labels.astype(np.int32)


def _peek_header(path: Path) -> int:
    """Returns the first 4 bytes of an IDX file (decompressed) as a big-endian int."""
    try:
        with open(path, "rb") as f:
            start = f.read(2)
        opener = gzip.open if start == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            head = f.read(4)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"IDX file {path} cannot be read ({e}); download it again") from e
    if len(head) < 4:
        raise DatasetError(f"IDX file {path} is too short ({len(head)} bytes) to hold a header")
    return int.from_bytes(head, "big")


def _image_dataset(key, x_tr, y_tr, x_te, y_te, val_fraction, seed, origin) -> Dataset:
    """uint8 images [N, H, W(, C)] -> float32 [N, H, W, C] in [0, 1], then split."""

    def to_float(images):
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        return images.astype(np.float32) / np.float32(255.0)

    x_tr, x_te = to_float(x_tr), to_float(x_te)
    return _split_train(key, x_tr, np.asarray(y_tr, np.int32), x_te, np.asarray(y_te, np.int32), 10,
                        val_fraction, seed, origin)


def _split_train(name, x, y, x_test, y_test, num_classes, val_fraction, seed, origin, hint="",
                 classes: tuple = ()) -> Dataset:
    train_idx, val_idx = _stratified_split(y, val_fraction, np.random.default_rng(seed))
    # An empty split would fail much later, deep in training (`cannot reshape array of size 0`).
    for split, idx in (("validation", val_idx), ("training", train_idx)):
        if len(idx) == 0:
            raise DatasetError(
                f"val_fraction={val_fraction} would leave the {split} split of {name!r} empty: only "
                f"{len(y)} example(s) to split into training and validation, at least 2 needed; "
                + (hint or "pass more examples")
            )
    return Dataset(
        name=name,
        x_train=x[train_idx],
        y_train=y[train_idx],
        x_val=x[val_idx],
        y_val=y[val_idx],
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        origin=origin,
        classes=classes or tuple(range(num_classes)),
    )


def _warn_if_swapped(key: str, images: np.ndarray, directory: Path) -> None:
    """Warns when a full MNIST-size train set looks like the *other* dataset."""
    if images.shape != (60000, 28, 28):
        return
    mean = float(images.mean(dtype=np.float64))
    nearest = min(_MEAN_PIXEL, key=lambda k: abs(_MEAN_PIXEL[k] - mean))
    if nearest != key:
        warnings.warn(
            f"the IDX files loaded as {key!r} from {directory} look like {nearest!r} "
            f"(mean pixel {mean:.1f}); put each dataset in its own sub-folder",
            stacklevel=4,  # the caller of load_dataset
        )


# ----------------------------------------------------------------------------
# TFDS (optional)
# ----------------------------------------------------------------------------


def _tfds_installed() -> bool:
    try:
        return importlib.util.find_spec("tensorflow_datasets") is not None
    except (ImportError, ValueError):
        return False


def _tfds_roots(data_dir) -> list[Path]:
    if data_dir is not None:  # that directory only, never TFDS_DATA_DIR or ~/tensorflow_datasets
        return [Path(data_dir).expanduser()]
    roots = []
    env = os.environ.get("TFDS_DATA_DIR")
    if env:
        roots.append(Path(env).expanduser())
    roots.append(Path("~/tensorflow_datasets").expanduser())
    return list(dict.fromkeys(roots))


def _tfds_prepared(root: Path, key: str) -> bool:
    """Whether `root/<key>/<version>/dataset_info.json` exists (TFDS's layout)."""
    base = root / key
    try:
        return base.is_dir() and any(base.glob("*/dataset_info.json"))
    except OSError:
        return False


def _network_reachable(host: str = _TFDS_HOST[0], port: int = _TFDS_HOST[1], timeout: float = 2.0) -> bool:
    """A TCP connect to `host:port`, bounded by `timeout` seconds including DNS.

    DNS lookups ignore socket timeouts, so the attempt runs in a daemon thread
    and we stop waiting after `timeout` (+0.5 s).
    """
    result = []

    def attempt():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _load_tfds(key: str, data_dir, val_fraction: float, seed: int) -> Dataset:
    """Loads `key` through `tfds.data_source` (array_record, no TensorFlow)."""
    try:
        import tensorflow_datasets as tfds  # the only tfds import in jaxswarm
    except ImportError as e:
        raise DatasetError(
            f"cannot load {key!r} through tensorflow-datasets: it is not installed ({e}). "
            f"To use it, {_TFDS_HINT}."
            + (" For Fashion-MNIST: `apt-get install dataset-fashion-mnist`." if key == "fashion_mnist" else "")
        ) from e

    roots = _tfds_roots(data_dir)
    prepared = next((r for r in roots if _tfds_prepared(r, key)), None)
    if prepared is None and not _network_reachable():
        # TFDS itself would retry the download for minutes before failing.
        if data_dir is not None:
            raise DatasetError(
                f"tensorflow-datasets found no prepared {key!r} in data_dir {roots[0]} and cannot "
                f"download it there: {_TFDS_HOST[0]} is unreachable (offline?); pass a data_dir with "
                "the four IDX files {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] and source='idx'"
            )
        raise DatasetError(
            _missing_message(key, data_dir, tfds_tried=True)
            + f" TFDS found no prepared {key!r} under {', '.join(map(str, roots))} and "
            f"{_TFDS_HOST[0]} is unreachable (offline?)."
        )
    root = prepared if prepared is not None else (roots[0] if data_dir is not None else None)
    try:
        sources = tfds.data_source(
            key, split=["train", "test"], data_dir=None if root is None else os.fspath(root),
            download=prepared is None,
        )
        (x_tr, y_tr), (x_te, y_te) = (_source_arrays(s) for s in sources)
    except Exception as e:  # TFDS raises many types; all mean "not loadable".
        raise DatasetError(
            f"tensorflow-datasets could not load {key!r} (data_dir={root}): {type(e).__name__}: {e}. "
            "tfds.data_source reads array_record data; preparing or converting a dataset "
            "needs TensorFlow. Alternatively put the IDX files "
            "{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz in a directory passed as "
            f"data_dir= / --data-dir or ${ENV_VAR}."
        ) from e
    origin = f"tfds:{root.resolve() if root is not None else Path('~/tensorflow_datasets').expanduser()}"
    return _image_dataset(key, x_tr, y_tr, x_te, y_te, val_fraction, seed, origin)


def _source_arrays(source) -> tuple[np.ndarray, np.ndarray]:
    """A TFDS random-access source of {'image', 'label'} dicts -> (uint8, int32) arrays."""
    n = len(source)
    getitems = getattr(source, "__getitems__", None)
    items = getitems(list(range(n))) if getitems is not None else [source[i] for i in range(n)]
    images = np.stack([np.asarray(item["image"], np.uint8) for item in items])
    labels = np.asarray([int(item["label"]) for item in items], np.int32)
    return images, labels


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


def _canonical_name(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise DatasetError(
            f"unknown dataset {name!r}; known datasets are {', '.join(DATASETS)} "
            "(or build one from NumPy arrays with from_arrays)"
        )
    return key


def _check_fraction(what: str, value: float) -> None:
    if not (isinstance(value, (int, float, np.floating)) and 0.0 <= float(value) < 1.0):
        raise DatasetError(f"{what} must be a number in [0, 1), got {value!r}")


def _check_val_fraction(value: float) -> None:
    _check_fraction("val_fraction", value)
    if float(value) == 0.0:  # an empty validation split fails much later, inside training
        raise DatasetError(
            "val_fraction=0 would leave the validation split empty; pass a val_fraction in (0, 1), "
            "e.g. 0.1 (the default; with k-fold studies the folds are cut from train + validation)"
        )


def _check_int(value, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator):
    """Splits indices into (keep, hold) with `hold` ~ `fraction` of each class.

    The held-out total is round(fraction * n) (at least 1 when fraction > 0
    and n > 1); it is shared among classes in proportion to their sizes, the
    leftover units going to the largest fractional parts. Both index arrays
    are sorted.
    """
    y = np.asarray(y)
    n = len(y)
    n_hold = int(round(fraction * n))
    if fraction > 0 and n > 1:
        n_hold = min(max(n_hold, 1), n - 1)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    ideal = counts * (n_hold / max(n, 1))
    per_class = np.floor(ideal).astype(np.int64)
    leftover = n_hold - int(per_class.sum())
    if leftover > 0:
        order = np.argsort(-(ideal - per_class), kind="stable")
        per_class[order[:leftover]] += 1
    hold = []
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(inverse == c))
        hold.append(members[: per_class[c]])
    hold_idx = np.sort(np.concatenate(hold)) if hold else np.zeros(0, np.int64)
    mask = np.ones(n, bool)
    mask[hold_idx] = False
    return np.flatnonzero(mask), hold_idx


def _as_features(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if np.iscomplexobj(x) or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DatasetError(f"{what} must be a numeric array, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[:, None, None, :]
    elif x.ndim == 3:
        x = x[..., None]
    elif x.ndim != 4:
        raise DatasetError(
            f"{what} must have shape [N, F], [N, H, W] or [N, H, W, C], got shape {x.shape}"
        )
    if x.shape[0] == 0:
        raise DatasetError(f"{what} has no examples (shape {x.shape})")
    if x.dtype == np.uint8:
        out = x.astype(np.float32) / np.float32(255.0)
    else:
        out = x.astype(np.float32)
    if not np.isfinite(out).all():
        bad = int(np.size(out) - np.isfinite(out).sum())
        raise DatasetError(f"{what} has {bad} NaN or inf value(s) (after casting to float32); clean or impute them")
    return out


def _as_labels(y, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DatasetError(f"{what} must be a 1-D array of integer labels, got shape {y.shape}")
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all():
        return y.astype(np.int64)
    if y.dtype.kind in "US":  # strings: kept as they are (str), mapped to indices in sorted order
        return y.astype(str)
    if y.dtype == object:  # e.g. a pandas column; sortability is checked by _unique_labels
        values = y.tolist()
        if all(isinstance(v, str) for v in values):
            return np.asarray(values, dtype=str)
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values):
            return np.asarray(values, dtype=np.int64)
        return y
    raise DatasetError(
        f"{what} must hold class labels (integers, integral floats or strings), got dtype {y.dtype}"
        + (" with non-integral values" if np.issubdtype(y.dtype, np.floating) else "")
    )


def _unique_labels(y: np.ndarray, what: str) -> np.ndarray:
    """The sorted distinct labels of `y`, or one DatasetError line when they cannot be sorted."""
    try:
        return np.unique(y)
    except TypeError as e:  # an object array mixing, e.g., strings and numbers, or holding None
        kinds = sorted({type(v).__name__ for v in y.tolist()})
        raise DatasetError(
            f"{what} mixes label types that cannot be sorted ({', '.join(kinds)}); "
            "use one type for every label (all strings or all integers)"
        ) from e


def _candidate_dirs(key: str, data_dir) -> list[Path]:
    """Directories to search for `key`'s IDX files, in order, without duplicates.

    With `data_dir`, only it and its dataset sub-folders (no $JAXSWARM_DATA_DIR
    or system places: a given directory must not be silently replaced).
    """
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        return [root / sub for sub in _SUBDIRS[key]] + [root]
    roots = []
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if part.strip():
            roots.append(Path(part.strip()).expanduser())
    out = []
    for root in roots:
        out.extend(root / sub for sub in _SUBDIRS[key])
        out.append(root)
    out.extend(Path(p).expanduser() for p in _SYSTEM_DIRS[key])
    return list(dict.fromkeys(out))


def _idx_present(directory: Path) -> dict:
    """Maps (split, kind) -> file path for each of the four IDX files found in `directory`."""
    found = {}
    for key, stem in _IDX_STEMS.items():
        names = (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx"))
        path = next((directory / n for n in names if (directory / n).is_file()), None)
        if path is not None:
            found[key] = path
    return found


def _idx_files(directory: Path) -> dict | None:
    """Maps (split, kind) -> file path when all four IDX files are in `directory`."""
    found = _idx_present(directory)
    return found if len(found) == len(_IDX_STEMS) else None


def _given_dir(data_dir, *, must_exist: bool) -> Path:
    """`data_dir` as a Path, or a one-line DatasetError saying what is wrong with it."""
    if not os.fspath(data_dir).strip():  # Path("") would quietly mean the working directory
        raise DatasetError("data_dir is an empty string; pass a directory, or None to search the usual places")
    path = Path(data_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise DatasetError(f"data_dir {path} is a file, not a directory; pass the directory that holds the data")
    if must_exist and not path.exists():
        raise DatasetError(
            f"data_dir {path} does not exist; pass the directory that holds the four IDX files "
            "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"
        )
    return path


def _lacking_message(key: str, root: Path) -> str:
    """One line naming which IDX files `root` (or its fullest dataset sub-folder) lacks."""
    candidates = [root / sub for sub in _SUBDIRS[key]] + [root]
    present = {d: _idx_present(d) for d in candidates if d.is_dir()}
    # The fullest candidate is the one the user most likely meant; ties go to `root` itself.
    best = max(present, key=lambda d: (len(present[d]), d == root))
    if not present[best]:
        subs = ", ".join(_SUBDIRS[key])
        return (
            f"data_dir {root} holds none of the four IDX files of {key!r} "
            "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz], neither directly nor in a "
            f"sub-folder {subs}; pass the directory that holds them"
        )
    missing = [stem + "[.gz]" for k, stem in _IDX_STEMS.items() if k not in present[best]]
    return (
        f"data_dir {best} lacks {', '.join(missing)} of the four IDX files of {key!r}; "
        "add the missing file(s) or pass a directory that holds all four"
    )


def _missing_message(key: str, data_dir, *, tfds_tried: bool) -> str:
    searched = _candidate_dirs(key, data_dir)
    partial = [
        d for d in searched
        if d.is_dir() and any((d / (s + ext)).is_file() for s in _IDX_STEMS.values() for ext in ("", ".gz"))
    ]
    lines = [
        f"dataset {key!r} not found: no directory holds all four IDX files "
        "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz].",
        "Searched: " + ", ".join(str(d) for d in searched) + ".",
    ]
    if partial:
        lines.append("Incomplete sets (some of the four files missing) in: " + ", ".join(map(str, partial)) + ".")
    lines.append(
        f"Fix: pass data_dir= (CLI: --data-dir) or set ${ENV_VAR} to a directory with the files "
        f"(directly or in a sub-folder named {' or '.join(repr(s) for s in _SUBDIRS[key][:2])})."
    )
    if key == "fashion_mnist":
        lines.append(
            "On Debian/Ubuntu: `apt-get install dataset-fashion-mnist` installs them in "
            "/usr/share/datasets/fashion-mnist."
        )
    if not tfds_tried:
        lines.append(
            "Or load through tensorflow-datasets (needs network or a prepared copy): "
            "`pip install 'jaxswarm[tfds]'` and source='tfds'."
        )
    lines.append("The embedded 'digits' dataset always works offline.")
    return " ".join(lines)
