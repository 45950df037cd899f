"""Growth batches: ``(inputs, targets)`` pairs, or dicts of keyword inputs (Hugging Face style).

A growth batch is what a :class:`~torchgrow.Grower` runs the model on to gather
its statistics and to check its edits. Two forms are understood:

- ``(x, y)`` (a tuple or list; further items are ignored): the model is called
  as ``model(x)`` and the loss is ``loss_fn(output, y)``;
- a mapping of keyword inputs, as Hugging Face collators make them
  (``{"input_ids": ..., "attention_mask": ..., "labels": ...}``): the model is
  called as ``model(**batch)`` and the targets are ``batch["labels"]`` (or
  ``None``). The default loss then takes the output's own ``.loss`` (which a
  Hugging Face model computes from the ``labels`` it was given).

Tensors in a dict batch are split, gathered and sliced along their first
dimension, the batch dimension; other values are passed through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .errors import GrowthInputError

__all__ = ["split_batch", "run_model", "call_args", "head_rows", "n_rows", "LABELS"]

LABELS = "labels"
"""The key of a dict batch that holds its targets (Hugging Face's name)."""


def split_batch(batch: object) -> tuple[Any, Any]:
    """``(inputs, targets)`` of a growth batch, or a clear error.

    For a dict batch the inputs are the whole dict (labels included, so that a
    Hugging Face model computes its loss) and the targets its ``"labels"``
    entry, ``None`` if it has none.
    """
    if isinstance(batch, Mapping):
        inputs = dict(batch)
        if not any(isinstance(v, Tensor) for v in inputs.values()):
            raise GrowthInputError(
                f"a dict growth batch must hold the model's input tensors, got keys {list(inputs)}"
            )
        return inputs, inputs.get(LABELS)
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise GrowthInputError(
        "a growth batch must be a tuple (inputs, targets) or a dict of the model's keyword "
        f"inputs (Hugging Face style: input_ids, labels, ...), got {type(batch).__name__}"
    )


def run_model(model: nn.Module, inputs: Any) -> Any:
    """``model(**inputs)`` for a dict of keyword inputs, else ``model(inputs)``."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)


def call_args(inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` that :func:`run_model` calls the model with."""
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    return (inputs,), {}


def n_rows(inputs: Any) -> int | None:
    """The batch size of ``inputs`` (the first dimension of its first tensor), or ``None``."""
    if isinstance(inputs, Mapping):
        first = next((v for v in inputs.values() if isinstance(v, Tensor) and v.dim() > 0), None)
        return None if first is None else len(first)
    if isinstance(inputs, Tensor) and inputs.dim() > 0:
        return len(inputs)
    return None


def head_rows(inputs: Any, n: int) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """The first ``n`` examples of ``inputs`` as the model's ``(args, kwargs)``, or ``None``.

    A dict batch loses its ``"labels"``: the rows are an example input (for
    :func:`torchgrow.graph.set_example` and the edits' checks), on which the
    model's outputs, not its loss, are compared.
    """
    if n_rows(inputs) is None:
        return None
    if isinstance(inputs, Mapping):
        return (), {
            k: (v[:n] if isinstance(v, Tensor) and v.dim() > 0 else v)
            for k, v in inputs.items()
            if k != LABELS
        }
    return (inputs[:n],), {}


def gather_tensors(parts: list[Any]) -> Any:
    """The ranks' batches (pairs, or dicts of CPU tensors) concatenated along dimension 0."""
    first = parts[0]
    if isinstance(first, Mapping):
        out = {}
        for key, value in first.items():
            values = [p[key] for p in parts]
            out[key] = torch.cat(values) if isinstance(value, Tensor) else value
        return out
    xs, ys = zip(*parts, strict=True)
    return torch.cat(xs), torch.cat(ys)
