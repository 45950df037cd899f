"""Width edits of transformers: FFN hidden units (gated pairs together) and attention heads.

Both are function-preserving by default: new FFN units get a random fan-in and a
zero fan-out (``down``'s new columns); new heads get random query, key and value
rows and zero columns of the output projection. Every optimizer is carried (old
state kept, new entries zero); an edit is atomic and, with an example input,
verified (:mod:`torchgrow.ops.verify`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import GrowthInputError
from .edit import Change, EditRecord
from .optim_policy import OptimizerPolicy
from .ramp import Ramp
from .tx_commit import run_edit
from .tx_layout import BlockParts, Steps, TransformerParts, find_layout

__all__ = ["grow_ffn", "add_heads"]


def _is_conv1d(m: nn.Module) -> bool:
    return type(m).__name__ == "Conv1D" and hasattr(m, "nf")


def _dims(m: nn.Module) -> tuple[int, int]:
    """(output dim, input dim) of the weight: Linear is (out, in), transformers' Conv1D (in, out)."""
    return (1, 0) if _is_conv1d(m) else (0, 1)


def _width(m: nn.Module, side: str) -> int:
    out_dim, in_dim = _dims(m)
    return m.weight.shape[out_dim if side == "out" else in_dim]


def _scatter(
    owner: nn.Module, name: str, dim: int, old_pos: Tensor, new_pos: Tensor, block: Tensor
) -> Change:
    """Place ``owner.name``'s entries at ``old_pos`` and ``block``'s at ``new_pos`` along ``dim``."""
    t = getattr(owner, name)
    size = t.shape[dim] + block.shape[dim]

    def remap(x: Tensor, fill: float) -> Tensor:
        shape = list(x.shape)
        shape[dim] = size
        return x.new_full(shape, fill).index_copy_(dim, old_pos.to(x.device), x)

    new = remap(t.detach(), 0.0).index_copy_(dim, new_pos.to(t.device), block.to(t))
    return Change(owner, name, new, remap)


def _positions(width: int, k: int, groups: int) -> tuple[Tensor, Tensor]:
    """Old and new positions when ``k`` entries join each of ``groups`` equal consecutive groups."""
    per = width // groups
    old = torch.cat([torch.arange(per) + g * (per + k) for g in range(groups)])
    new = torch.cat([torch.arange(k) + g * (per + k) + per for g in range(groups)])
    return old, new


def _grow_out(m: nn.Module, rows: Tensor, groups: int = 1) -> list[Change]:
    """New output units of a linear map (``rows``: ``(groups * k, in)``, group by group)."""
    out_dim, _ = _dims(m)
    width = _width(m, "out")
    k = rows.shape[0] // groups
    old, new = _positions(width, k, groups)
    block = rows if out_dim == 0 else rows.t()
    changes = [_scatter(m, "weight", out_dim, old, new, block)]
    if m.bias is not None:
        changes.append(_scatter(m, "bias", 0, old, new, m.bias.new_zeros(rows.shape[0])))
    changes.append(Change.attr(m, "nf" if _is_conv1d(m) else "out_features", width + rows.shape[0]))
    return changes


def _grow_in(m: nn.Module, cols: Tensor) -> list[Change]:
    """New input columns of a linear map (``cols``: ``(out, k)``), appended."""
    _, in_dim = _dims(m)
    width = _width(m, "in")
    k = cols.shape[1]
    old, new = torch.arange(width), torch.arange(width, width + k)
    block = cols if in_dim == 1 else cols.t()
    changes = [_scatter(m, "weight", in_dim, old, new, block)]
    if _is_conv1d(m):
        if hasattr(m, "nx"):
            changes.append(Change.attr(m, "nx", width + k))
    else:
        changes.append(Change.attr(m, "in_features", width + k))
    return changes


def _blocks(parts: TransformerParts, block: int | None) -> list[BlockParts]:
    if block is None:
        return parts.blocks
    if (
        isinstance(block, bool)
        or not isinstance(block, int)
        or not -len(parts.blocks) <= block < len(parts.blocks)
    ):
        raise GrowthInputError(
            f"block must be an index in [0, {len(parts.blocks)}) or None, got {block!r}"
        )
    return [parts.blocks[block]]


def _check_k(k: object, what: str) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise GrowthInputError(f"{what}: k must be a positive int, got {k!r}")
    return k


