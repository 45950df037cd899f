"""Growth of a pre-LN transformer's residual stream (``d_model``) through masks (MSG).

:func:`grow_hidden` appends ``k`` coordinates to the stream: the embeddings gain
columns, every norm gains entries (weight 1, bias 0), every map that reads the
stream (queries, keys, values, FFN up/gate, an untied head) gains input columns
and every map that writes it (the attention's and the FFN's output projections)
gains output rows, all drawn N(0, std) as MSG's code does; heads and FFN widths
stay. With a :class:`~torchgrow.ops.Ramp` the new coordinates enter through a mask
``m`` rising from 0 to 1:

* every writer's output (embeddings included) has its new coordinates multiplied
  by ``m``, so at ``m = 0`` the stream's new coordinates are exactly 0;
* every norm becomes MSG's *masked* norm: statistics weighted by the mask
  (``mu = sum m_i x_i / sum m_i``, ``var = sum m_i (x_i - mu)^2 / sum m_i``; for
  RMSNorm the mean square likewise), then its affine, then the mask again.

At ``m = 0`` the statistics are those of the old coordinates with the same
epsilon and the new ones read 0, so the grown model computes the old function
whatever the new weights are; at ``m = 1`` the masked norm is the plain norm and
the masks are removed (:meth:`Ramp.finish`), nothing to fold. Without a ramp the
edit does not preserve the function (the norms' statistics change) and records
what it changed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import GrowthInputError
from .edit import Change, EditRecord
from .optim_policy import OptimizerPolicy
from .ramp import Ramp, Steps
from .tx_commit import run_edit
from .tx_layout import TransformerParts, find_layout
from .tx_width import _grow_in, _grow_out, _scatter, _width

__all__ = ["grow_hidden"]


def _randn(shape: tuple[int, ...], like: Tensor, std: float, gen: torch.Generator | None) -> Tensor:
    return (torch.randn(shape, generator=gen) * std).to(like)


def _norm_kind(norm: nn.Module) -> str:
    if isinstance(norm, nn.LayerNorm):
        return "layer"
    if isinstance(norm, nn.RMSNorm) or hasattr(norm, "variance_epsilon"):
        return "rms"
    raise GrowthInputError(
        f"grow_hidden: cannot mask a {type(norm).__name__}; LayerNorm, RMSNorm and Hugging "
        "Face's RMSNorm (variance_epsilon) are known"
    )


def _masked_norm(ramp: Ramp, norm: nn.Module, index: Tensor) -> Steps:
    """MSG's masked norm on ``norm``: mask-weighted statistics, affine, then the mask."""
    kind = _norm_kind(norm)

    def hook(mod: nn.Module, args: tuple, out: Tensor) -> Tensor:
        x = args[0]
        m = ramp._factor(x, index)
        total = m.sum()
        if kind == "layer":
            mu = (x * m).sum(-1, keepdim=True) / total
            var = ((x - mu).pow(2) * m).sum(-1, keepdim=True) / total
            y = (x - mu) * torch.rsqrt(var + mod.eps)
            if mod.weight is not None:
                y = y * mod.weight
            if mod.bias is not None:
                y = y + mod.bias
        else:
            eps = getattr(mod, "variance_epsilon", None) or getattr(mod, "eps", None)
            eps = torch.finfo(x.dtype).eps if eps is None else eps
            y = x * torch.rsqrt((x * x * m).sum(-1, keepdim=True) / total + eps) * mod.weight
        return (y * m).to(out.dtype)

    return [ramp._install(lambda: norm.register_forward_hook(ramp._hooked(hook)))]


def _norm(norm: nn.Module, k: int) -> list[Change]:
    changes = []
    for name, fill in (("weight", 1.0), ("bias", 0.0)):
        t = getattr(norm, name, None)
        if isinstance(t, Tensor):
            d = t.shape[0]
            block = t.new_full((k,), fill)
            changes.append(_scatter(norm, name, 0, torch.arange(d), torch.arange(d, d + k), block))
    shape = getattr(norm, "normalized_shape", None)
    if shape is not None:
        changes.append(Change.attr(norm, "normalized_shape", (shape[0] + k,)))
    return changes


