"""Depth edits of transformers: insert an identity block, or restack the blocks.

* :func:`insert_identity_block` puts a copy of a block at any position with its
  attention output and FFN down projections zeroed (weights and biases): in a
  pre-LN stack the new block adds zero to the residual stream, so the function is
  kept (LEMON's and bert2BERT's inserted layer).
* :func:`stack_blocks` rebuilds the stack from a list of source indices: G_stack
  repeats the whole stack (:func:`g_stack_order`), MIDAS copies the middle
  (:func:`midas_order`), interpolation copies each block next to itself
  (:func:`interleave_order`). These change the function; the edit records
  ``max |dout|`` on the example input.

The model's own depth bookkeeping follows (Hugging Face's ``config.num_hidden_layers``,
which Llama's forward slices the stack by, and each attention's ``layer_idx``).
New parameters join the optimizer with zero state, or with a copy of their
source's state (``copy_state=True``).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import GrowthInputError
from .edit import EditRecord
from .optim_policy import OptimizerPolicy
from .ramp import Ramp, adopt_copied_masks
from .tx_commit import run_edit
from .tx_layout import BlockParts, Steps, TransformerParts, find_layout

__all__ = [
    "insert_identity_block",
    "stack_blocks",
    "g_stack_order",
    "midas_order",
    "interleave_order",
]


def g_stack_order(n_layer: int, g: int = 4) -> list[int]:
    """G_stack's order: the whole stack repeated ``g`` times (``[0..L-1] * g``; the paper's g=4)."""
    return list(range(n_layer)) * g


def midas_order(n_layer: int) -> list[int]:
    """MIDAS's step: a copy of the middle block (``L // 2``) inserted right after it."""
    mid = n_layer // 2
    return [*range(mid + 1), mid, *range(mid + 1, n_layer)]


def interleave_order(n_layer: int) -> list[int]:
    """Each block followed by its copy (``[0, 0, 1, 1, ...]``; LEMON's and MSG's interpolation)."""
    return [i for i in range(n_layer) for _ in range(2)]


def _zero_output(b: BlockParts) -> None:
    with torch.no_grad():
        for proj in (b.attn.o, b.ffn.down):
            proj.weight.zero_()
            if getattr(proj, "bias", None) is not None:
                proj.bias.zero_()


def _container(model: nn.Module, parts: TransformerParts) -> nn.ModuleList:
    stack = model.get_submodule(parts.container)
    if not isinstance(stack, nn.ModuleList):
        raise GrowthInputError(f"{parts.container!r} is a {type(stack).__name__}, not a ModuleList")
    return stack


def _restack(
    model: nn.Module,
    parts: TransformerParts,
    new_blocks: list[nn.Module],
    sources: dict[nn.Module, nn.Module],
    record: EditRecord,
    *,
    preserve: bool,
    optimizer: torch.optim.Optimizer | None,
    unknown_optimizer: str,
    copy_state: bool,
    verify: bool,
    example: Tensor | None,
    extra: Steps = (),
    policy: OptimizerPolicy | None = None,
) -> EditRecord:
    stack = _container(model, parts)
    old_modules = stack._modules
    new_modules = OrderedDict((str(i), m) for i, m in enumerate(new_blocks))

    def do() -> None:
        for m in new_blocks:
            m.train(stack.training)
        stack._modules = new_modules

    def undo() -> None:
        stack._modules = old_modules

    anchor = next(iter(parts.blocks[0].module.parameters()), None)
    if copy_state and policy is not None:
        raise GrowthInputError(f"{record.op}: pass copy_state=True or policy=, not both")
    if copy_state:
        policy = OptimizerPolicy("copy")
    params = {
        p_new: p_src
        for new, src in sources.items()
        for p_new, p_src in zip(new.parameters(), src.parameters(), strict=True)
    }
    run_edit(
        model, [], [(do, undo), *parts.set_depth(new_blocks), *extra], record,
        optimizer=optimizer, unknown_optimizer=unknown_optimizer, preserve=preserve,
        verify=verify, example=example, policy=policy, anchor=anchor, sources=params,
    )  # fmt: skip
    record.details["depth_after"] = len(new_blocks)
    return record


