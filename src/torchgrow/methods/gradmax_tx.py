"""GradMax on a transformer's FFN: torchgrow's extension of Evci et al. (2022) to transformers.

New FFN units get a zero fan-in (``up`` rows), so they output ``act(0) = 0`` and
the function is kept; their fan-out (``down`` columns) is chosen to maximise the
gradient of that zero fan-in: for a block whose FFN reads ``x`` and whose
``down`` output receives the gradient ``delta``, the fan-in gradient of a unit
with fan-out ``w`` is ``act'(0) * w^T M`` with ``M = sum over tokens of delta x^T``,
so the best ``k`` fan-outs of norm ``r`` are ``r`` times the top ``k`` left
singular vectors of ``M`` (the paper's closed form, per block). The paper grows
MLPs and convolutions; applying it to transformers' FFNs is torchgrow's own.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .. import ops
from ..errors import GrowthInputError
from ..how.base import target_norm
from ..how.gradmax import GradMax as _GradMaxHow

__all__ = ["gradmax_ffn"]


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
    inputs: dict[int, Tensor] = {}
    outputs: dict[int, Tensor] = {}
    handles = []
    for i in chosen:
        f = parts.blocks[i].ffn
        handles.append(
            f.up.register_forward_hook(lambda m, a, out, i=i: inputs.__setitem__(i, a[0].detach()))
        )
        handles.append(
            f.down.register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i, out))
        )
    try:
        with torch.enable_grad():
            loss = loss_fn()
            missing = [i for i in chosen if i not in outputs]
            if missing or not loss.requires_grad:
                raise GrowthInputError(
                    f"loss_fn() did not run the FFN of blocks {missing} with gradients"
                )
            grads = torch.autograd.grad(loss, [outputs[i] for i in chosen], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
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
