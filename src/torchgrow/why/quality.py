"""The quality side: accuracy and loss on a data set, in one pass."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..modes import eval_mode
from .flops import _model_device

__all__ = ["Data", "evaluate", "accuracy", "mean_loss"]

Data: TypeAlias = DataLoader | Dataset | tuple[Tensor, Tensor]
"""What the quality metrics accept: a ``DataLoader`` yielding ``(x, y)`` batches,
a ``Dataset`` of ``(x, y)`` pairs, or a tuple ``(x, y)`` of tensors."""


def _is_label_dtype(t: Tensor) -> bool:
    return t.dtype == torch.bool or not (t.is_floating_point() or t.is_complex())


def _batches(data: Data, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(data, (tuple, list)):
        if len(data) != 2 or not all(isinstance(t, Tensor) for t in data):
            raise TypeError("data given as a tuple must be (x, y), two tensors")
        x, y = data
        if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"x and y must share their first (example) dimension, got shapes "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        for i in range(0, x.shape[0], batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
        return
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        data = DataLoader(data, batch_size=batch_size)
    if not isinstance(data, DataLoader):
        raise TypeError(
            "data must be a DataLoader, a Dataset or a tuple (x, y) of tensors, "
            f"got {type(data).__name__}"
        )
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError("the DataLoader must yield (x, y) batches")
        yield batch[0], batch[1]


def _is_binary_logit(out: Tensor, y: Tensor) -> bool:
    """A single score per label: shape ``(N,)``, or size 1 along the class dimension."""
    single = out.dim() == 1 or (out.dim() >= 2 and out.shape[1] == 1)
    return single and out.numel() == y.numel()


def _predict(out: Tensor, y: Tensor) -> Tensor:
    if _is_binary_logit(out, y):
        return (out > 0).long().reshape(y.shape)
    if out.dim() < 2:
        raise ValueError(f"cannot read class predictions from an output of shape {out.shape}")
    return out.argmax(dim=1)


def _labels(y: Tensor, what: str) -> Tensor:
    if not _is_label_dtype(y):
        raise ValueError(
            f"{what}: the targets are not class labels (dtype {y.dtype}); accuracy needs "
            "integer class indices (for one-hot targets pass y.argmax(1))"
        )
    return y.long()


def _default_loss(out: Tensor, y: Tensor) -> Tensor:
    if _is_label_dtype(y):
        y = y.long()
        if _is_binary_logit(out, y):
            return F.binary_cross_entropy_with_logits(out.reshape(-1), y.reshape(-1).to(out.dtype))
        return F.cross_entropy(out, y)
    if out.shape != y.shape:
        if out.numel() != y.numel():
            raise ValueError(
                f"MSE needs outputs and targets of the same size, got {tuple(out.shape)} "
                f"and {tuple(y.shape)}"
            )
        y = y.reshape(out.shape)
    return F.mse_loss(out, y.to(out.dtype))


def evaluate(
    model: nn.Module,
    data: Data,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> dict[str, float | int]:
    """Mean loss (and accuracy, for class labels) of ``model`` on ``data``.

    Parameters
    ----------
    model : nn.Module
        The model, already on ``device``. It runs in eval mode under
        ``torch.no_grad``; each submodule's mode is restored afterwards.
    data : DataLoader, Dataset or tuple of (Tensor, Tensor)
        ``(x, y)`` batches, ``(x, y)`` pairs, or all inputs and targets.
    loss_fn : callable, optional
        ``loss_fn(output, target)`` returning the *mean* loss of the batch.
        Default: cross-entropy for integer (or bool) labels (binary
        cross-entropy with logits for a single output column), mean squared
        error for float targets.
    batch_size : int, default 1024
        Batch size when ``data`` is a tuple or a Dataset.
    device : torch.device or str, optional
        Where the batches are sent; default the model's device.

    Returns
    -------
    dict
        ``{"loss": mean loss over examples, "n": number of examples}``, plus
        ``"accuracy"`` (in [0, 1]) when the targets are class labels.

    Raises
    ------
    ValueError
        If ``data`` holds no examples, or shapes do not fit.
    """
    loss_fn = loss_fn or _default_loss
    dev = torch.device(device) if device is not None else _model_device(model)
    loss_sum = 0.0
    correct = 0
    n = 0
    n_labels = 0
    labels = True
    with eval_mode(model), torch.no_grad():
        for x, y in _batches(data, batch_size):
            x, y = x.to(dev), y.to(dev)
            out = model(x)
            k = y.shape[0]
            loss_sum += float(loss_fn(out, y)) * k
            labels = labels and _is_label_dtype(y)
            if labels:
                pred = _predict(out, y)
                if pred.shape != y.shape:
                    raise ValueError(
                        f"predictions of shape {tuple(pred.shape)} do not match labels of shape "
                        f"{tuple(y.shape)}"
                    )
                correct += int((pred == y.long()).sum())
                n_labels += y.numel()
            n += k
    if n == 0:
        raise ValueError("data holds no examples")
    result: dict[str, float | int] = {"loss": loss_sum / n, "n": n}
    if labels:
        result["accuracy"] = correct / n_labels
    return result


def accuracy(
    model: nn.Module,
    data: Data,
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> float:
    """Fraction of correct class predictions of ``model`` on ``data``.

    The prediction is the argmax over dimension 1 of the output (so dense
    outputs ``(N, C, ...)`` against labels ``(N, ...)`` work too); an output
    with a single column is read as a binary logit (class 1 when positive).

    Parameters
    ----------
    model : nn.Module
        The model, already on ``device``. It runs in eval mode under
        ``torch.no_grad``; each submodule's mode is restored afterwards.
    data : DataLoader, Dataset or tuple of (Tensor, Tensor)
        ``(x, y)`` batches, ``(x, y)`` pairs, or all inputs and labels.
    batch_size : int, default 1024
        Batch size when ``data`` is a tuple or a Dataset.
    device : torch.device or str, optional
        Where the batches are sent; default the model's device.

    Returns
    -------
    float
        Accuracy in [0, 1].

    Raises
    ------
    ValueError
        If the targets are not class labels (float targets), or ``data`` is empty.
    """
    dev = torch.device(device) if device is not None else _model_device(model)
    correct = 0
    total = 0
    with eval_mode(model), torch.no_grad():
        for x, y in _batches(data, batch_size):
            y = _labels(y, "accuracy").to(dev)
            out = model(x.to(dev))
            pred = _predict(out, y)
            if pred.shape != y.shape:
                raise ValueError(
                    f"predictions of shape {tuple(pred.shape)} do not match labels of shape "
                    f"{tuple(y.shape)}"
                )
            correct += int((pred == y).sum())
            total += y.numel()
    if total == 0:
        raise ValueError("data holds no examples")
    return correct / total


def mean_loss(
    model: nn.Module,
    data: Data,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> float:
    """Mean loss over the examples of ``data``; see :func:`evaluate`.

    Parameters
    ----------
    model : nn.Module
        The model.
    data : DataLoader, Dataset or tuple of (Tensor, Tensor)
        The examples.
    loss_fn : callable, optional
        Mean-reducing loss; default as in :func:`evaluate`.
    batch_size : int, default 1024
        Batch size when ``data`` is a tuple or a Dataset.
    device : torch.device or str, optional
        Where the batches are sent; default the model's device.

    Returns
    -------
    float
        The mean loss.
    """
    return float(evaluate(model, data, loss_fn, batch_size=batch_size, device=device)["loss"])
