"""Attention heads whose projections the caller gives (GradMax on heads chooses them).

:func:`torchgrow.ops.add_heads` draws the new heads' queries, keys and values at
random and zeroes their output columns; :func:`add_given_heads` places tensors the
caller computed instead, with the same layout rules (new query heads after the old
ones, grouped-query attention growing whole groups, a fused ``[q; k; v]``
projection getting the new rows inside each part), and the same guarantees: the
optimizer carried, atomic, verified against the promise the caller makes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import GrowthInputError
from .edit import Change, EditRecord
from .optim_policy import OptimizerPolicy
from .tx_commit import run_edit
from .tx_layout import AttentionParts, find_layout
from .tx_width import _grow_in, _grow_out, _width

__all__ = ["add_given_heads"]


def _expect(t: Tensor, shape: tuple[int, int], what: str) -> Tensor:
    if not isinstance(t, Tensor) or tuple(t.shape) != shape:
        got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise GrowthInputError(f"add_given_heads: {what} must have shape {shape}, got {got}")
    return t.detach()


def _heads(a: AttentionParts, q: Tensor) -> tuple[int, int]:
    """``(k, kv_new)``: query heads the rows of ``q`` hold, and the key-value heads that join."""
    hd = a.head_dim
    if not isinstance(q, Tensor) or q.dim() != 2 or q.shape[0] % hd or q.shape[0] == 0:
        raise GrowthInputError(
            f"add_given_heads: q must be (k * head_dim, d_in) with head_dim {hd}, got "
            f"{tuple(q.shape) if isinstance(q, Tensor) else type(q).__name__}"
        )
    k, group = q.shape[0] // hd, a.n_head // a.n_kv_head
    if k % group:
        raise GrowthInputError(
            f"add_given_heads: {a.name} has {group} query heads per key-value head; "
            f"{k} new heads must be a multiple of {group}"
        )
    return k, k // group


def add_given_heads(
    model: nn.Module,
    block: int,
    *,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    preserve: bool = True,
    optimizer: torch.optim.Optimizer | None = None,
    unknown_optimizer: str = "raise",
    verify: bool = True,
    example: Tensor | None = None,
    policy: OptimizerPolicy | None = None,
) -> EditRecord:
    """Add attention heads with the given projections to one block.

    Parameters
    ----------
    model : nn.Module
        A transformer with a registered layout.
    block : int
        The block.
    q : Tensor
        The new query rows, ``(n * head_dim, d_in)`` for ``n`` new heads (as a
        ``Linear`` weight: output rows, input columns).
    k, v : Tensor
        The new key and value rows, ``(n_kv * head_dim, d_in)``: ``n_kv = n / g``
        with ``g`` query heads per key-value head (``n`` when every head has its own).
    o : Tensor
        The output projection's new columns, ``(d_model, n * head_dim)``.
    preserve : bool
        What the caller promises: with ``True`` (zero values or zero output columns)
        the edit is verified to keep the outputs, and rolled back otherwise.
    optimizer, unknown_optimizer, verify, example, policy
        As in :func:`torchgrow.ops.add_heads`.

    Returns
    -------
    EditRecord
        ``details["heads_after"]`` is the block's query heads after the edit.
    """
    parts = find_layout(model)
    n = len(parts.blocks)
    if isinstance(block, bool) or not isinstance(block, int) or not -n <= block < n:
        raise GrowthInputError(f"block must be an index in [0, {n}), got {block!r}")
    b = parts.blocks[block]
    a = b.attn
    heads, kv_new = _heads(a, q)
    hd = a.head_dim
    proj = a.qkv if a.qkv is not None else a.q
    d_in = _width(proj, "in")
    q = _expect(q, (heads * hd, d_in), "q")
    k = _expect(k, (kv_new * hd, d_in), "k")
    v = _expect(v, (kv_new * hd, d_in), "v")
    o = _expect(o, (_width(a.o, "out"), heads * hd), "o")
    changes: list[Change] = []
    if a.qkv is not None:
        if a.n_head != a.n_kv_head:
            raise GrowthInputError(f"add_given_heads: fused projection {a.name} with grouped heads")
        changes += _grow_out(a.qkv, torch.cat([q, k, v]), groups=3)
    else:
        changes += _grow_out(a.q, q) + _grow_out(a.k, k) + _grow_out(a.v, v)
    changes += _grow_in(a.o, o)
    structural = a.set_heads(a.n_head + heads, a.n_kv_head + kv_new)
    record = EditRecord(
        op="add_given_heads",
        target=b.name,
        modules=[a.name],
        units_added=heads,
        details={"blocks": [b.name], "heads_after": [a.n_head + heads]},
    )
    return run_edit(
        model, changes, structural, record, optimizer=optimizer,
        unknown_optimizer=unknown_optimizer, preserve=preserve, verify=verify, example=example,
        policy=policy,
    )  # fmt: skip
