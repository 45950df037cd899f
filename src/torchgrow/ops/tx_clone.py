"""Function-preserving width growth of a whole transformer by cloning (HyperCloning's rules).

:func:`clone_width` multiplies the residual stream by an integer ``n``, the FFN
hidden width by ``ffn_mult`` and the heads by ``heads_mult`` (head width fixed).
Every hidden vector of the grown model is the old one tiled: embeddings and
norms are tiled, every map that reads tiled copies is tiled and divided by the
number of copies, every map that writes them is tiled. LayerNorm and RMSNorm of
a tiled vector are the tiled norms with the same epsilon, so the logits are
unchanged (to float rounding). A tied head shares the tiled (undivided)
embedding; the final norm then carries the ``1/n`` (LEMON's rule), so the tie
stays.

Copies stay copies under training unless something breaks the symmetry:
``snr_db`` adds HyperCloning's noise (``+N`` on one input copy, ``-N`` on the
next, so it cancels on the tiled input) to every hidden-to-hidden matrix;
``split`` instead splits every reader's weight unevenly over the copies it reads,
the parts still summing to the old weight (LEMON's rule): ``"comp"`` gives the
first copy ``W - C`` and each other copy a small random ``C``, ``"projection"``
gives copy ``c`` the random ``R_c - (sum_j R_j - W) / n``.

The optimizer's state is tiled like the weights it belongs to (not divided):
each copy starts with its source's moments.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import GrowthInputError
from .edit import Change, EditRecord
from .optim_policy import OptimizerPolicy
from .tx_commit import run_edit
from .tx_layout import AttentionParts, TransformerParts, find_layout

__all__ = ["clone_width"]


def _is_conv1d(m: nn.Module) -> bool:
    return type(m).__name__ == "Conv1D" and hasattr(m, "nf")


def _logical(m: nn.Module) -> Tensor:
    """The weight as ``(out, in)``."""
    w = m.weight.detach()
    return w.t() if _is_conv1d(m) else w


def _physical(m: nn.Module, w: Tensor) -> Tensor:
    return w.t().contiguous() if _is_conv1d(m) else w


def _tile_rows(w: Tensor, p: int, parts: int) -> Tensor:
    """Tile each of ``parts`` consecutive row groups ``p`` times (a fused ``[q; k; v]``: parts=3)."""
    return torch.cat([c.repeat(p, *([1] * (w.dim() - 1))) for c in w.chunk(parts, 0)])


def _noise(w: Tensor, p_out: int, q_in: int, snr_db: float, gen: torch.Generator | None) -> Tensor:
    """HyperCloning's noise on a ``(p_out*o, q_in*i)`` tiled matrix: per row block, ``+N`` on input
    copy ``2j`` and ``-N`` on copy ``2j+1`` (an odd last copy gets none)."""
    rows, cols = w.shape[0] // p_out, w.shape[1] // q_in
    out = w.clone()
    for r in range(p_out):
        for j in range(q_in // 2):
            a = slice(2 * j * cols, (2 * j + 1) * cols)
            b = slice((2 * j + 1) * cols, (2 * j + 2) * cols)
            block = w[r * rows : (r + 1) * rows, a]
            power = float(block.pow(2).mean()) / 10 ** (snr_db / 10)
            n = torch.randn(block.shape, generator=gen).to(w) * power**0.5
            out[r * rows : (r + 1) * rows, a] += n
            out[r * rows : (r + 1) * rows, b] -= n
    return out


def _split(full: Tensor, q_in: int, mode: str, std: float, scale: float,
           gen: torch.Generator | None) -> Tensor:  # fmt: skip
    """LEMON's uneven split of ``full`` (``(out, in)``) over ``q_in`` input copies: the column
    blocks sum to ``full``; ``"comp"``: ``[W - sum C, C_2, ..]`` with ``C = scale * N(0, std)``,
    ``"projection"``: ``R_c - (sum_j R_j - W) / q_in`` with ``R = N(0, std)``."""
    rand = [torch.randn(full.shape, generator=gen).to(full) * std for _ in range(q_in)]
    if mode == "comp":
        rest = [r * scale for r in rand[1:]]
        return torch.cat([full - sum(rest), *rest], 1)
    total = sum(rand)
    return torch.cat([r - (total - full) / q_in for r in rand], 1)


def _linear(
    m: nn.Module, p_out: int, q_in: int, *, parts: int = 1, noise: tuple | None = None,
    split: tuple | None = None,
) -> list[Change]:  # fmt: skip
    """``m`` becomes ``tile(W, p_out, q_in) / q_in`` (rows tiled per part), bias tiled; with
    ``split`` the input copies' weights are LEMON's uneven split instead of ``W / q_in`` each."""
    w = _logical(m)
    full = _tile_rows(w, p_out, parts)
    new = full.repeat(1, q_in) / q_in
    if noise is not None and q_in > 1:
        new = _noise(new, p_out * parts, q_in, *noise)
    if split is not None and q_in > 1:
        new = _split(full, q_in, *split)
    conv1d = _is_conv1d(m)

    def remap(t: Tensor, fill: float) -> Tensor:
        lt = t.t() if conv1d else t
        tiled = _tile_rows(lt, p_out, parts).repeat(1, q_in)
        return tiled.t().contiguous() if conv1d else tiled

    changes = [Change(m, "weight", _physical(m, new), remap)]
    if getattr(m, "bias", None) is not None:
        changes.append(_vector(m, "bias", p_out, parts))
    out_w, in_w = new.shape
    if conv1d:
        changes.append(Change.attr(m, "nf", out_w))
        if hasattr(m, "nx"):
            changes.append(Change.attr(m, "nx", in_w))
    else:
        changes += [Change.attr(m, "out_features", out_w), Change.attr(m, "in_features", in_w)]
    return changes


def _vector(m: nn.Module, name: str, p: int, parts: int = 1, scale: float = 1.0) -> Change:
    def remap(t: Tensor, fill: float) -> Tensor:
        return _tile_rows(t, p, parts)

    return Change(m, name, _tile_rows(getattr(m, name).detach(), p, parts) * scale, remap)


def _norm(m: nn.Module, n: int, scale: float = 1.0) -> list[Change]:
    changes = []
    for name in ("weight", "bias"):
        if getattr(m, name, None) is not None:
            changes.append(_vector(m, name, n, scale=scale))
    shape = getattr(m, "normalized_shape", None)
    if shape is not None:
        changes.append(Change.attr(m, "normalized_shape", (shape[0] * n,)))
    return changes


def _embedding(m: nn.Module, n: int, tied: nn.Module | None) -> list[Change]:
    """Columns tiled, not divided; a tied head keeps sharing the new weight."""

    def remap(t: Tensor, fill: float) -> Tensor:
        return t.repeat(1, n)

    w = m.weight.detach()
    new = w.repeat(1, n)
    changes = [Change(m, "weight", new, remap), Change.attr(m, "embedding_dim", w.shape[1] * n)]
    if tied is not None:  # the same plan from the other holder: the edit keeps the tie
        changes += [
            Change(tied, "weight", new, remap),
            Change.attr(tied, "in_features", new.shape[1]),
        ]
    return changes


def _kv_mult(a: AttentionParts, hm: int) -> int:
    """Key-value heads multiply with the heads, except one shared by several (multi-query)."""
    return 1 if a.n_kv_head == 1 < a.n_head else hm


def _attention(a: AttentionParts, n: int, hm: int, noise: tuple | None,
               split: tuple | None) -> list[Change]:  # fmt: skip
    kw = {"noise": noise, "split": split}
    if a.qkv is not None:
        changes = _linear(a.qkv, hm, n, parts=3, **kw)
    else:
        changes = _linear(a.q, hm, n, **kw)
        changes += _linear(a.k, _kv_mult(a, hm), n, **kw)
        changes += _linear(a.v, _kv_mult(a, hm), n, **kw)
    return changes + _linear(a.o, n, hm, **kw)


_SPLITS = ("even", "comp", "projection")


def _check(parts: TransformerParts, n: int, fm: int, hm: int, split: str,
           snr_db: float | None) -> None:  # fmt: skip
    for what, v in (("n", n), ("ffn_mult", fm), ("heads_mult", hm)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise GrowthInputError(f"clone_width: {what} must be a positive int, got {v!r}")
    if split not in _SPLITS:
        raise GrowthInputError(f"clone_width: split must be one of {_SPLITS}, got {split!r}")
    if split != "even" and snr_db is not None:
        raise GrowthInputError(
            "clone_width: choose one symmetry breaker: snr_db (HyperCloning's noise) or "
            f"split={split!r} (LEMON's uneven split), not both"
        )
    for b in parts.blocks:
        a = b.attn
        if a.qkv is not None and a.n_kv_head != a.n_head:
            raise GrowthInputError(f"clone_width: fused projection of {a.name} with grouped heads")


def clone_width(
    model: nn.Module,
    n: int = 2,
    *,
    ffn_mult: int | None = None,
    heads_mult: int | None = None,
    snr_db: float | None = None,
    split: str = "even",
    split_std: float = 0.02,
    split_scale: float = 0.1,
    generator: torch.Generator | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    unknown_optimizer: str = "raise",
    verify: bool = True,
    example: Tensor | None = None,
    policy: OptimizerPolicy | None = None,
) -> EditRecord:
    """Multiply a transformer's widths by integers, preserving its function (HyperCloning).

    Parameters
    ----------
    model : nn.Module
        A transformer with a registered layout (:func:`torchgrow.ops.find_layout`).
    n : int, default 2
        Multiplier of the residual stream (``d_model``).
    ffn_mult : int, optional
        Multiplier of the FFN hidden width (default ``n``, as HyperCloning's examples).
    heads_mult : int, optional
        Multiplier of the heads (default ``n``); head width is fixed. With a single
        key-value head (multi-query) the key-value head is kept.
    snr_db : float, optional
        HyperCloning's symmetry-breaking noise at this signal-to-noise ratio (dB)
        on every hidden-to-hidden matrix; default none (the paper's default). The
        noise cancels on the tiled input, so the function is still preserved.
    split : {"even", "comp", "projection"}, default "even"
        How each reader's weight is shared by the input copies it reads: evenly,
        ``W / n`` each (HyperCloning); ``"comp"``, ``W - C`` for the first copy and
        ``C = split_scale * N(0, split_std)`` for each other (LEMON's BERT default,
        which the code asserts for ``n = 2``; torchgrow allows any ``n``);
        ``"projection"``, ``R_c - (sum_j R_j - W) / n`` with ``R ~ N(0, split_std)``
        (LEMON's ViT rule). Every split sums to the old weight, so the function is
        preserved, and the copies' gradients differ.
    split_std, split_scale : float, default 0.02 and 0.1
        The random parts of the split: the large model's init scale, and the
        ``comp`` factor.
    generator : torch.Generator, optional
        For the noise and the split.
    optimizer : torch.optim.Optimizer, optional
        Carried along: each tiled parameter's state is tiled with it.
    unknown_optimizer : {"raise", "reset"}
        See :func:`torchgrow.ops.widen`.
    verify : bool
        With an example input, roll back unless the outputs stay within the tolerance.
    example : Tensor, optional
        Input to verify on (default the model's example input, if set).
    policy : OptimizerPolicy, optional
        ``state="reset"`` drops the grown parameters' state (the paper starts a fresh
        optimizer); the default tiles it.

    Returns
    -------
    EditRecord
        ``details`` has the multipliers, ``max_abs_dout`` and the widths after.
    """
    parts = find_layout(model)
    fm = n if ffn_mult is None else ffn_mult
    hm = n if heads_mult is None else heads_mult
    _check(parts, n, fm, hm, split, snr_db)
    noise = None if snr_db is None else (float(snr_db), generator)
    sp = None if split == "even" else (split, float(split_std), float(split_scale), generator)
    changes: list[Change] = []
    structural = []
    for i, emb in enumerate(parts.embeddings):
        changes += _embedding(emb, n, tied=parts.head if parts.tied and i == 0 else None)
    for b in parts.blocks:
        for norm in b.norms:
            changes += _norm(norm, n)
        changes += _attention(b.attn, n, hm, noise, sp)
        f = b.ffn
        changes += _linear(f.up, fm, n, noise=noise, split=sp)
        if f.gate is not None:
            changes += _linear(f.gate, fm, n, noise=noise, split=sp)
        changes += _linear(f.down, n, fm, noise=noise, split=sp)
        a = b.attn
        structural += a.set_heads(a.n_head * hm, a.n_kv_head * _kv_mult(a, hm))
    if parts.final_norm is not None:
        changes += _norm(parts.final_norm, n, scale=1.0 / n if parts.tied else 1.0)
    if parts.head is not None and not parts.tied:
        changes += _linear(parts.head, 1, n, split=sp)
    b0 = parts.blocks[0]
    d = _logical(b0.ffn.down).shape[0] * n
    f_width = _logical(b0.ffn.up).shape[0] * fm
    kv0 = b0.attn.n_kv_head * _kv_mult(b0.attn, hm)
    structural += parts.set_width(d, b0.attn.n_head * hm, kv0, f_width)
    record = EditRecord(
        op="clone_width",
        target=parts.container,
        modules=[b.name for b in parts.blocks],
        details={
            "n": n,
            "ffn_mult": fm,
            "heads_mult": hm,
            "snr_db": snr_db,
            "split": split,
            "d_model_after": d,
        },
    )
    return run_edit(
        model, changes, structural, record, optimizer=optimizer,
        unknown_optimizer=unknown_optimizer, preserve=True, verify=verify, example=example,
        policy=policy,
    )  # fmt: skip
