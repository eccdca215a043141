"""Tests for jaxswarm.data: loaders, IDX parsing, splits and k-fold indices."""

import gzip
import re
import socket
import struct
import sys
import time
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxswarm import data
from jaxswarm.data import DatasetError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No $JAXSWARM_DATA_DIR, an empty $HOME, and no system dirs: nothing is found by accident."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(data, "_SYSTEM_DIRS", {"mnist": (), "fashion_mnist": ()})
    return home


# ---------------------------------------------------------------------------
# A tiny IDX writer
# ---------------------------------------------------------------------------


def idx_bytes(arr: np.ndarray, type_byte: int = 0x08) -> bytes:
    arr = np.asarray(arr)
    header = bytes([0, 0, type_byte, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return header + arr.astype(">u1" if type_byte == 0x08 else arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, *, compress: bool = True, type_byte: int = 0x08) -> Path:
    payload = idx_bytes(arr, type_byte)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def make_mnist_like(rng, n_train=50, n_test=20, hw=(6, 5), num_classes=10):
    """Random uint8 images and labels that cover every class."""
    def labels(n):
        y = np.arange(n) % num_classes
        return rng.permutation(y).astype(np.uint8)

    return (
        rng.integers(0, 256, size=(n_train, *hw), dtype=np.uint8),
        labels(n_train),
        rng.integers(0, 256, size=(n_test, *hw), dtype=np.uint8),
        labels(n_test),
    )


def write_idx_set(directory: Path, arrays, *, compress: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr, x_te, y_te = arrays
    suffix = ".gz" if compress else ""
    write_idx(directory / f"train-images-idx3-ubyte{suffix}", x_tr, compress=compress)
    write_idx(directory / f"train-labels-idx1-ubyte{suffix}", y_tr, compress=compress)
    write_idx(directory / f"t10k-images-idx3-ubyte{suffix}", x_te, compress=compress)
    write_idx(directory / f"t10k-labels-idx1-ubyte{suffix}", y_te, compress=compress)
    return directory


def rows(x):
    """Each example as bytes, to compare sets of examples."""
    x = np.ascontiguousarray(x)
    return [x[i].tobytes() for i in range(len(x))]


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("digits", val_fraction=0.1, seed=0)


def test_digits_shapes_dtypes_and_range(digits):
    ds = digits
    assert ds.name == "digits" and ds.num_classes == 10
    assert ds.input_shape == (8, 8, 1) and ds.num_features == 64
    n = len(ds.y_train) + len(ds.y_val) + len(ds.y_test)
    assert n == 1797
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.shape == (len(y), 8, 8, 1)
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert set(np.unique(y)) == set(range(10))
    assert ds.x_train.max() == 1.0  # 16/16 occurs: scaled by the true maximum
    assert len(ds.y_test) == round(0.2 * 1797)
    assert len(ds.y_val) == round(0.1 * (1797 - len(ds.y_test)))
    assert ds.flat(ds.x_val).shape == (len(ds.y_val), 64)
    assert "digits" in ds.describe() and "10 classes" in ds.describe()


def test_digits_splits_are_disjoint_cover_and_stratified(digits):
    from sklearn.datasets import load_digits

    full = load_digits()
    ds = digits
    # The split's examples, with labels, are exactly the original examples.
    orig = sorted(zip(rows((full.images / 16.0).astype(np.float32)[..., None]), full.target.tolist()))
    parts = []
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        parts.extend(zip(rows(x), y.tolist()))
    assert sorted(parts) == orig
    # Stratified: test tracks the full data's class proportions, and val tracks
    # the proportions of the pool (train + val) it was carved from.
    def props(y):
        return np.bincount(y, minlength=10) / len(y)

    pool = np.concatenate([ds.y_train, ds.y_val])
    assert np.abs(props(ds.y_test) - props(full.target)).max() < 1.0 / len(ds.y_test)
    assert np.abs(props(ds.y_val) - props(pool)).max() < 1.0 / len(ds.y_val)
    assert np.abs(props(ds.y_train) - props(pool)).max() < 1.0 / len(ds.y_train)


def test_digits_deterministic_per_seed(digits):
    again = data.load_dataset("digits", val_fraction=0.1, seed=0)
    other = data.load_dataset("digits", val_fraction=0.1, seed=1)
    for a, b in zip(digits[1:7], again[1:7]):
        np.testing.assert_array_equal(a, b)
    # Another seed moves the validation set but not the held-out test set.
    assert rows(other.x_val) != rows(digits.x_val)
    np.testing.assert_array_equal(other.x_test, digits.x_test)


def _one_line(err) -> str:
    """The error's message, asserted to be a single line."""
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


VAL_ZERO = r"^val_fraction=0 would leave the validation split empty; pass a val_fraction in \(0, 1\), e\.g\. 0\.1"


@pytest.mark.parametrize("zero", [0, 0.0, np.float32(0.0)])
def test_val_fraction_zero_is_one_line_error(zero):
    # Was an empty validation split, then `cannot reshape array of size 0` deep inside training.
    with pytest.raises(DatasetError, match=VAL_ZERO) as err:
        data.load_dataset("digits", val_fraction=zero)
    _one_line(err)


def test_val_fraction_zero_fails_before_reading_idx_files(tmp_path, clean_env, monkeypatch):
    d = write_idx_set(tmp_path / "d", make_mnist_like(np.random.default_rng(0)))
    monkeypatch.setattr(data, "_load_idx_dir", lambda *a, **k: pytest.fail("files read"))
    with pytest.raises(DatasetError, match=VAL_ZERO):
        data.load_dataset("mnist", data_dir=d, val_fraction=0.0)


def test_from_arrays_val_fraction_zero_is_one_line_error():
    x, y = np.random.default_rng(0).normal(size=(20, 3)), np.arange(20) % 2
    with pytest.raises(DatasetError, match=VAL_ZERO) as err:
        data.from_arrays(x, y, val_fraction=0.0)
    _one_line(err)


def test_from_arrays_with_a_test_set_needs_two_examples_a_class():
    # With an explicit test set two examples a class suffice: one for training, one for validation.
    x, y = np.eye(4), np.array([0, 1, 0, 1])
    ds = data.from_arrays(x, y, x_test=x, y_test=y, val_fraction=0.5)
    assert (len(ds.y_train), len(ds.y_val)) == (2, 2)


def test_from_arrays_needs_an_example_of_every_class_for_every_split():
    """Three rows of two classes split 1/1/1: a study of them reported validation 1.0 beside test 0.0."""
    with pytest.raises(DatasetError, match=r"^label 1 has 1 example\(s\); every class needs at least 3") as err:
        data.from_arrays(np.zeros((3, 2)), np.array([0, 1, 0]))
    _one_line(err)
    with pytest.raises(DatasetError, match="at least 2 .one for training, one for validation.:"):
        data.from_arrays(np.zeros((3, 2)), np.array([0, 1, 0]), x_test=np.zeros((1, 2)), y_test=np.array([0]))


@pytest.mark.parametrize("bad", ["cifar10", "mnist2", ""])
def test_unknown_name_lists_known(bad):
    with pytest.raises(DatasetError) as err:
        data.load_dataset(bad)
    for known in data.DATASETS:
        assert known in str(err.value)


@pytest.mark.parametrize("kwargs", [{"val_fraction": 1.0}, {"val_fraction": -0.1}, {"source": "web"},
                                    {"source": "tfds"}])
def test_bad_arguments(kwargs):
    with pytest.raises(DatasetError):
        data.load_dataset("digits", **kwargs)


# ---------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, compress):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(7, 3, 4), dtype=np.uint8)
    out = data.read_idx(write_idx(tmp_path / ("a.gz" if compress else "a"), arr, compress=compress))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)


def test_read_idx_other_types(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    out = data.read_idx(write_idx(tmp_path / "f.gz", arr, type_byte=0x0D))
    np.testing.assert_array_equal(out, arr)
    arr = np.arange(-5, 5, dtype=np.int32)
    np.testing.assert_array_equal(data.read_idx(write_idx(tmp_path / "i", arr, compress=False, type_byte=0x0C)), arr)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_dataset_round_trip_via_data_dir(tmp_path, clean_env, compress):
    rng = np.random.default_rng(1)
    arrays = make_mnist_like(rng)
    d = write_idx_set(tmp_path / "somewhere", arrays, compress=compress)
    ds = data.load_dataset("mnist", data_dir=d, val_fraction=0.2, seed=3)
    x_tr, y_tr, x_te, y_te = arrays
    assert ds.input_shape == (6, 5, 1) and ds.num_classes == 10
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (40, 10, 20)
    # Official test set kept as is, scaled to [0, 1].
    np.testing.assert_allclose(ds.x_test[..., 0], x_te / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, y_te)
    # Train + val are exactly the official train set.
    expect = sorted(zip(rows(x_tr.astype(np.float32) / np.float32(255)), y_tr.tolist()))
    got = sorted(zip(rows(np.concatenate([ds.x_train, ds.x_val])[..., 0]), np.concatenate([ds.y_train, ds.y_val]).tolist()))
    assert got == expect
    # Stratified: 50 train examples, 5 per class, 20% -> one of each class in val.
    assert sorted(ds.y_val.tolist()) == list(range(10))
    assert ds.origin == str(d.resolve())


@pytest.mark.parametrize("sub", ["fashion_mnist", "fashion-mnist"])
def test_env_var_discovery_with_subfolders(tmp_path, clean_env, monkeypatch, sub):
    rng = np.random.default_rng(2)
    root = tmp_path / "root"
    fashion = make_mnist_like(rng, n_train=30, n_test=10)
    mnist = make_mnist_like(rng, n_train=20, n_test=10)
    write_idx_set(root / sub, fashion)
    write_idx_set(root / "mnist", mnist)
    monkeypatch.setenv(data.ENV_VAR, str(root))
    assert data.find_data_dir("fashion_mnist") == root / sub
    assert data.find_data_dir("mnist") == root / "mnist"
    f = data.load_dataset("fashion-mnist")
    m = data.load_dataset("mnist")
    np.testing.assert_array_equal(np.sort(np.concatenate([f.y_train, f.y_val])), np.sort(fashion[1]))
    np.testing.assert_array_equal(np.sort(np.concatenate([m.y_train, m.y_val])), np.sort(mnist[1]))
    # origin names the sub-folder each dataset was really read from.
    assert (f.origin, m.origin) == (str((root / sub).resolve()), str((root / "mnist").resolve()))


def test_env_var_files_directly_in_dir(tmp_path, clean_env, monkeypatch):
    d = write_idx_set(tmp_path / "flat", make_mnist_like(np.random.default_rng(3)))
    monkeypatch.setenv(data.ENV_VAR, str(d))
    assert data.find_data_dir("mnist") == d


def test_data_dir_argument_comes_before_env_var(tmp_path, clean_env, monkeypatch):
    rng = np.random.default_rng(4)
    a = write_idx_set(tmp_path / "a", make_mnist_like(rng, n_train=30))
    b = write_idx_set(tmp_path / "b", make_mnist_like(rng, n_train=40))
    monkeypatch.setenv(data.ENV_VAR, str(b))
    assert data.find_data_dir("mnist") == b
    assert data.find_data_dir("mnist", data_dir=a) == a
    ds = data.load_dataset("mnist", data_dir=a)
    assert len(ds.y_train) + len(ds.y_val) == 30 and ds.origin == str(a.resolve())


def test_system_dir_searched_last(tmp_path, clean_env, monkeypatch):
    system = write_idx_set(tmp_path / "system", make_mnist_like(np.random.default_rng(5)))
    monkeypatch.setattr(data, "_SYSTEM_DIRS", {"mnist": (), "fashion_mnist": (str(system),)})
    assert data.find_data_dir("fashion_mnist") == system
    assert data.find_data_dir("mnist") is None


# ---------------------------------------------------------------------------
# data_dir: that directory or a one-line error
# ---------------------------------------------------------------------------

IDX_STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]


@pytest.fixture
def tfds_must_not_run(monkeypatch):
    """TFDS looks installed, but loading through it fails the test."""
    monkeypatch.setattr(data, "_tfds_installed", lambda: True)
    monkeypatch.setattr(data, "_load_tfds", lambda *a, **k: pytest.fail("TFDS tried"))


@pytest.mark.parametrize("source", ["auto", "idx"])
@pytest.mark.parametrize("missing", IDX_STEMS)
def test_data_dir_lacking_a_file_names_it_and_never_falls_back(tmp_path, monkeypatch, tfds_must_not_run,
                                                               missing, source):
    # The real system dirs stay (Debian's Fashion-MNIST is installed on the dev machine), and
    # $JAXSWARM_DATA_DIR holds a complete set: neither may stand in for the given directory.
    complete = write_idx_set(tmp_path / "complete", make_mnist_like(np.random.default_rng(9)))
    monkeypatch.setenv(data.ENV_VAR, str(complete))
    assert data.find_data_dir("fashion_mnist") is not None  # what a fall-back would load
    d = write_idx_set(tmp_path / "given", make_mnist_like(np.random.default_rng(10)))
    (d / f"{missing}.gz").unlink()
    assert data.find_data_dir("fashion_mnist", data_dir=d) is None
    with pytest.raises(DatasetError, match=rf"^data_dir {re.escape(str(d))} lacks {missing}\[\.gz\] of the "
                                           r"four IDX files of 'fashion_mnist'; add the missing file") as err:
        data.load_dataset("fashion_mnist", data_dir=d, source=source)
    _one_line(err)


@pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
def test_data_dir_lacking_files_never_loads_the_system_copy(tmp_path, monkeypatch, tfds_must_not_run):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    assert data.find_data_dir("fashion_mnist") is not None  # without data_dir the system copy loads
    d = tmp_path / "partial"
    d.mkdir()
    write_idx(d / "train-images-idx3-ubyte.gz", np.zeros((3, 2, 2), np.uint8))
    with pytest.raises(DatasetError, match=rf"^data_dir {re.escape(str(d))} lacks train-labels-idx1-ubyte\[\.gz\], "
                                           r"t10k-images-idx3-ubyte\[\.gz\], t10k-labels-idx1-ubyte\[\.gz\] of") as err:
        data.load_dataset("fashion_mnist", data_dir=d)
    assert str(FASHION_DIR) not in _one_line(err)


def test_data_dir_does_not_exist(tmp_path, clean_env, tfds_must_not_run):
    gone = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match=rf"^data_dir {re.escape(str(gone))} does not exist; pass the "
                                           r"directory that holds the four IDX files") as err:
        data.load_dataset("mnist", data_dir=gone)
    _one_line(err)


@pytest.mark.parametrize("source", ["auto", "idx", "tfds"])
def test_data_dir_is_a_file(tmp_path, clean_env, tfds_must_not_run, source):
    d = write_idx_set(tmp_path / "d", make_mnist_like(np.random.default_rng(11)))
    f = d / "train-images-idx3-ubyte.gz"
    with pytest.raises(DatasetError, match=rf"^data_dir {re.escape(str(f))} is a file, not a directory; "
                                           r"pass the directory that holds the data") as err:
        data.load_dataset("mnist", data_dir=f, source=source)
    _one_line(err)


def test_data_dir_empty_string(clean_env, tfds_must_not_run):
    with pytest.raises(DatasetError, match=r"^data_dir is an empty string; pass a directory"):
        data.load_dataset("mnist", data_dir="")


def test_data_dir_without_any_idx_file(tmp_path, clean_env, tfds_must_not_run):
    d = tmp_path / "empty"
    d.mkdir()
    with pytest.raises(DatasetError, match=rf"^data_dir {re.escape(str(d))} holds none of the four IDX files "
                                           r"of 'mnist' .*neither directly nor in a sub-folder mnist, MNIST") as err:
        data.load_dataset("mnist", data_dir=d)
    _one_line(err)


def test_data_dir_incomplete_sub_folder_is_named(tmp_path, clean_env, tfds_must_not_run):
    root = tmp_path / "root"
    write_idx_set(root / "MNIST" / "raw", make_mnist_like(np.random.default_rng(12)))
    (root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match=rf"^data_dir {re.escape(str(root / 'MNIST' / 'raw'))} lacks "
                                           r"t10k-images-idx3-ubyte\[\.gz\] of"):
        data.load_dataset("mnist", data_dir=root)


def test_origin_is_the_absolute_real_directory(tmp_path, clean_env, monkeypatch):
    real = write_idx_set(tmp_path / "real" / "mnist", make_mnist_like(np.random.default_rng(13)))
    monkeypatch.chdir(tmp_path)
    assert data.load_dataset("mnist", data_dir="real").origin == str(real.resolve())  # relative in
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real")
    ds = data.load_dataset("mnist", data_dir=link)
    assert Path(ds.origin).is_absolute() and ds.origin == str(real.resolve())  # symlink followed
    assert ds.origin in ds.describe()
    assert data.load_dataset("digits").origin == "sklearn"


def test_digits_rejects_data_dir(tmp_path):
    with pytest.raises(DatasetError, match=r"^'digits' is embedded \(scikit-learn\) and reads no data_dir") as err:
        data.load_dataset("digits", data_dir=tmp_path)
    _one_line(err)

# ---------------------------------------------------------------------------
# Corrupt files
# ---------------------------------------------------------------------------


def _corrupt(directory: Path, kind: str) -> Path:
    """Damages one file of a valid set; returns the damaged file."""
    images = directory / "train-images-idx3-ubyte.gz"
    labels = directory / "train-labels-idx1-ubyte.gz"
    if kind == "wrong_magic":  # a labels file where images belong
        images.write_bytes(labels.read_bytes())
        return images
    if kind == "truncated_payload":
        raw = gzip.decompress(images.read_bytes())
        images.write_bytes(gzip.compress(raw[:-7]))
        return images
    if kind == "bad_gzip":  # gzip stream cut in half
        raw = images.read_bytes()
        images.write_bytes(raw[: len(raw) // 2])
        return images
    if kind == "garbage_gzip":
        raw = bytearray(images.read_bytes())
        raw[12:40] = b"\xff" * 28
        images.write_bytes(bytes(raw))
        return images
    if kind == "count_mismatch":
        y = np.zeros(49, np.uint8)
        write_idx(labels, y)
        return labels
    if kind == "label_out_of_range":
        y = np.full(50, 10, np.uint8)
        write_idx(labels, y)
        return labels
    if kind == "trailing_bytes":
        raw = gzip.decompress(labels.read_bytes())
        labels.write_bytes(gzip.compress(raw + b"\x00\x01"))
        return labels
    if kind == "not_gzip":
        images.write_bytes(b"this is not an idx file at all")
        return images
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["wrong_magic", "truncated_payload", "bad_gzip", "garbage_gzip", "count_mismatch",
     "label_out_of_range", "trailing_bytes", "not_gzip"],
)
def test_corrupt_files_raise_naming_the_file(tmp_path, clean_env, kind):
    d = write_idx_set(tmp_path / "d", make_mnist_like(np.random.default_rng(6)))
    bad = _corrupt(d, kind)
    with pytest.raises(DatasetError, match=bad.name):
        data.load_dataset("mnist", data_dir=d)


def test_read_idx_bad_magic_and_short(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DatasetError, match="magic"):
        data.read_idx(p)
    p.write_bytes(b"\x00\x00")
    with pytest.raises(DatasetError, match="too short"):
        data.read_idx(p)
    p.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DatasetError, match="header"):
        data.read_idx(p)
    with pytest.raises(DatasetError, match="cannot read"):
        data.read_idx(tmp_path / "missing")


# ---------------------------------------------------------------------------
# Missing data and TFDS
# ---------------------------------------------------------------------------


@pytest.fixture
def no_tfds(monkeypatch):
    """Make `import tensorflow_datasets` fail even where it is installed."""
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_missing_dataset_fails_fast_with_help(tmp_path, clean_env, monkeypatch, no_tfds, name):
    # Without data_dir: the search order ($JAXSWARM_DATA_DIR, then system places) is reported.
    env_dir = tmp_path / "envdir"
    env_dir.mkdir()
    monkeypatch.setenv(data.ENV_VAR, str(env_dir))
    start = time.perf_counter()
    with pytest.raises(DatasetError, match=rf"^dataset '{name}' not found: no directory holds all four") as err:
        data.load_dataset(name)
    assert time.perf_counter() - start < 10.0
    msg = _one_line(err)
    for needle in (str(env_dir), data.ENV_VAR, "--data-dir", "jaxswarm[tfds]", "digits"):
        assert needle in msg
    assert ("apt-get install dataset-fashion-mnist" in msg) == (name == "fashion_mnist")


def test_missing_message_reports_incomplete_sets(tmp_path, clean_env, monkeypatch, no_tfds):
    d = write_idx_set(tmp_path / "d", make_mnist_like(np.random.default_rng(7)))
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv(data.ENV_VAR, str(d))
    incomplete = rf"Incomplete sets \(some of the four files missing\) in: .*{re.escape(str(d))}"
    with pytest.raises(DatasetError, match=incomplete):
        data.load_dataset("mnist")


def test_source_idx_never_tries_tfds(tmp_path, clean_env, monkeypatch):
    monkeypatch.setattr(data, "_load_tfds", lambda *a, **k: pytest.fail("TFDS tried"))
    monkeypatch.setattr(data, "_tfds_installed", lambda: True)
    with pytest.raises(DatasetError, match="not found"):
        data.load_dataset("mnist", source="idx")


def test_tfds_not_installed_message(clean_env, no_tfds):
    start = time.perf_counter()
    with pytest.raises(DatasetError) as err:
        data.load_dataset("mnist", source="tfds")
    assert time.perf_counter() - start < 10.0
    msg = str(err.value)
    assert "pip install 'jaxswarm[tfds]'" in msg
    assert "images-idx3" in msg and data.ENV_VAR in msg and "--data-dir" in msg


class _FakeSource:
    """A random-access source of TFDS-style example dicts."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": np.int64(self.labels[i])}


def _fake_tfds(monkeypatch, calls, arrays=None):
    module = types.ModuleType("tensorflow_datasets")

    def data_source(name, *, split, data_dir=None, download=True, **kwargs):
        calls.append(dict(name=name, split=split, data_dir=data_dir, download=download))
        x_tr, y_tr, x_te, y_te = arrays
        return [_FakeSource(x_tr[..., None], y_tr), _FakeSource(x_te[..., None], y_te)]

    module.data_source = data_source
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
    monkeypatch.setattr(data, "_tfds_installed", lambda: True)


def test_tfds_offline_unprepared_fails_fast(tmp_path, clean_env, monkeypatch):
    calls = []
    _fake_tfds(monkeypatch, calls)
    monkeypatch.setattr(data, "_network_reachable", lambda *a, **k: False)
    start = time.perf_counter()
    with pytest.raises(DatasetError) as err:
        data.load_dataset("fashion_mnist")  # auto: no IDX files -> TFDS
    assert time.perf_counter() - start < 10.0
    assert calls == []  # TFDS never asked to download
    msg = _one_line(err)
    assert "unreachable" in msg and "apt-get install dataset-fashion-mnist" in msg
    # With data_dir and source='tfds': only that directory, one line saying so.
    given = tmp_path / "tfds"
    offline = (rf"^tensorflow-datasets found no prepared 'fashion_mnist' in data_dir {re.escape(str(given))} "
               r"and cannot download it there: .* unreachable")
    with pytest.raises(DatasetError, match=offline) as err:
        data.load_dataset("fashion_mnist", data_dir=given, source="tfds")
    _one_line(err)
    assert calls == []


def test_data_dir_in_auto_mode_never_falls_back_to_tfds(tmp_path, clean_env, monkeypatch):
    calls = []
    _fake_tfds(monkeypatch, calls)
    monkeypatch.setattr(data, "_network_reachable", lambda *a, **k: pytest.fail("network probed"))
    prepared = tmp_path / "elsewhere" / "mnist" / "3.0.1"  # a prepared copy TFDS would find on its own
    prepared.mkdir(parents=True)
    (prepared / "dataset_info.json").write_text("{}")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "elsewhere"))
    d = tmp_path / "given"
    d.mkdir()
    with pytest.raises(DatasetError, match=rf"^data_dir {re.escape(str(d))} holds none of the four IDX files"):
        data.load_dataset("mnist", data_dir=d)
    assert calls == []


def test_tfds_prepared_dataset_is_read_without_download(tmp_path, clean_env, monkeypatch):
    arrays = make_mnist_like(np.random.default_rng(8), n_train=30, n_test=10)
    calls = []
    _fake_tfds(monkeypatch, calls, arrays)
    monkeypatch.setattr(data, "_network_reachable", lambda *a, **k: pytest.fail("network probed"))
    version_dir = tmp_path / "tfds" / "mnist" / "3.0.1"
    version_dir.mkdir(parents=True)
    (version_dir / "dataset_info.json").write_text("{}")
    for source in ("tfds", "auto"):  # auto: a prepared TFDS directory given as data_dir is that directory
        calls.clear()
        ds = data.load_dataset("mnist", data_dir=tmp_path / "tfds", source=source, val_fraction=0.2)
        assert calls == [dict(name="mnist", split=["train", "test"], data_dir=str(tmp_path / "tfds"), download=False)]
        assert ds.x_train.shape == (24, 6, 5, 1) and ds.x_train.dtype == np.float32
        np.testing.assert_array_equal(np.sort(np.concatenate([ds.y_train, ds.y_val])), np.sort(arrays[1]))
        np.testing.assert_allclose(ds.x_test[..., 0], arrays[2] / 255.0, rtol=1e-6)
        assert ds.origin == f"tfds:{(tmp_path / 'tfds').resolve()}"


def test_tfds_errors_become_dataset_errors(tmp_path, clean_env, monkeypatch):
    calls = []
    _fake_tfds(monkeypatch, calls)
    monkeypatch.setattr(data, "_network_reachable", lambda *a, **k: True)
    sys.modules["tensorflow_datasets"].data_source = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no TF"))
    with pytest.raises(DatasetError, match="no TF"):
        data.load_dataset("mnist", source="tfds")


def test_network_probe_is_bounded():
    # A port nothing listens on: refused (or timed out) quickly, never hangs.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    assert data._network_reachable("127.0.0.1", port, timeout=0.5) is False
    assert time.perf_counter() - start < 2.0


# ---------------------------------------------------------------------------
# k-fold
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n,k", [(10, 3), (12, 4), (101, 5), (7, 7)])
def test_kfold_partitions(n, k):
    train_idx, val_idx = data.kfold_indices(n, k, seed=1)
    m = n // k
    assert train_idx.dtype == np.int32 and val_idx.dtype == np.int32
    assert val_idx.shape == (k, m) and train_idx.shape == (k, (k - 1) * m)
    used = np.sort(val_idx.ravel())
    assert len(np.unique(used)) == k * m  # val folds are disjoint
    assert used.min() >= 0 and used.max() < n
    for i in range(k):
        assert not set(train_idx[i]) & set(val_idx[i])
        np.testing.assert_array_equal(np.sort(np.concatenate([train_idx[i], val_idx[i]])), used)


def test_kfold_deterministic_and_seeded():
    a = data.kfold_indices(50, 5, seed=3)
    b = data.kfold_indices(50, 5, seed=3)
    c = data.kfold_indices(50, 5, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_kfold_indices_gather_into_stacked_folds(key):
    x = jax.random.normal(key, (23, 3))
    train_idx, val_idx = data.kfold_indices(23, 4)
    folds = jax.vmap(lambda t, v: (x[t].sum(), x[v].shape[0]))(train_idx, val_idx)
    assert folds[0].shape == (4,) and int(folds[1][0]) == 23 // 4


@pytest.mark.parametrize("n,k", [(5, 1), (5, 6), (5, 2.0)])
def test_kfold_bad_arguments(n, k):
    with pytest.raises(ValueError):
        data.kfold_indices(n, k)


# ---------------------------------------------------------------------------
# from_arrays
# ---------------------------------------------------------------------------


def test_from_arrays_shapes_and_label_remapping():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)) * 100  # not rescaled
    y = np.array([3, 7, 10])[np.arange(60) % 3]
    ds = data.from_arrays(x, y, seed=0)
    assert ds.num_classes == 3 and ds.input_shape == (1, 1, 4)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    for split_x, split_y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert set(split_y.tolist()) <= {0, 1, 2}
        # The remap is order-preserving: label 3 -> 0, 7 -> 1, 10 -> 2, example by example.
        for xi, yi in zip(ds.flat(split_x), split_y):
            j = np.flatnonzero((x.astype(np.float32) == xi).all(axis=1))[0]
            assert [3, 7, 10].index(y[j]) == yi
    assert len(ds.y_test) == 12 and len(ds.y_val) == round(0.1 * 48)
    assert np.abs(ds.x_train).max() > 1.0  # features kept as given


def test_from_arrays_image_shapes_and_uint8_scaling():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(40, 5, 5), dtype=np.uint8)
    y = np.arange(40) % 2
    ds = data.from_arrays(imgs, y, val_fraction=0.1, test_fraction=0.0)
    assert ds.input_shape == (5, 5, 1) and ds.origin == "arrays"
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0
    pool = np.concatenate([ds.x_train, ds.x_val])[..., 0]
    assert sorted(rows(pool)) == sorted(rows(imgs.astype(np.float32) / np.float32(255)))
    rgb = rng.normal(size=(40, 3, 3, 2))
    assert data.from_arrays(rgb, y).input_shape == (3, 3, 2)


def test_from_arrays_explicit_test_set():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 3)), np.arange(30) % 3 + 5
    xt, yt = rng.normal(size=(9, 3)), np.array([5, 6, 7] * 3)
    ds = data.from_arrays(x, y, x_test=xt, y_test=yt, test_fraction=0.5)
    np.testing.assert_array_equal(ds.y_test, yt - 5)
    np.testing.assert_allclose(ds.flat(ds.x_test), xt.astype(np.float32))
    assert len(ds.y_train) + len(ds.y_val) == 30


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda x, y: dict(x=x, y=y[:-1]), "must match"),
        (lambda x, y: dict(x=np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), y=y), "NaN"),
        (lambda x, y: dict(x=x, y=np.zeros_like(y)), "at least 2"),
        (lambda x, y: dict(x=x, y=y + 0.5), "integer"),
        (lambda x, y: dict(x=x[:, :, None, None, None], y=y), "shape"),
        (lambda x, y: dict(x=x.astype(str), y=y), "numeric"),
        (lambda x, y: dict(x=x + 1j, y=y), "numeric"),
        (lambda x, y: dict(x=x, y=y, x_test=x), "both"),
        (lambda x, y: dict(x=x, y=y, x_test=x[:, :2], y_test=y), "shape"),
        (lambda x, y: dict(x=x, y=y, x_test=x, y_test=y + 100), "never occur"),
        (lambda x, y: dict(x=x, y=y, val_fraction=1.5), "val_fraction"),
    ],
)
def test_from_arrays_validation(make, match):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(20, 4)), np.arange(20) % 2
    with pytest.raises(DatasetError, match=match):
        data.from_arrays(**make(x, y))


def test_dataset_error_is_value_error():
    assert issubclass(DatasetError, ValueError)


# ---------------------------------------------------------------------------
# The real Fashion-MNIST (Debian package), when installed
# ---------------------------------------------------------------------------


@pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package(monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    ds = data.load_dataset("fashion_mnist", val_fraction=0.1, seed=0)
    assert ds.x_train.shape == (54000, 28, 28, 1)
    assert ds.x_val.shape == (6000, 28, 28, 1)
    assert ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert np.bincount(ds.y_val, minlength=10).tolist() == [600] * 10  # stratified
    assert np.bincount(ds.y_test, minlength=10).tolist() == [1000] * 10


@pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
def test_warns_when_fashion_files_are_loaded_as_mnist():
    with pytest.warns(UserWarning, match="look like 'fashion_mnist'"):
        data.load_dataset("mnist", data_dir=FASHION_DIR)


# ---------------------------------------------------------------------------
# Original labels (Dataset.classes)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("labels, classes", [
    (np.array(["cat", "ant", "bee"]), ("ant", "bee", "cat")),
    (np.array(["cat", "ant", "bee"], dtype=object), ("ant", "bee", "cat")),
    (np.array([b"no", b"yes", b"no"]), ("no", "yes")),
    (np.array([10, -3, 7]), (-3, 7, 10)),
    (np.array([2.0, 1.0, 0.0]), (0, 1, 2)),
])
def test_from_arrays_keeps_the_original_labels(labels, classes):
    rng = np.random.default_rng(4)
    y = labels[np.arange(60) % len(labels)]
    x = rng.normal(size=(60, 3))
    ds = data.from_arrays(x, y, seed=0)
    assert ds.classes == classes and ds.num_classes == len(classes)
    # Each split's index maps back to the example's own label.
    pool_x = np.concatenate([ds.flat(ds.x_train), ds.flat(ds.x_val), ds.flat(ds.x_test)])
    pool_y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    original = [v.decode() if isinstance(v, bytes) else v for v in y.tolist()]
    for xi, yi in zip(pool_x, pool_y):
        j = np.flatnonzero((x.astype(np.float32) == xi).all(axis=1))[0]
        assert ds.classes[yi] == original[j]


def test_from_arrays_string_labels_with_an_explicit_test_set():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(30, 2)), np.array(["b", "a", "c"] * 10)
    ds = data.from_arrays(x, y, x_test=x[:6], y_test=np.array(["c", "a", "b", "a", "c", "b"]))
    assert ds.classes == ("a", "b", "c")
    np.testing.assert_array_equal(ds.y_test, [2, 0, 1, 0, 2, 1])


@pytest.mark.parametrize("y, y_test, match", [
    (np.array(["a", 1] * 10, dtype=object), None, r"mixes label types that cannot be sorted \(int, str\)"),
    (np.array(["a", "b"] * 10), np.array([0, 1]), "same kind of labels"),
    (np.array(["a", "b"] * 10), np.array(["a", "z"]), r"never occur in y"),
])
def test_from_arrays_bad_string_labels_are_one_line(y, y_test, match):
    x = np.random.default_rng(6).normal(size=(20, 2))
    extra = {} if y_test is None else {"x_test": x[: len(y_test)], "y_test": y_test}
    with pytest.raises(DatasetError, match=match) as info:
        data.from_arrays(x, y, **extra)
    assert "\n" not in str(info.value)


def test_named_datasets_label_their_classes_by_index():
    assert data.load_dataset("digits").classes == tuple(range(10))
