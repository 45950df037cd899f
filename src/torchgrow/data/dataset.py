"""The :class:`Dataset` every loader returns, the helpers that build one, and :func:`pad_to`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["Dataset", "pad_to"]

_TASKS = ("classification", "regression")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set held in memory as tensors, with a fixed train/test split.

    Equality is identity (tensors have no single truth value); compare the
    tensors with :func:`torch.equal` instead.

    Parameters
    ----------
    name : str
        Short name, e.g. ``"mnist1d"``.
    x_train, y_train : Tensor
        Training inputs (float32, shape ``(N, *input_shape)``) and labels
        (int64, shape ``(N,)``) or regression targets (float32, ``(N, d_out)``).
    x_test, y_test : Tensor
        The held-out split, same layout (may hold zero examples).
    num_classes : int or None
        Number of classes; ``None`` for regression.
    input_shape : tuple of int
        Shape of one example, without the batch dimension.
    task : str
        ``"classification"`` or ``"regression"``.
    extras : dict
        Anything else the loader wants to expose (e.g. the teacher's weights).
        Not part of comparisons.

    Raises
    ------
    ValueError
        If ``task`` is unknown or the tensors' lengths or shapes disagree.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int | None
    input_shape: tuple[int, ...]
    task: str
    extras: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.task not in _TASKS:
            raise ValueError(f"task must be one of {_TASKS}, got {self.task!r}")
        if self.task == "classification" and self.num_classes is None:
            raise ValueError("a classification Dataset needs num_classes")
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"{split} split: {x.shape[0]} inputs but {y.shape[0]} labels/targets"
                )
            if tuple(x.shape[1:]) != self.input_shape:
                raise ValueError(
                    f"{split} split: example shape {tuple(x.shape[1:])} does not match "
                    f"input_shape {self.input_shape}"
                )

    def __repr__(self) -> str:
        classes = "" if self.num_classes is None else f", num_classes={self.num_classes}"
        return (
            f"Dataset({self.name!r}, {self.task}, train={len(self.x_train)}, "
            f"test={len(self.x_test)}, input_shape={self.input_shape}{classes})"
        )

    @property
    def n_train(self) -> int:
        """Number of training examples."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test examples."""
        return int(self.x_test.shape[0])

    def loaders(
        self,
        batch_size: int = 128,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> tuple[DataLoader, DataLoader]:
        """Return ``(train_loader, test_loader)`` over the two splits.

        Parameters
        ----------
        batch_size : int, default 128
            Examples per batch, for both loaders.
        shuffle : bool, default True
            Shuffle the training split each epoch, with a generator seeded by
            ``seed`` (so the order of batches is reproducible). The test loader
            never shuffles.
        seed : int, default 0
            Seed of the training loader's :class:`torch.Generator`.
        drop_last : bool, default False
            Drop the last, incomplete training batch. The test loader keeps it.

        Returns
        -------
        tuple of DataLoader
            The training loader and the test loader.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        generator = torch.Generator().manual_seed(seed)
        train = DataLoader(
            TensorDataset(self.x_train, self.y_train),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            drop_last=drop_last,
        )
        test = DataLoader(
            TensorDataset(self.x_test, self.y_test), batch_size=batch_size, shuffle=False
        )
        return train, test

    def split_validation(self, fraction: float = 0.1, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Carve a validation set out of the training split.

        Parameters
        ----------
        fraction : float, default 0.1
            Share of the training examples moved to the validation set,
            strictly between 0 and 1 (at least one example goes each way).
        seed : int, default 0
            Seed of the random permutation that picks the validation examples.

        Returns
        -------
        tuple of Dataset
            ``(train, val)``. Both have the remaining training examples as
            their training split. ``train`` keeps the original test split;
            ``val`` has the validation examples as its test split. Train on
            either, select hyper-parameters on ``val``'s test split, report on
            ``train``'s.

        Raises
        ------
        ValueError
            If ``fraction`` is not in (0, 1) or the training split has fewer
            than two examples.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        n = self.n_train
        if n < 2:
            raise ValueError(f"need at least 2 training examples to split, have {n}")
        n_val = min(max(1, round(fraction * n)), n - 1)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        carved = replace(
            self,
            name=f"{self.name}[train-val]",
            x_train=self.x_train[train_idx],
            y_train=self.y_train[train_idx],
            extras=dict(self.extras),
        )
        val = replace(
            carved,
            name=f"{self.name}[val]",
            x_test=self.x_train[val_idx],
            y_test=self.y_train[val_idx],
            extras=dict(self.extras),
        )
        return carved, val

    def subset(self, n_train: int | None, n_test: int | None = None, seed: int = 0) -> Dataset:
        """Return a random subset of each split.

        Parameters
        ----------
        n_train : int or None
            Training examples to keep; ``None`` keeps them all.
        n_test : int or None, default None
            Test examples to keep; ``None`` keeps them all.
        seed : int, default 0
            Seed of the random choice (the same seed gives the same subset).

        Returns
        -------
        Dataset
            A new data set; this one is unchanged.

        Raises
        ------
        ValueError
            If a requested size is negative or larger than its split.
        """
        generator = torch.Generator().manual_seed(seed)

        def pick(x: Tensor, y: Tensor, k: int | None, split: str) -> tuple[Tensor, Tensor]:
            # Draw the permutation even when k is None so n_test's subset does
            # not depend on whether n_train was given.
            perm = torch.randperm(x.shape[0], generator=generator)
            if k is None:
                return x, y
            if not 0 <= k <= x.shape[0]:
                raise ValueError(f"n_{split} must be in [0, {x.shape[0]}], got {k}")
            idx = perm[:k]
            return x[idx], y[idx]

        x_tr, y_tr = pick(self.x_train, self.y_train, n_train, "train")
        x_te, y_te = pick(self.x_test, self.y_test, n_test, "test")
        return replace(
            self, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, extras=dict(self.extras)
        )


# --------------------------------------------------------------------------- helpers


def _images(x: np.ndarray, shape: Sequence[int], scale: float) -> Tensor:
    """Reshape to ``(N, *shape)`` float32 and divide by ``scale``."""
    arr = np.asarray(x, dtype=np.float32).reshape(-1, *shape) / np.float32(scale)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _labels(y: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(y, dtype=np.int64)))


def _stratified_split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A stratified random split: ``ceil(test_fraction * n)`` test examples, shared among the
    classes in proportion to their sizes (largest remainders first); both splits in a random order
    (NumPy's generator seeded with ``seed``)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    classes, sizes = np.unique(y, return_counts=True)
    share = test_fraction * sizes
    n_test = np.floor(share).astype(np.int64)
    extra = int(np.ceil(test_fraction * len(y))) - int(n_test.sum())
    order = np.lexsort((rng.random(len(classes)), -(share - n_test)))  # largest remainder first
    n_test[order[:extra]] += 1
    train_idx, test_idx = [], []
    for c, k in zip(classes, n_test, strict=True):
        members = rng.permutation(np.flatnonzero(y == c))
        test_idx.append(members[:k])
        train_idx.append(members[k:])
    tr = rng.permutation(np.concatenate(train_idx))
    te = rng.permutation(np.concatenate(test_idx))
    x_tr, x_te, y_tr, y_te = x[tr], x[te], y[tr], y[te]
    return x_tr, x_te, y_tr, y_te


def pad_to(dataset: Dataset, size: int = 32) -> Dataset:
    """Zero-pad every image to ``size x size`` (AutoGrow pads MNIST to 32x32).

    The padding is split evenly between the two sides (the extra pixel, if the
    difference is odd, goes to the bottom/right).

    Parameters
    ----------
    dataset : Dataset
        A data set of images, ``input_shape == (C, H, W)``.
    size : int, default 32
        Target height and width; at least ``H`` and ``W``.

    Returns
    -------
    Dataset
        A new data set with ``input_shape == (C, size, size)``.

    Raises
    ------
    ValueError
        If the examples are not images or are larger than ``size``.
    """
    if len(dataset.input_shape) != 3:
        raise ValueError(f"pad_to needs (C, H, W) images, got input_shape {dataset.input_shape}")
    c, h, w = dataset.input_shape
    if h > size or w > size:
        raise ValueError(f"images are {h}x{w}, larger than size={size}")
    top, left = (size - h) // 2, (size - w) // 2
    pad = (left, size - w - left, top, size - h - top)
    return replace(
        dataset,
        x_train=F.pad(dataset.x_train, pad),
        x_test=F.pad(dataset.x_test, pad),
        input_shape=(c, size, size),
        extras=dict(dataset.extras),
    )