def grow_ffn(
    model: nn.Module,
    k: int,
    *,
    block: int | None = None,
    fan_in: str | Tensor = "random",
    fan_out: str | Tensor = "zero",
    std: float | None = None,
    generator: torch.Generator | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    unknown_optimizer: str = "raise",
    verify: bool = True,
    example: Tensor | None = None,
    ramp: Ramp | None = None,
    policy: OptimizerPolicy | None = None,
) -> EditRecord:
    """Add ``k`` hidden units to the FFN of one block (or of every block).

    A gated FFN (SwiGLU: ``gate`` and ``up``) grows both projections together, so
    each new gate meets its own up unit. With a zero fan-out (default) or a zero
    fan-in the function is preserved (the activations here are 0 at 0).

    Parameters
    ----------
    model : nn.Module
        A transformer with a registered layout (:func:`torchgrow.ops.find_layout`).
    k : int
        Units to add per block.
    block : int, optional
        The block; default every block.
    fan_in : {"random", "zero"} or Tensor
        The new rows of ``up`` (and ``gate``, which gets its own random rows):
        random N(0, std), zero, or a tensor ``(k, d_model)``.
    fan_out : {"zero", "random"} or Tensor
        The new columns of ``down``: zero (default, preserving), random, or a
        tensor ``(d_model, k)`` (for instance GradMax's, from the gradient).
    std : float, optional
        Standard deviation of random weights (default: that of the layer's weight).
    generator : torch.Generator, optional
        For the random weights.
    optimizer : torch.optim.Optimizer, optional
        Carried along: old state kept, new entries zero.
    unknown_optimizer : {"raise", "reset"}
        See :func:`torchgrow.ops.widen`.
    verify : bool
        With an example input, check the edited model (and, if preserving, its outputs).
    example : Tensor, optional
        Input to verify on (default the model's example input, if set).
    ramp : Ramp, optional
        MSG's masked growth: the new units' pre-activations (``up``'s new outputs) are
        multiplied by the ramp's value, so the function is kept at ``m = 0`` whatever
        ``fan_in`` and ``fan_out`` are (:class:`torchgrow.ops.Ramp`).
    policy : OptimizerPolicy, optional
        What the optimizer does with the new weights (:class:`torchgrow.ops.OptimizerPolicy`;
        default: the carry, new entries at zero state).

    Returns
    -------
    EditRecord
        ``details["preserving"]`` and ``details["max_abs_dout"]`` say what the check saw.
    """
    k = _check_k(k, "grow_ffn")
    parts = find_layout(model)
    chosen = _blocks(parts, block)
    changes: list[Change] = []
    structural: Steps = []
    zero_in = isinstance(fan_in, str) and fan_in == "zero"
    zero_out = isinstance(fan_out, str) and fan_out == "zero"
    for b in chosen:
        f = b.ffn
        if ramp is not None:
            width = _width(f.up, "out")
            structural += ramp.mask_outputs(f.up, torch.arange(width, width + k))
        rows = _given_or_made(fan_in, f.up, k, "out", generator, std, b.name)
        changes += _grow_out(f.up, rows)
        if f.gate is not None:
            changes += _grow_out(
                f.gate,
                _given_or_made(
                    "random" if not zero_in else "zero", f.gate, k, "out", generator, std, b.name
                ),
            )
        changes += _grow_in(
            f.down, _given_or_made(fan_out, f.down, k, "in", generator, std, b.name)
        )
    record = EditRecord(
        op="grow_ffn",
        target=parts.container if block is None else chosen[0].name,
        modules=[b.ffn.name for b in chosen],
        units_added=k,
        details={"blocks": [b.name for b in chosen]},
    )
    preserve = zero_in or zero_out or ramp is not None
    return run_edit(
        model, changes, structural, record, optimizer=optimizer,
        unknown_optimizer=unknown_optimizer, preserve=preserve, verify=verify, example=example,
        policy=policy,
    )  # fmt: skip


def _given_or_made(
    spec: str | Tensor, m: nn.Module, k: int, side: str, gen, std, where: str
) -> Tensor:
    """Rows ``(k, in)`` (side "out") or columns ``(out, k)`` (side "in") of map ``m``."""
    other = _width(m, "in" if side == "out" else "out")
    shape = (k, other) if side == "out" else (other, k)
    if isinstance(spec, Tensor):
        if tuple(spec.shape) != shape:
            raise GrowthInputError(
                f"{where}: expected a tensor of shape {shape}, got {tuple(spec.shape)}"
            )
        return spec.detach()
    if spec == "zero":
        return torch.zeros(shape, dtype=m.weight.dtype, device=m.weight.device)
    if spec == "random":
        w = m.weight.detach()
        s = float(w.std()) if std is None else std
        return (torch.randn(shape, generator=gen) * s).to(w)
    raise GrowthInputError(f"{where}: expected 'zero', 'random' or a tensor, got {spec!r}")


