"""Gathering the FSDP groups an edit touches, and sharding them again around the new parameters."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import GrowthInputError
from .state import check_supported, full, internals, managed_modules, states

# Settings users (or FSDP's API) may change on a parameter group; a rebuilt group keeps them.
_GROUP_SETTINGS = (
    "comm_ctx",
    "_param_group_index",
    "_num_param_groups",
    "_module_fqn",
    "reduce_grads",
    "all_reduce_grads",
    "reshard_after_backward",
    "reduce_scatter_max_input_buffers",
    "gradient_divide_factor",
    "reduce_scatter_unused_params",
    "force_sum_reduction_for_comms",
    "unshard_async_op",
    "unshard_in_backward",
    "_all_gather_comm",
    "_reduce_scatter_comm",
    "_all_reduce_hook",
    "_all_reduce_hook_stream",
)


@dataclass
class _Saved:
    """What restores one group exactly: its modules' attributes and dicts, the state's groups."""

    state: Any
    groups: list[Any]
    modules: list[tuple[nn.Module, dict[str, Any], dict[str, tuple[dict, dict]]]] = field(
        default_factory=list
    )


def snapshot(state: Any, modules: Iterable[nn.Module]) -> _Saved:
    saved = _Saved(state, list(state._fsdp_param_groups))
    for m in modules:
        dicts = {k: (v, dict(v)) for k, v in m.__dict__.items() if isinstance(v, dict)}
        plain = {k: v for k, v in m.__dict__.items() if k not in dicts}
        saved.modules.append((m, plain, dicts))  # parameters, buffers, children, hooks...
    return saved


def _remove_state_dict_hooks(group: Any) -> None:
    for h in [
        *group._module_to_pre_save_state_dict_hook_handle.values(),
        *group._module_to_pre_load_state_dict_hook_handle.values(),
    ]:
        h.remove()
    group._module_to_pre_save_state_dict_hook_handle.clear()
    group._module_to_pre_load_state_dict_hook_handle.clear()


def restore_snapshot(saved: _Saved) -> None:
    for g in saved.state._fsdp_param_groups:
        if g not in saved.groups:  # a rebuilt group: its hooks go with it
            _remove_state_dict_hooks(g)
    for m, plain, dicts in saved.modules:
        for k in [k for k in m.__dict__ if k not in plain and k not in dicts]:
            del m.__dict__[k]
        m.__dict__.update(plain)
        for k, (d, contents) in dicts.items():  # the same dict objects, their old contents
            d.clear()
            d.update(contents)
            m.__dict__[k] = d
    saved.state._fsdp_param_groups = saved.groups
    for g in saved.groups:
        if not g._module_to_pre_save_state_dict_hook_handle and saved.state._is_root is not None:
            g._register_state_dict_hooks()


def _owned(t: Tensor, shard: Tensor) -> Tensor:
    """``t`` (a gathered tensor) detached, copied only if it shares memory with the shard."""
    t = t.detach()
    local = shard.to_local() if hasattr(shard, "to_local") else shard
    if t.untyped_storage().data_ptr() == local.untyped_storage().data_ptr():
        t = t.clone()  # one rank: the "gathered" tensor is the shard itself
    return t


class Gather:
    """The gathered view of some FSDP groups; :meth:`reshard` ends it, :meth:`rollback` undoes all."""

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None, names: Iterable[str]
    ):
        check_supported()
        self.model, self.optimizer = model, optimizer
        self.targets = self._groups_of(list(names))
        self.saved: list[_Saved] = []
        self.opt_groups = [list(g["params"]) for g in optimizer.param_groups] if optimizer else []
        self.opt_state: dict[Tensor, Any] = {}
        self.sharded: dict[Tensor, nn.Parameter] = {}  # after reshard: full -> sharded parameter

    def _groups_of(self, names: list[str]) -> list[tuple[Any, Any]]:
        """(state, group) owning any parameter of the named modules, in module order."""
        wanted: set[int] = set()
        for n in names:
            try:
                m = self.model.get_submodule(n)
            except AttributeError as e:
                raise GrowthInputError(f"torchgrow.fsdp: the model has no module {n!r}") from e
            wanted |= {id(p) for p in m.parameters()}
        out = []
        for _, state in states(self.model):
            for g in state._fsdp_param_groups:
                if any(id(fp.sharded_param) in wanted for fp in g.fsdp_params):
                    out.append((state, g))
        return out

    def gather(self) -> None:
        from torch.distributed.tensor import Shard

        for state, g in self.targets:
            if not g.is_sharded and state._training_state.name == "IDLE":
                g.reshard()  # the root keeps its parameters unsharded after a forward
            if not g.is_sharded or state._training_state.name != "IDLE":
                raise GrowthInputError(
                    "torchgrow.fsdp: grow between training steps, when every FSDP module is "
                    f"resharded (group {g._module_fqn!r} is {g._sharded_state.name})"
                )
            if any(fp.is_dtensor for fp in g.fsdp_params):
                raise GrowthInputError(
                    f"torchgrow.fsdp: {g._module_fqn!r} shards DTensor parameters (FSDP with "
                    "tensor parallelism); only plain parameters sharded by fully_shard can grow"
                )
            bad = [fp for fp in g.fsdp_params if fp.fsdp_placement != Shard(0)]
            if bad:
                raise GrowthInputError(
                    "torchgrow.fsdp grows parameters sharded on dim 0 (fully_shard's default); "
                    f"{len(bad)} parameter(s) of {g._module_fqn!r} use a custom shard_placement_fn"
                )
        for state, g in self.targets:
            self.saved.append(snapshot(state, managed_modules(g)))
        state_of_opt = self.optimizer.state if self.optimizer is not None else {}
        for _, g in self.targets:
            for fp in g.fsdp_params:
                sp = fp.sharded_param
                info = fp._module_info
                p = nn.Parameter(_owned(sp.full_tensor(), sp), requires_grad=sp.requires_grad)
                if sp.grad is not None:
                    p.grad = _owned(full(sp.grad), sp.grad)
                for mod, attr in [(info.module, info.param_name), *zip(
                    info.shared_modules, info.shared_param_names, strict=True
                )]:  # fmt: skip
                    mod._parameters[attr] = p
                if sp in state_of_opt:
                    self.opt_state[sp] = state_of_opt[sp]
                    state_of_opt[p] = {k: full(v) for k, v in state_of_opt.pop(sp).items()}
                self._swap_opt_param(sp, p)

    def _swap_opt_param(self, old: Tensor, new: Tensor) -> None:
        if self.optimizer is None:
            return
        for group in self.optimizer.param_groups:
            group["params"] = [new if q is old else q for q in group["params"]]

    def reshard(self) -> None:
        """Broadcast rank 0's edited values and rebuild every gathered group around them."""
        _, group_mod = internals()
        for (state, old), saved in zip(self.targets, self.saved, strict=True):
            modules = managed_modules(old)
            params = list(dict.fromkeys(p for m in modules for p in m.parameters(recurse=False)))
            if dist.is_initialized():
                with torch.no_grad():
                    for p in params:
                        dist.broadcast(p.data, src=0)
                        if p.grad is not None:
                            dist.broadcast(p.grad, src=0)
            for m in modules:
                m._is_fsdp_managed_module = True
                m._fsdp_use_orig_params = True
            new = group_mod.FSDPParamGroup(
                params, old.modules, old.mesh_info, old.post_forward_mesh_info, old.device,
                None, old.mp_policy, old.offload_policy,
            )  # fmt: skip
            for attr in _GROUP_SETTINGS:
                if hasattr(old, attr):
                    setattr(new, attr, getattr(old, attr))
            _remove_state_dict_hooks(old)
            state._fsdp_param_groups = [new if g is old else g for g in saved.groups]
            names = {id(p): n for n, p in self.model.named_parameters(remove_duplicate=False)}
            for fp in new.fsdp_params:
                fp._param_fqn = names.get(id(fp.sharded_param))
            if state._is_root is not None:  # lazily initialised already: the new group too
                new.lazy_init()
            for fp, p in zip(new.fsdp_params, params, strict=True):
                self._shard_extras(fp.sharded_param, p)
                self.sharded[p] = fp.sharded_param

    def _shard_extras(self, sp: nn.Parameter, p: Tensor) -> None:
        """The gradient and optimizer state of ``p`` sharded like its new parameter ``sp``."""
        from torch.distributed.tensor import distribute_tensor

        def shard(t: Tensor) -> Tensor:
            if t.dim() == 0 or t.shape != p.shape:
                if t.dim() != 0:
                    raise GrowthInputError(
                        f"torchgrow.fsdp: optimizer state of shape {tuple(t.shape)} for a "
                        f"parameter of shape {tuple(p.shape)}: only elementwise state can be "
                        "sharded like its parameter"
                    )
                return t
            return distribute_tensor(t.detach(), sp.device_mesh, sp.placements, src_data_rank=None)

        if p.grad is not None:
            sp.grad = shard(p.grad)
        self._swap_opt_param(p, sp)
        if self.optimizer is not None and p in self.optimizer.state:
            self.optimizer.state[sp] = {k: shard(v) if torch.is_tensor(v) else v
                                        for k, v in self.optimizer.state.pop(p).items()}  # fmt: skip

    def rollback(self) -> None:
        """Model, FSDP groups and optimizer exactly as before :meth:`gather`."""
        for saved in reversed(self.saved):
            restore_snapshot(saved)
        if self.optimizer is not None:
            old = {id(p) for g in self.opt_groups for p in g}
            for p in [p for p in self.optimizer.state if id(p) not in old]:
                del self.optimizer.state[p]
            self.optimizer.state.update(self.opt_state)
            for group, params in zip(self.optimizer.param_groups, self.opt_groups, strict=True):
                group["params"] = list(params)


@contextlib.contextmanager
def gathered(
    model: nn.Module, optimizer: torch.optim.Optimizer | None, modules: Iterable[str]
) -> Iterator[Gather]:
    """Within the block, the FSDP groups owning ``modules`` hold plain full parameters.

    Every rank must enter with the same ``modules``. Run only
    :mod:`torchgrow.ops` edits (no forward pass) inside; on exit the groups are
    sharded again around the edited parameters (rank 0's values), and if the
    block raised, everything is restored as it was. :func:`edit` adds the
    checks after the block.

    Parameters
    ----------
    model : nn.Module
        The model wrapped with ``fully_shard`` (per block and at the root).
    optimizer : torch.optim.Optimizer, optional
        Built on the sharded parameters; carried through the edit.
    modules : iterable of str
        Qualified names of the modules the edit touches.
    """
    g = Gather(model, optimizer, modules)
    try:
        g.gather()
        yield g
        g.reshard()
    except BaseException:
        g.rollback()
        raise
