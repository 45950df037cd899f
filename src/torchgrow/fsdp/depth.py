"""Depth edits of sharded transformers: new blocks get shards of their own, under the same root."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..errors import GrowthInputError
from .gather import Gather, restore_snapshot, snapshot
from .state import plain_copy, state_of, states
from .width import check_output, output_of, require_example, run_stages


def _shard_like(new: nn.Module, sibling_group: Any) -> Any:
    """``fully_shard`` a new block with the mesh and policies of a sibling's group."""
    from torch.distributed.fsdp import fully_shard

    plain = {(id(m), n): p for m in new.modules() for n, p in m.named_parameters(recurse=False)}
    mesh = sibling_group.mesh_info.mesh
    fully_shard(
        new, mesh=mesh, reshard_after_forward=sibling_group.post_forward_mesh_info is not None,
        mp_policy=sibling_group.mp_policy, offload_policy=sibling_group.offload_policy,
    )  # fmt: skip
    state = state_of(new)
    pairs = [
        (fp.sharded_param, plain[(id(fp._module_info.module), fp._module_info.param_name)])
        for g in state._fsdp_param_groups
        for fp in g.fsdp_params
    ]
    return state, pairs


def _join_root(model: nn.Module, new_states: list[Any]) -> None:
    """Make new FSDP states children of the (lazily initialised) root: no new roots."""
    root = state_of(model)
    if root is None or root._is_root is None:
        return  # the root's first forward will find them
    names = {id(s): n for n, s in states(model)}
    root._state_ctx.all_states[:] = [s for _, s in states(model)]  # module order
    params = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    for state in new_states:
        state._is_root = False
        state._state_ctx, state._comm_ctx = root._state_ctx, root._comm_ctx
        for i, g in enumerate(state._fsdp_param_groups):
            g.comm_ctx = root._comm_ctx
            g._param_group_index, g._num_param_groups = i, len(state._fsdp_param_groups)
            g._module_fqn = names[id(state)]
            for fp in g.fsdp_params:
                fp._param_fqn = params.get(id(fp.sharded_param))
            g.lazy_init()


_STRUCTURE = ("_parameters", "_buffers", "_modules")


def _carry_back(pairs: list[tuple[nn.Module, nn.Module]]) -> None:
    """What the edit changed on the stand-ins of the old blocks (an attention's ``layer_idx``
    renumbered, say) made on the blocks themselves; hooks must not have changed."""
    from .state import fsdp_hook_ids

    for real, stand in pairs:
        fsdp_ids = fsdp_hook_ids(real)
        for k, v in stand.__dict__.items():
            if k in _STRUCTURE:
                continue
            if "hook" in k and isinstance(v, dict):
                had = [i for i in real.__dict__.get(k, {}) if i not in fsdp_ids]
                if list(v) != had:
                    raise GrowthInputError(
                        f"torchgrow.fsdp: the depth edit changed the hooks ({k}) of an existing "
                        "block, which cannot be carried to its sharded module"
                    )
            elif real.__dict__.get(k, _STRUCTURE) is not v:
                real.__dict__[k] = v


def _depth_edit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    sources: list[int],
    op: Callable[[], Any],
    atol: float,
) -> Any:
    from ..ops import find_layout
    from ..ops.tx_depth import _container

    example = require_example(model)
    parts = find_layout(model)
    stack = _container(model, parts)
    if state_of(stack) is not None:
        raise GrowthInputError(
            f"torchgrow.fsdp: {parts.container!r} itself is wrapped by fully_shard; wrap each "
            "block (and the root) instead, so that new blocks get shards of their own"
        )
    before = output_of(model, example)
    root = state_of(model)
    states_before = list(root._state_ctx.all_states) if root is not None else []
    old_blocks = [b.module for b in parts.blocks]
    kept = [stack, model, *(m for b in old_blocks for m in b.modules())]
    container = snapshot(root, kept) if root is not None else None
    sibling = state_of(old_blocks[sources[0]])
    if sibling is None or len(sibling._fsdp_param_groups) != 1:
        raise GrowthInputError(
            "torchgrow.fsdp grows depth when every block is wrapped by fully_shard on its own"
        )
    g = Gather(model, optimizer, [parts.blocks[i].name for i in sorted(set(sources))])
    g.gather()
    memo: dict[int, Any] = {}  # deep-copyable stand-ins sharing the blocks' tensors
    views = {id(plain_copy(b, _memo=memo, hooks=True)): b for b in old_blocks}
    pairs = [(m, memo[id(m)]) for b in old_blocks for m in b.modules() if id(m) in memo]
    result: list[Any] = []
    new_states: list[Any] = []

    def run() -> None:
        for i, b in enumerate(old_blocks):  # deep-copyable stand-ins during the edit
            stack._modules[str(i)] = memo[id(b)]
        try:
            result.append(op())
        finally:
            for key, m in list(stack._modules.items()):
                if id(m) in views:
                    stack._modules[key] = views[id(m)]
        _carry_back(pairs)

    def shard_new() -> None:
        g.reshard()
        group = sibling._fsdp_param_groups[0]
        for m in stack._modules.values():
            if state_of(m) is None:  # a new block
                state, pairs = _shard_like(m, group)
                new_states.append(state)
                for sp, p in pairs:
                    g._shard_extras(sp, p)
        _join_root(model, new_states)

    def rollback() -> None:
        g.rollback()
        if container is not None:
            restore_snapshot(container)
            root._state_ctx.all_states[:] = states_before

    stages = (
        run,
        shard_new,
        lambda: check_output(model, example, before, result[0], None, atol),
    )
    run_stages("a depth edit under FSDP", model, optimizer, stages, rollback)
    return result[0]


def insert_identity_block(
    model: nn.Module, index: int, *, source: int | None = None,
    optimizer: torch.optim.Optimizer | None = None, atol: float = 1e-5, **kwargs: Any,
) -> Any:  # fmt: skip
    """:func:`torchgrow.ops.insert_identity_block` on a sharded transformer.

    The source block's group is gathered, the copy is made and zeroed as in one
    process, and the new block is wrapped by ``fully_shard`` with its siblings'
    mesh and policies, under the same root. Its optimizer state, if any
    (``copy_state=True``), is sharded like its parameters.
    """
    from .. import ops
    from ..ops import find_layout

    n = len(find_layout(model).blocks)
    src = (max(index - 1, 0) if source is None else source) if isinstance(index, int) else 0
    src = src if isinstance(src, int) and 0 <= src < n else 0  # ops validates the arguments
    return _depth_edit(
        model, optimizer, [src],
        lambda: ops.insert_identity_block(
            model, index, source=source, optimizer=optimizer, verify=False, **kwargs
        ),
        atol,
    )  # fmt: skip


def stack_blocks(
    model: nn.Module, order: Iterable[int], *, optimizer: torch.optim.Optimizer | None = None,
    atol: float = 1e-5, **kwargs: Any,
) -> Any:  # fmt: skip
    """:func:`torchgrow.ops.stack_blocks` (G_stack, MIDAS, MSG's depth) on a sharded transformer:
    the copied blocks' groups are gathered and every copy gets shards of its own."""
    from .. import ops

    order = list(order)
    copied = sorted({i for j, i in enumerate(order) if i in order[:j]}) or [0]
    return _depth_edit(
        model, optimizer, copied,
        lambda: ops.stack_blocks(model, order, optimizer=optimizer, verify=False, **kwargs),
        atol,
    )  # fmt: skip