def _embedding(emb: nn.Module, k: int, std: float, gen, tied: nn.Module | None) -> list[Change]:
    if not isinstance(emb, nn.Embedding):
        raise GrowthInputError(
            f"grow_hidden: the stream's input {type(emb).__name__} is not an nn.Embedding; only "
            "embedding inputs are grown (language models)"
        )
    w = emb.weight.detach()
    d = w.shape[1]
    block = _randn((w.shape[0], k), w, std, gen)
    change = _scatter(emb, "weight", 1, torch.arange(d), torch.arange(d, d + k), block)
    changes = [change, Change.attr(emb, "embedding_dim", d + k)]
    if tied is not None:  # the same new tensor from the head's side keeps the tie
        changes += [Change(tied, "weight", change.tensor, change.remap),
                    Change.attr(tied, "in_features", d + k)]  # fmt: skip
    return changes


def _check(parts: TransformerParts, k: object, ramp: Ramp | None) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise GrowthInputError(f"grow_hidden: k must be a positive int, got {k!r}")
    if not parts.pre_ln:
        raise GrowthInputError("grow_hidden: only pre-LN transformers (a post-LN model's norms "
                               "sit on the stream itself)")  # fmt: skip
    if not parts.embeddings:
        raise GrowthInputError("grow_hidden: the layout names no embeddings to widen")
    if ramp is not None and not isinstance(ramp, Ramp):
        raise GrowthInputError(f"grow_hidden: ramp must be a torchgrow.ops.Ramp, got {ramp!r}")
    for b in parts.blocks:
        for norm in b.norms:
            _norm_kind(norm)
    if parts.final_norm is not None:
        _norm_kind(parts.final_norm)
    return k


def grow_hidden(
    model: nn.Module,
    k: int,
    *,
    ramp: Ramp | None,
    std: float = 0.02,
    generator: torch.Generator | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    unknown_optimizer: str = "raise",
    verify: bool = True,
    example: Tensor | None = None,
    policy: OptimizerPolicy | None = None,
) -> EditRecord:
    """Add ``k`` coordinates to a pre-LN transformer's residual stream (MSG's hidden growth).

    Parameters
    ----------
    model : nn.Module
        A pre-LN transformer with a registered layout whose inputs are embeddings.
    k : int
        New stream coordinates.
    ramp : Ramp or None
        The mask the new coordinates enter through (function-preserving at ``m = 0``);
        ``None`` grows them unmasked, which changes the function (recorded).
    std : float, default 0.02
        Standard deviation of every new weight (MSG's init); new biases are 0, new
        norm weights 1.
    generator : torch.Generator, optional
        For the new weights.
    optimizer, unknown_optimizer, verify, example, policy
        As in :func:`torchgrow.ops.grow_ffn`.

    Returns
    -------
    EditRecord
        ``details["d_model_after"]``; ``preserving`` is whether a ramp was given.
    """
    parts = find_layout(model)
    k = _check(parts, k, ramp)
    b0 = parts.blocks[0]
    d = _width(b0.ffn.down, "out")
    new = torch.arange(d, d + k)
    changes: list[Change] = []
    structural: Steps = []
    for i, emb in enumerate(parts.embeddings):
        changes += _embedding(emb, k, std, generator, parts.head if parts.tied and i == 0 else None)
        if ramp is not None:
            structural += ramp.mask_outputs(emb, new)
    norms = [n for b in parts.blocks for n in b.norms]
    norms += [parts.final_norm] if parts.final_norm is not None else []
    for norm in norms:
        changes += _norm(norm, k)
        if ramp is not None:
            structural += _masked_norm(ramp, norm, new)
    for b in parts.blocks:
        a, f = b.attn, b.ffn
        readers = [a.qkv] if a.qkv is not None else [a.q, a.k, a.v]
        readers += [f.up] + ([f.gate] if f.gate is not None else [])
        for m in readers:
            w = m.weight.detach()
            changes += _grow_in(m, _randn((_width(m, "out"), k), w, std, generator))
        for m in (a.o, f.down):
            changes += _grow_out(m, _randn((k, _width(m, "in")), m.weight, std, generator))
            if ramp is not None:
                structural += ramp.mask_outputs(m, new)
    if parts.head is not None and not parts.tied:
        h = parts.head
        changes += _grow_in(h, _randn((_width(h, "out"), k), h.weight, std, generator))
    a0 = b0.attn
    structural += parts.set_width(d + k, a0.n_head, a0.n_kv_head, _width(b0.ffn.up, "out"))
    record = EditRecord(
        op="grow_hidden",
        target=parts.container,
        modules=[b.name for b in parts.blocks],
        units_added=k,
        details={"d_model_after": d + k, "masked": ramp is not None},
    )
    return run_edit(
        model, changes, structural, record, optimizer=optimizer,
        unknown_optimizer=unknown_optimizer, preserve=ramp is not None, verify=verify,
        example=example, policy=policy,
    )  # fmt: skip