def insert_identity_block(
    model: nn.Module,
    index: int,
    *,
    source: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    unknown_optimizer: str = "raise",
    copy_state: bool = False,
    verify: bool = True,
    example: Tensor | None = None,
    policy: OptimizerPolicy | None = None,
) -> EditRecord:
    """Insert, at position ``index``, a copy of block ``source`` whose output projections are zero.

    In a pre-LN transformer the new block computes ``x + 0 + 0``: the function is
    preserved exactly, and the copied norms, queries, keys, values and FFN input
    weights give the block something to train from (the output projections get
    gradients at once, since their inputs are non-zero).

    Parameters
    ----------
    model : nn.Module
        A transformer with a registered layout (pre-LN).
    index : int
        Position of the new block, ``0 <= index <= n_layer``.
    source : int, optional
        The block copied (default ``index - 1``, or 0 when inserting first).
    optimizer : torch.optim.Optimizer, optional
        Carried along; the new block's parameters join the first block's group.
    unknown_optimizer : {"raise", "reset"}
        See :func:`torchgrow.ops.widen`.
    copy_state : bool
        Give the new parameters a copy of the source's optimizer state (default: none);
        the same as ``policy=OptimizerPolicy("copy")``.
    verify : bool
        With an example input, roll back unless the outputs stay within the tolerance.
    example : Tensor, optional
        Input to verify on (default the model's example input, if set).
    policy : OptimizerPolicy, optional
        What the optimizer does with the new block (:class:`torchgrow.ops.OptimizerPolicy`).

    Returns
    -------
    EditRecord
        ``record.added`` lists the new parameters.
    """
    parts = find_layout(model)
    n = len(parts.blocks)
    if not parts.pre_ln:
        raise GrowthInputError("insert_identity_block needs pre-LN blocks (zero output = identity)")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= n:
        raise GrowthInputError(f"insert_identity_block: index must be in [0, {n}], got {index!r}")
    source = max(index - 1, 0) if source is None else source
    if isinstance(source, bool) or not isinstance(source, int) or not 0 <= source < n:
        raise GrowthInputError(f"insert_identity_block: source must be in [0, {n}), got {source!r}")
    src = parts.blocks[source].module
    new = copy.deepcopy(src)
    adopt_copied_masks(new)
    blocks = [b.module for b in parts.blocks]
    blocks.insert(index, new)
    _zero_output(_layout_of_copy(model, parts, new, source).blocks[source])
    record = EditRecord(
        op="insert_identity_block",
        target=parts.container,
        modules=[f"{parts.container}.{index}"],
        details={"source": source, "index": index},
    )
    return _restack(
        model, parts, blocks, {new: src}, record, preserve=True, optimizer=optimizer,
        unknown_optimizer=unknown_optimizer, copy_state=copy_state, verify=verify, example=example,
        policy=policy,
    )  # fmt: skip


def _layout_of_copy(
    model: nn.Module, parts: TransformerParts, new: nn.Module, source: int
) -> TransformerParts:
    """The layout read with ``new`` in the place of block ``source`` (to find its projections)."""
    stack = _container(model, parts)
    old = stack._modules[str(source)]
    stack._modules[str(source)] = new
    try:
        return find_layout(model)
    finally:
        stack._modules[str(source)] = old


def stack_blocks(
    model: nn.Module,
    order: Sequence[int],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    unknown_optimizer: str = "raise",
    copy_state: bool = False,
    verify: bool = True,
    example: Tensor | None = None,
    ramp: Ramp | None = None,
    policy: OptimizerPolicy | None = None,
) -> EditRecord:
    """Rebuild the stack from source indices: block ``i`` of the result is a copy of ``order[i]``.

    The first use of each old block is the block itself (its parameters and
    optimizer state untouched); later uses are deep copies. Every old block must
    appear. This does not preserve the function; ``details["max_abs_dout"]``
    records how far the outputs moved on the example input.

    Parameters
    ----------
    model : nn.Module
        A transformer with a registered layout.
    order : sequence of int
        Source index of each block of the new stack (:func:`g_stack_order`,
        :func:`midas_order`, :func:`interleave_order`).
    optimizer, unknown_optimizer, copy_state, verify, example, policy
        As in :func:`insert_identity_block`.
    ramp : Ramp, optional
        MSG's masked growth: each copy computes ``x + m * (block(x) - x)`` with ``m``
        the ramp's value, so the function is kept at ``m = 0`` (then the edit is
        verified as preserving).

    Returns
    -------
    EditRecord
        ``details["order"]`` is the order used.
    """
    parts = find_layout(model)
    n = len(parts.blocks)
    order = list(order)
    bad = [i for i in order if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n]
    if bad or not order:
        raise GrowthInputError(
            f"stack_blocks: order must list block indices in [0, {n}), got {order}"
        )
    missing = sorted(set(range(n)) - set(order))
    if missing:
        raise GrowthInputError(f"stack_blocks: blocks {missing} are missing from the order {order}")
    used: set[int] = set()
    blocks, sources = [], {}
    for i in order:
        src = parts.blocks[i].module
        if i in used:
            new = copy.deepcopy(src)
            adopt_copied_masks(new)
            sources[new] = src
            blocks.append(new)
        else:
            used.add(i)
            blocks.append(src)
    record = EditRecord(
        op="stack_blocks",
        target=parts.container,
        modules=[f"{parts.container}.{j}" for j in range(len(blocks))],
        details={"order": order},
    )
    masks = [] if ramp is None else [step for new in sources for step in ramp.mask_block(new)]
    return _restack(
        model, parts, blocks, sources, record, preserve=ramp is not None, optimizer=optimizer,
        unknown_optimizer=unknown_optimizer, copy_state=copy_state, verify=verify, example=example,
        extra=masks, policy=policy,
    )  # fmt: skip