def add_heads(
    model: nn.Module,
    k: int,
    *,
    block: int | None = None,
    std: float | None = None,
    generator: torch.Generator | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    unknown_optimizer: str = "raise",
    verify: bool = True,
    example: Tensor | None = None,
    ramp: Ramp | None = None,
    policy: OptimizerPolicy | None = None,
) -> EditRecord:
    """Add ``k`` attention heads (head width fixed) to one block or every block, preserving.

    New query, key and value rows are random N(0, std); the output projection's
    new columns are zero, so the new heads add nothing until they train. With
    grouped-query attention (``g`` query heads per key-value head), ``k`` must be
    a multiple of ``g``: ``k / g`` key-value heads join, each with its ``g`` query
    heads, so every old query head keeps its key-value head. A fused projection
    (GPT-2's ``c_attn``) gets the new rows inside each of its q, k, v parts.

    Parameters
    ----------
    model : nn.Module
        A transformer with a registered layout.
    k : int
        Query heads to add per block.
    block : int, optional
        The block; default every block.
    std, generator, optimizer, unknown_optimizer, verify, example
        As in :func:`grow_ffn`.
    ramp : Ramp, optional
        MSG's masked growth: the new heads' queries, keys and values are multiplied by
        the ramp's value, and the output projection's new columns are random too
        (the function is kept at ``m = 0`` since the new values are 0).
    policy : OptimizerPolicy, optional
        As in :func:`grow_ffn`.

    Returns
    -------
    EditRecord
        ``details["heads_after"]`` lists each chosen block's query heads.
    """
    k = _check_k(k, "add_heads")
    parts = find_layout(model)
    chosen = _blocks(parts, block)
    changes: list[Change] = []
    structural: Steps = []
    heads_after = []
    for b in chosen:
        a = b.attn
        group = a.n_head // a.n_kv_head
        if k % group:
            raise GrowthInputError(
                f"add_heads: {a.name} has {group} query heads per key-value head; k={k} must be a "
                f"multiple of {group}"
            )
        kv_new = k // group
        hd = a.head_dim
        if a.qkv is not None:
            if a.n_head != a.n_kv_head:
                raise GrowthInputError(f"add_heads: fused projection {a.name} with grouped heads")
            rows = _given_or_made("random", a.qkv, 3 * k * hd, "out", generator, std, a.name)
            if ramp is not None:
                new_pos = _positions(_width(a.qkv, "out"), k * hd, 3)[1]
                structural += ramp.mask_outputs(a.qkv, new_pos)
            changes += _grow_out(a.qkv, rows, groups=3)
        else:
            if ramp is not None:
                for proj, n_new in ((a.q, k * hd), (a.k, kv_new * hd), (a.v, kv_new * hd)):
                    width = _width(proj, "out")
                    structural += ramp.mask_outputs(proj, torch.arange(width, width + n_new))
            changes += _grow_out(
                a.q, _given_or_made("random", a.q, k * hd, "out", generator, std, a.name)
            )
            for proj in (a.k, a.v):
                changes += _grow_out(
                    proj, _given_or_made("random", proj, kv_new * hd, "out", generator, std, a.name)
                )
        o_init = "zero" if ramp is None else "random"
        changes += _grow_in(a.o, _given_or_made(o_init, a.o, k * hd, "in", generator, std, a.name))
        structural += a.set_heads(a.n_head + k, a.n_kv_head + kv_new)
        heads_after.append(a.n_head + k)
    record = EditRecord(
        op="add_heads",
        target=parts.container if block is None else chosen[0].name,
        modules=[b.attn.name for b in chosen],
        units_added=k,
        details={"blocks": [b.name for b in chosen], "heads_after": heads_after},
    )
    return run_edit(
        model, changes, structural, record, optimizer=optimizer,
        unknown_optimizer=unknown_optimizer, preserve=True, verify=verify, example=example,
        policy=policy,
    )  # fmt: skip
