"""GradMax on a transformer's FFN and heads: torchgrow's extension of Evci et al. (2022).

New FFN units get a zero fan-in (``up`` rows), so they output ``act(0) = 0`` and
the function is kept; their fan-out (``down`` columns) is chosen to maximise the
gradient of that zero fan-in: for a block whose FFN reads ``x`` and whose
``down`` output receives the gradient ``delta``, the fan-in gradient of a unit
with fan-out ``w`` is ``act'(0) * w^T M`` with ``M = sum over tokens of delta x^T``,
so the best ``k`` fan-outs of norm ``r`` are ``r`` times the top ``k`` left
singular vectors of ``M`` (the paper's closed form, per block). The paper grows
MLPs and convolutions; applying it to transformers' FFNs is torchgrow's own.

Heads (:func:`gradmax_heads`) follow the same rule one level up. A new head with
zero queries and keys attends uniformly to the positions it may see, and with zero
values it outputs 0, so the function is kept. Its value rows' gradient is then
``W_o^T M`` with ``M = sum over positions s of dtilde_s x_s^T``, where ``x`` is the
attention's input and ``dtilde_s = sum_t A_ts delta_t`` pulls the gradient at the
attention's output back through the uniform attention ``A`` (causal: ``A_ts =
1/(t+1)`` for ``s <= t``). The output columns of norm ``r`` that maximise it are ``r``
times the top left singular vectors of ``M``, ``head_dim`` of them per new head (per
new key-value head under grouped-query attention, whose query heads share them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .. import ops
from ..errors import GrowthInputError
from ..how.base import target_norm
from ..how.gradmax import GradMax as _GradMaxHow

__all__ = ["gradmax_ffn", "gradmax_heads"]


def _logical(m: nn.Module) -> Tensor:
    """A projection's weight as ``(out, in)`` (Hugging Face's ``Conv1D`` stores it transposed)."""
    w = m.weight.detach()
    return w.t() if type(m).__name__ == "Conv1D" else w


def gradmax_ffn(
    model: nn.Module,
    loss_fn: Callable[[], Tensor],
    k: int,
    *,
    block: int | None = None,
    scale: float = 0.5,
    scale_method: str = "mean_norm",
    optimizer: torch.optim.Optimizer | None = None,
    unknown_optimizer: str = "raise",
    example: Tensor | None = None,
    policy: ops.OptimizerPolicy | None = None,
) -> list[ops.EditRecord]:
    """Add ``k`` units to the FFN of one block (or each block) with GradMax's fan-out.

    Parameters
    ----------
    model : nn.Module
        A transformer with a registered layout whose FFN is ``down(act(up(x)))``
        with ``act(0) = 0`` and ``act'(0) != 0`` (GELU: 0.5); gated FFNs (SwiGLU)
        are refused (a zero-fan-in gated unit has no gradient at all).
    loss_fn : callable
        ``loss_fn() -> loss`` on the growth batch (called once, for the gradient;
        the parameters' ``.grad`` are left as they were).
    k : int
        Units per block.
    block : int, optional
        The block; default every block (one edit per block, each verified).
    scale, scale_method : float, str
        The fan-outs' norm: ``scale`` times the mean norm of the existing fan-outs
        (``"mean_norm"``, GradMax's default with 0.5) or ``scale`` (``"fixed"``).
    optimizer, unknown_optimizer, example, policy
        As in :func:`torchgrow.ops.grow_ffn`.

    Returns
    -------
    list of EditRecord
        One per block; ``details["singular_values"]`` holds the ``k`` singular
        values used (a new unit's fan-in gradient norm is ``act'(0) * r * sigma``).
    """
    parts = ops.find_layout(model)
    n = len(parts.blocks)
    if block is not None and not (isinstance(block, int) and -n <= block < n):
        raise GrowthInputError(f"block must be an index into the {n} blocks, got {block!r}")
    chosen = list(range(n)) if block is None else [block % n]
    gated = [parts.blocks[i].name for i in chosen if parts.blocks[i].ffn.gate is not None]
    if gated:
        raise GrowthInputError(
            f"gradmax_ffn: {gated[0]} has a gated FFN; a unit with zero gate and up fan-in gets no "
            "gradient. Grow it with ops.grow_ffn (random fan-in, zero fan-out) instead"
        )
    how = _GradMaxHow(scale=scale, scale_method=scale_method)
    ffns = {i: (parts.blocks[i].ffn.up, parts.blocks[i].ffn.down) for i in chosen}
    inputs, outputs, grads = _capture(ffns, loss_fn, "FFN")
    plans = []
    for i, g in zip(chosen, grads, strict=True):
        f = parts.blocks[i].ffn
        g = torch.zeros_like(outputs[i]) if g is None else g
        dirs, sv = how._dense_directions(inputs[i], g, k, f"{parts.blocks[i].name}.ffn")
        down = _logical(f.down)  # (d_model, d_ff): column j is unit j's fan-out
        r = target_norm(down.t(), scale, scale_method)
        plans.append((i, (dirs * r).t().to(down.dtype).contiguous(), sv))
    records = []
    for i, fan_out, sv in plans:
        record = ops.grow_ffn(
            model, k, block=i, fan_in="zero", fan_out=fan_out, optimizer=optimizer,
            unknown_optimizer=unknown_optimizer, example=example, policy=policy,
        )  # fmt: skip
        record.details["singular_values"] = [float(s) for s in sv]
        record.details["how"] = "GradMax (closed form, per block)"
        records.append(record)
    return records


def _pulled_back(delta: Tensor, causal: bool) -> Tensor:
    """``dtilde_s = sum_t A_ts delta_t`` for uniform attention over ``(batch, T, d)``."""
    t = delta.shape[1]
    if not causal:
        return delta.mean(1, keepdim=True).expand_as(delta)
    w = delta / torch.arange(1, t + 1, dtype=delta.dtype, device=delta.device).view(1, t, 1)
    return w.flip(1).cumsum(1).flip(1)  # sum over t >= s of delta_t / (t + 1)


def _capture(pairs: dict[int, tuple[nn.Module, nn.Module]], loss_fn: Callable[[], Tensor],
             what: str) -> tuple[dict[int, Tensor], dict[int, Tensor], tuple]:  # fmt: skip
    """For each block ``i: (reader, writer)``: the reader's input, the writer's output, and the
    gradient of ``loss_fn()`` at that output (``.grad`` of the parameters left as they were)."""
    inputs: dict[int, Tensor] = {}
    outputs: dict[int, Tensor] = {}
    handles = []
    for i, (reader, writer) in pairs.items():
        handles.append(
            reader.register_forward_hook(
                lambda m, x, out, i=i: inputs.__setitem__(i, x[0].detach())
            )
        )
        handles.append(
            writer.register_forward_hook(lambda m, x, out, i=i: outputs.__setitem__(i, out))
        )
    try:
        with torch.enable_grad():
            loss = loss_fn()
            missing = [i for i in pairs if i not in outputs]
            if missing or not loss.requires_grad:
                raise GrowthInputError(
                    f"loss_fn() did not run the {what} of blocks {missing} with gradients"
                )
            grads = torch.autograd.grad(loss, [outputs[i] for i in pairs], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    return inputs, outputs, grads


def gradmax_heads(
    model: nn.Module,
    loss_fn: Callable[[], Tensor],
    k: int,
    *,
    block: int | None = None,
    causal: bool = True,
    scale: float = 0.5,
    scale_method: str = "mean_norm",
    optimizer: torch.optim.Optimizer | None = None,
    unknown_optimizer: str = "raise",
    example: Tensor | None = None,
    policy: ops.OptimizerPolicy | None = None,
) -> list[ops.EditRecord]:
    """Add ``k`` attention heads to one block (or each block) with GradMax's output columns.

    The new heads' queries, keys and values are zero (function-preserving); their
    output columns are ``r`` times the top left singular vectors of the matrix that
    the value rows' gradient is linear in (see the module docstring), so the new
    values get the largest gradient a fan-out of that norm can give them.

    Parameters
    ----------
    model : nn.Module
        A transformer with a registered layout whose attention reads a sequence
        ``(batch, T, d)``.
    loss_fn : callable
        ``loss_fn() -> loss`` on the growth batch (called once, for the gradient;
        ``.grad`` is left as it was).
    k : int
        Query heads per block; under grouped-query attention a multiple of the
        query heads per key-value head.
    block : int, optional
        The block; default every block (one edit per block, each verified).
    causal : bool, default True
        Whether the attention is causal (GPT-2, Llama, torchgrow's GPT); ``False``
        for encoders (BERT, ViT): the uniform attention the derivation assumes.
    scale, scale_method : float, str
        The output columns' norm: ``scale`` times the mean norm of the existing ones
        (``"mean_norm"``, GradMax's default with 0.5) or ``scale`` (``"fixed"``).
    optimizer, unknown_optimizer, example, policy
        As in :func:`torchgrow.ops.add_heads`.

    Returns
    -------
    list of EditRecord
        One per block; ``details["singular_values"]`` holds the singular values used
        (a new value row's gradient norm is ``r * sigma`` times the query heads sharing it).
    """
    parts = ops.find_layout(model)
    n = len(parts.blocks)
    if isinstance(block, bool) or (
        block is not None and not (isinstance(block, int) and -n <= block < n)
    ):
        raise GrowthInputError(f"block must be an index into the {n} blocks, got {block!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise GrowthInputError(f"gradmax_heads: k must be a positive int, got {k!r}")
    chosen = list(range(n)) if block is None else [block % n]
    for i in chosen:
        a = parts.blocks[i].attn
        group = a.n_head // a.n_kv_head
        if k % group:
            raise GrowthInputError(
                f"gradmax_heads: {a.name} has {group} query heads per key-value head; k={k} must "
                f"be a multiple of {group}"
            )
    attns = {
        i: (a.qkv if a.qkv is not None else a.v, a.o)
        for i, a in ((i, parts.blocks[i].attn) for i in chosen)
    }
    inputs, outputs, grads = _capture(attns, loss_fn, "attention")
    how = _GradMaxHow(scale=scale, scale_method=scale_method)
    plans = []
    for i, g in zip(chosen, grads, strict=True):
        a = parts.blocks[i].attn
        x, hd, group = inputs[i], a.head_dim, a.n_head // a.n_kv_head
        if x.dim() != 3:
            raise GrowthInputError(f"gradmax_heads: {a.name} reads {tuple(x.shape)}, not (B, T, d)")
        g = torch.zeros_like(outputs[i]) if g is None else g
        kv_new = k // group
        dirs, sv = how._dense_directions(x, _pulled_back(g.detach(), causal), kv_new * hd, a.name)
        o = _logical(a.o)  # (d_model, n_head * head_dim): a column per value dimension
        r = target_norm(o.t(), scale, scale_method)
        cols = (dirs * r).t().to(o.dtype)  # (d_model, kv_new * hd)
        per_kv = cols.reshape(o.shape[0], kv_new, 1, hd).expand(-1, -1, group, -1)
        plans.append((i, per_kv.reshape(o.shape[0], k * hd).contiguous(), sv, x.shape[-1], kv_new))
    records = []
    for i, o_cols, sv, d_in, kv_new in plans:
        hd = parts.blocks[i].attn.head_dim
        zero_q, zero_kv = o_cols.new_zeros(k * hd, d_in), o_cols.new_zeros(kv_new * hd, d_in)
        record = ops.add_given_heads(
            model, i, q=zero_q, k=zero_kv, v=zero_kv, o=o_cols, optimizer=optimizer,
            unknown_optimizer=unknown_optimizer, example=example, policy=policy,
        )  # fmt: skip
        record.details["singular_values"] = [float(s) for s in sv]
        record.details["how"] = "GradMax (closed form, uniform attention of the new heads)"
        records.append(record)
    return records
