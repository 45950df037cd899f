"""LEMON's average expansion: any wider residual stream, heads and FFN, function-preserving.

:func:`expand_width` grows ``d_model`` from ``d`` to any ``D = k*d + r``, the heads from
``H`` to any ``H' >= H`` and the FFN from ``F`` to any ``F' >= F`` (LEMON, Wang et al.
2023: its code's ``inflate_bert_utils``). Every stream vector becomes
``x' = [x tiled k times; mean(x) repeated r times]``:

- embeddings (token and learned position) tile their columns and set the ``r``
  residue columns to each row's mean, so their sum keeps the form;
- a LayerNorm of ``x'`` sees the same mean and ``s = k*d/D`` times the variance, so
  with ``eps' = s*eps`` and ``gamma'`` the tiled ``gamma`` times ``sqrt(s)`` (residue
  entries 1, bias 0) it outputs ``[LN(x) tiled; 0]``; RMSNorm keeps the form only
  when ``r = 0`` (the mean square of ``x'`` differs otherwise: refused);
- readers of the stream (q, k, v, the FFN's up and gate, an untied head) split each
  old column over its ``k`` copies (evenly, or LEMON's ``comp`` or ``projection``
  splits) and get small random or zero residue columns, which read 0;
- heads and FFN units are copied circularly (``0..H-1`` k_h times, then
  ``0..r_h-1``); readers of copied units (the output projections) split each old
  column over that unit's copies;
- writers to the stream (attention output, FFN down) emit the form: rows tiled, the
  residue rows the mean of the rows (and of the bias);
- a tied head reads the expanded embedding, so the final norm also divides by ``k``.

The optimizer's state follows the weights: copies start with their source's
moments (tiled, not divided), residue and other new entries with zero. For
integer multipliers with an even split this is :func:`~torchgrow.ops.clone_width`'s
result; a test checks the two agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import GrowthInputError
from .edit import Change, EditRecord
from .optim_policy import OptimizerPolicy
from .tx_clone import _SPLITS, _is_conv1d, _logical, _physical
from .tx_commit import run_edit
from .tx_layout import AttentionParts, TransformerParts, find_layout

__all__ = ["expand_width"]


@dataclass
class _Map:
    """One dimension's expansion: ``src[j]`` is the old index new index ``j`` copies, or -1 for
    a residue coordinate (the mean of the old ones)."""

    src: Tensor
    old: int

    @staticmethod
    def stream(d: int, new: int) -> _Map:
        k = new // d
        src = torch.cat([torch.arange(k * d) % d, torch.full((new - k * d,), -1)])
        return _Map(src, d)

    @staticmethod
    def circular(n: int, new: int, width: int = 1) -> _Map:
        """Units of ``width`` entries each (a head's rows), copied circularly."""
        units = torch.arange(new) % n
        return _Map((units[:, None] * width + torch.arange(width)).flatten(), n * width)

    @property
    def copies(self) -> Tensor:
        """How many copies each old index has."""
        return torch.bincount(self.src[self.src >= 0], minlength=self.old)

    @property
    def first(self) -> Tensor:
        """Whether each new index is the first copy of its source."""
        seen = torch.zeros(self.old, dtype=torch.bool)
        out = torch.zeros(len(self.src), dtype=torch.bool)
        for j, s in enumerate(self.src.tolist()):
            if s >= 0 and not seen[s]:
                seen[s], out[j] = True, True
        return out

    def take(self, t: Tensor, dim: int, fill: Tensor | float) -> Tensor:
        """``t`` gathered along ``dim``: copies of the sources, ``fill`` at residue indices."""
        out = t.index_select(dim, self.src.clamp_min(0).to(t.device))
        res = (self.src < 0).nonzero().flatten().to(t.device)
        if len(res):
            view = out.movedim(dim, 0)
            view[res] = fill if isinstance(fill, float) else fill.to(out.dtype)
        return out


@dataclass
class _Split:
    mode: str
    std: float
    scale: float
    generator: torch.Generator | None


def _split_columns(w: Tensor, m: _Map, split: _Split) -> Tensor:
    """``w`` (rows, old columns) read by expanded columns: the copies of each old column sum to
    it (``even``: equal parts; ``comp``: the first copy ``w - sum C``, the others ``C``;
    ``projection``: ``R_c - (sum R - w) / copies``), residue columns random (0 when even)."""
    n = m.copies.clamp_min(1).to(w)
    src = m.src.clamp_min(0)
    res = m.src < 0
    if split.mode == "even":
        out = w[:, src] / n[src]
        out[:, res] = 0
        return out
    rand = torch.randn((w.shape[0], len(m.src)), generator=split.generator).to(w) * split.std
    if split.mode == "comp":
        out = rand * split.scale
        out[:, m.first] = 0
        total = torch.zeros_like(w).index_add_(1, src[~res], out[:, ~res])
        first = m.first.nonzero().flatten()
        out[:, first] = w[:, src[first]] - total[:, src[first]]
        return out
    total = torch.zeros_like(w).index_add_(1, src[~res], rand[:, ~res])
    out = rand - (total[:, src] - w[:, src]) / n[src]
    out[:, res] = rand[:, res] * split.scale
    return out


def _stream_rows(w: Tensor, m: _Map) -> Tensor:
    """Rows in the stream form: copies, and the mean of the rows at residue positions."""
    return m.take(w, 0, w.mean(0))


def _state_remap(rows: _Map | None, cols: _Map | None, conv1d: bool):  # noqa: ANN202
    """Optimizer state follows the weight: copies tiled (not divided), new entries ``fill``."""

    def remap(t: Tensor, fill: float) -> Tensor:
        lt = t.t() if conv1d and t.dim() == 2 else t
        if rows is not None:
            lt = rows.take(lt, 0, fill)
        if cols is not None and lt.dim() == 2:
            lt = cols.take(lt, 1, fill)
        return lt.t().contiguous() if conv1d and lt.dim() == 2 else lt

    return remap


def _linear(m: nn.Module, rows: _Map | None, cols: _Map | None, *, stream_out: bool,
            split: _Split) -> list[Change]:  # fmt: skip
    """A projection whose output dim follows ``rows`` (stream form when ``stream_out``) and whose
    input dim follows ``cols`` (split over the copies)."""
    w = _logical(m)
    if rows is not None:
        w = _stream_rows(w, rows) if stream_out else rows.take(w, 0, 0.0)
    if cols is not None:
        w = _split_columns(w, cols, split)
    conv1d = _is_conv1d(m)
    changes = [Change(m, "weight", _physical(m, w), _state_remap(rows, cols, conv1d))]
    bias = getattr(m, "bias", None)
    if bias is not None and rows is not None:
        b = bias.detach()
        new_b = _stream_rows(b[:, None], rows)[:, 0] if stream_out else rows.take(b, 0, 0.0)
        changes.append(Change(m, "bias", new_b, _state_remap(rows, None, False)))
    out_w, in_w = w.shape
    if conv1d:
        changes.append(Change.attr(m, "nf", out_w))
        if hasattr(m, "nx"):
            changes.append(Change.attr(m, "nx", in_w))
    else:
        changes += [Change.attr(m, "out_features", out_w), Change.attr(m, "in_features", in_w)]
    return changes


def _fused_rows(a: AttentionParts, heads: _Map) -> _Map:
    """The row map of a fused ``[q; k; v]`` projection: each part's heads copied the same way."""
    per = a.n_head * a.head_dim
    src = torch.cat([heads.src + i * per for i in range(3)])
    return _Map(src, 3 * per)


def _norm(m: nn.Module, stream: _Map, s: float, scale: float, rms: bool) -> list[Change]:
    changes = []
    for name, value in (("weight", math.sqrt(s) * scale), ("bias", scale)):
        p = getattr(m, name, None)
        if p is None:
            continue
        fill = 1.0 if name == "weight" else 0.0
        new = stream.take(p.detach(), 0, fill) * value
        res = stream.src < 0
        new[res] = fill
        changes.append(Change(m, name, new, _state_remap(stream, None, False)))
    shape = getattr(m, "normalized_shape", None)
    if shape is not None:
        changes.append(Change.attr(m, "normalized_shape", (len(stream.src),)))
    for eps in ("eps", "variance_epsilon"):
        if not rms and isinstance(getattr(m, eps, None), float):
            changes.append(Change.attr(m, eps, getattr(m, eps) * s))
    return changes


def _embedding(m: nn.Module, stream: _Map, tied: nn.Module | None) -> list[Change]:
    w = m.weight.detach()
    new = stream.take(w, 1, 0.0)
    new[:, stream.src < 0] = w.mean(1, keepdim=True)  # each row's mean at the residue columns
    remap = _state_remap(None, stream, False)
    changes = [Change(m, "weight", new, remap), Change.attr(m, "embedding_dim", new.shape[1])]
    if tied is not None:
        changes += [
            Change(tied, "weight", new, remap),
            Change.attr(tied, "in_features", new.shape[1]),
        ]
    return changes


def _is_rms(norm: nn.Module) -> bool:
    return "rms" in type(norm).__name__.lower()


def _check(parts: TransformerParts, d: int, d_new: int, h_new: int, f_new: int, split: str) -> None:
    b0 = parts.blocks[0]
    a = b0.attn
    f = _logical(b0.ffn.up).shape[0]
    for what, new, old in (("d_model", d_new, d), ("n_head", h_new, a.n_head), ("d_ff", f_new, f)):
        if isinstance(new, bool) or not isinstance(new, int) or new < old:
            raise GrowthInputError(f"expand_width: {what} must be an int >= {old}, got {new!r}")
    if (d_new, h_new, f_new) == (d, a.n_head, f):
        raise GrowthInputError("expand_width: nothing to grow (every width as it is)")
    if split not in _SPLITS:
        raise GrowthInputError(f"expand_width: split must be one of {_SPLITS}, got {split!r}")
    if not parts.pre_ln:
        raise GrowthInputError("expand_width: post-LN blocks are not supported (pre-LN only)")
    norms = [n for blk in parts.blocks for n in blk.norms]
    norms += [parts.final_norm] if parts.final_norm is not None else []
    if d_new % d and any(getattr(n, "weight", None) is None for n in norms):
        raise GrowthInputError(
            "expand_width: a norm without a learned weight cannot absorb the variance change of "
            f"{d} -> {d_new} (not a multiple); choose a multiple of d_model"
        )
    if d_new % d and any(_is_rms(n) for n in norms):
        raise GrowthInputError(
            f"expand_width: RMSNorm keeps the expanded stream only for multiples of d_model "
            f"({d} -> {d_new} leaves {d_new % d} residue coordinates, whose mean changes the "
            "mean square); choose a multiple"
        )
    for blk in parts.blocks:
        a = blk.attn
        if a.qkv is not None and a.n_kv_head != a.n_head:
            raise GrowthInputError(f"expand_width: fused projection of {a.name} with grouped heads")
        group = a.n_head // a.n_kv_head
        if a.n_kv_head > 1 and h_new % group:
            raise GrowthInputError(
                f"expand_width: {a.name} groups {group} query heads per key-value head; n_head "
                f"{h_new} is not a multiple of it"
            )


def expand_width(
    model: nn.Module,
    d_model: int,
    *,
    n_head: int | None = None,
    d_ff: int | None = None,
    split: str = "comp",
    split_std: float = 0.02,
    split_scale: float = 0.1,
    generator: torch.Generator | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    unknown_optimizer: str = "raise",
    verify: bool = True,
    example: Tensor | None = None,
    policy: OptimizerPolicy | None = None,
) -> EditRecord:
    """Widen a pre-LN transformer to any widths, preserving its function (LEMON's average
    expansion; see the module docstring).

    Parameters
    ----------
    model : nn.Module
        A transformer with a registered layout (:func:`torchgrow.ops.find_layout`).
    d_model : int
        The new residual-stream width (``>=`` the current; any value).
    n_head : int, optional
        The new number of heads (default: as now); head width is fixed. With grouped
        key-value heads it must be a multiple of the group; a single key-value head is kept.
    d_ff : int, optional
        The new FFN width (default: as now).
    split : {"comp", "projection", "even"}, default "comp"
        How readers share an old column among its copies (LEMON's ``comp`` rule by default).
    split_std, split_scale : float
        Scale of the random parts of the split and of the residue columns.
    generator : torch.Generator, optional
        For the random parts.
    optimizer : torch.optim.Optimizer, optional
        Carried: copies get their source's state, new entries zero.
    unknown_optimizer, verify, example, policy
        As for :func:`torchgrow.ops.clone_width`.

    Returns
    -------
    EditRecord
        ``details`` has the widths before and after and ``max_abs_dout``.
    """
    parts = find_layout(model)
    b0 = parts.blocks[0]
    d = _logical(b0.ffn.down).shape[0]
    h_new = b0.attn.n_head if n_head is None else n_head
    f_new = _logical(b0.ffn.up).shape[0] if d_ff is None else d_ff
    _check(parts, d, d_model, h_new, f_new, split)
    sp = _Split(split, float(split_std), float(split_scale), generator)
    stream = _Map.stream(d, d_model)
    k = d_model // d
    s = k * d / d_model
    changes: list[Change] = []
    structural = []
    for i, emb in enumerate(parts.embeddings):
        changes += _embedding(emb, stream, parts.head if parts.tied and i == 0 else None)
    for blk in parts.blocks:
        for norm in blk.norms:
            changes += _norm(norm, stream, s, 1.0, _is_rms(norm))
        a = blk.attn
        heads = _Map.circular(a.n_head, h_new, a.head_dim)
        kv_new = 1 if a.n_kv_head == 1 else h_new // (a.n_head // a.n_kv_head)
        kv = _Map.circular(a.n_kv_head, kv_new, a.head_dim)
        if a.qkv is not None:
            changes += _linear(a.qkv, _fused_rows(a, heads), stream, stream_out=False, split=sp)
        else:
            changes += _linear(a.q, heads, stream, stream_out=False, split=sp)
            changes += _linear(a.k, kv, stream, stream_out=False, split=sp)
            changes += _linear(a.v, kv, stream, stream_out=False, split=sp)
        changes += _linear(a.o, stream, heads, stream_out=True, split=sp)
        units = _Map.circular(_logical(blk.ffn.up).shape[0], f_new)
        changes += _linear(blk.ffn.up, units, stream, stream_out=False, split=sp)
        if blk.ffn.gate is not None:
            changes += _linear(blk.ffn.gate, units, stream, stream_out=False, split=sp)
        changes += _linear(blk.ffn.down, stream, units, stream_out=True, split=sp)
        structural += a.set_heads(h_new, kv_new)
    if parts.final_norm is not None:
        scale = 1.0 / k if parts.tied else 1.0
        changes += _norm(parts.final_norm, stream, s, scale, _is_rms(parts.final_norm))
    if parts.head is not None and not parts.tied:
        changes += _linear(parts.head, None, stream, stream_out=False, split=sp)
    kv0 = 1 if b0.attn.n_kv_head == 1 else h_new // (b0.attn.n_head // b0.attn.n_kv_head)
    structural += parts.set_width(d_model, h_new, kv0, f_new)
    record = EditRecord(
        op="expand_width",
        target=parts.container,
        modules=[b.name for b in parts.blocks],
        details={
            "d_model": (d, d_model),
            "n_head": (b0.attn.n_head, h_new),
            "d_ff": (_logical(b0.ffn.up).shape[0], f_new),
            "split": split,
        },
    )
    return run_edit(
        model, changes, structural, record, optimizer=optimizer,
        unknown_optimizer=unknown_optimizer, preserve=True, verify=verify, example=example,
        policy=policy,
    )  # fmt: skip
