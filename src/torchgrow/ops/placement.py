"""Where a consumer's new input columns go when its input is laid out by a ``torch.cat`` or
a flatten with the channels inside (see :mod:`torchgrow.graph.layout`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor

from ..graph.layout import Layout, channel_of, entries_per_channel, keys
from .edit import Change

__all__ = ["grown_order", "kept_columns", "place_columns", "new_columns"]


def grown_order(layout: Layout, width: int, k: int) -> Tensor:
    """For each input of the grown consumer, its source among ``[old inputs, new blocks]``.

    The new blocks are those a layer's ``grow_in`` appends: ``k`` channels of
    ``entries_per_channel`` columns each, channel after channel.
    """
    old = keys(layout, width)
    pos = {key: i for i, key in enumerate(old)}
    per = entries_per_channel(layout, width)
    seen: dict[int, int] = defaultdict(int)
    order = []
    for key in keys(layout, width + k):
        if key in pos:
            order.append(pos[key])
            continue
        c = channel_of(key) - width  # type: ignore[operator]
        order.append(len(old) + c * per + seen[c])
        seen[c] += 1
    return torch.tensor(order, dtype=torch.long)


def kept_columns(layout: Layout, width: int, keep: Tensor) -> Tensor:
    """The consumer's inputs that remain when the unit keeps only channels ``keep``."""
    kept = set(keep.tolist())
    cols = [
        i
        for i, key in enumerate(keys(layout, width))
        if (c := channel_of(key)) is None or c in kept
    ]
    return torch.tensor(cols, dtype=torch.long)


def place_columns(changes: Sequence[Change], order: Tensor, dim: int) -> list[Change]:
    """Reorder the appended inputs of a consumer's planned changes along ``dim`` by ``order``."""
    n = len(order)
    out = []
    for ch in changes:
        t = ch.tensor
        if t is None or t.dim() < 2 or t.shape[dim] != n:  # weights and masks, not biases
            out.append(ch)
            continue
        remap = ch.remap

        def placed(x: Tensor, fill: float, remap=remap) -> Tensor:
            y = remap(x, fill) if remap is not None else x
            return y.index_select(dim, order.to(y.device))

        out.append(Change(ch.owner, ch.name, t.index_select(dim, order.to(t.device)), placed))
    return out


def new_columns(consumer, width: int, k: int) -> Tensor:  # noqa: ANN001
    """Indices of a consumer's new inputs after its unit grew from ``width`` by ``k``."""
    if consumer.layout is None:
        start = width * consumer.factor
        return torch.arange(start, start + k * consumer.factor)
    order = grown_order(consumer.layout, width, k)
    n_old = len(keys(consumer.layout, width))
    return torch.nonzero(order >= n_old).flatten()
