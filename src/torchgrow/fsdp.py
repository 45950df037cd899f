"""Growing models sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``).

Under ``fully_shard`` every parameter is a ``DTensor`` sharded on dim 0 over a
device mesh, and a ``FSDPParamGroup`` per wrapped module owns the flat
buffers its all-gathers and reduce-scatters use. A growth edit changes the
shape of some parameters, which those buffers cannot follow. torchgrow edits
in place, locally:

1. **Gather** only the parameter groups that own the modules the edit
   touches: each of their parameters (with its gradient and optimizer state)
   becomes a plain full tensor on every rank; every other group stays sharded.
2. **Edit** with the ordinary :mod:`torchgrow.ops` functions, which carry the
   optimizer as they do in one process (old entries kept, new ones per the
   edit's policy).
3. **Broadcast** rank 0's edited values (one decision, bit-identical on every
   rank), then **shard again**: each group is rebuilt from the module's new
   parameters with the mesh, placements, mixed-precision and offload policies
   and communication settings of the old one, inside the *same* FSDP state,
   so the module stays under its original state, the root stays the only
   root and resharding after forward still happens. Optimizer state and
   gradients are sharded like their new parameters.
4. **Check**: a forward on the example input (collective) must run and, for
   a function-preserving edit, match the output before; then every rank's
   architecture and optimizer-state shapes are compared
   (:func:`torchgrow.distributed.agree`). If anything failed on any rank,
   every rank restores the model, its FSDP groups and the optimizer exactly as
   they were and raises, instead of hanging at the next collective.

The FSDP internals this relies on (``FSDPState``, ``FSDPParamGroup``) are
private to torch; :func:`check_supported` says when the installed torch does
not have them in the form this module was written for (torch 2.13).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .errors import GrowthInputError, TorchgrowError

__all__ = [
    "FSDPGrowthError",
    "add_heads",
    "check_supported",
    "edit",
    "gathered",
    "grow_ffn",
    "grow_hidden",
    "is_sharded",
    "load",
    "plain_mirror",
    "reshard_idle",
    "restore",
    "save",
    "widen",
]

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


class FSDPGrowthError(TorchgrowError, RuntimeError):
    """A growth edit under FSDP failed on some rank; every rank restored its model."""


def _internals() -> Any:
    """The private FSDP2 modules (imported lazily: torch.distributed may be absent)."""
    try:
        from torch.distributed.fsdp._fully_shard import _fsdp_param_group, _fsdp_state
    except ImportError as e:  # pragma: no cover - depends on the installed torch
        raise TorchgrowError(
            f"torchgrow.fsdp needs FSDP2 (torch.distributed.fsdp.fully_shard, torch >= 2.6): {e}"
        ) from e
    return _fsdp_state, _fsdp_param_group


def check_supported() -> None:
    """Raise :class:`~torchgrow.errors.TorchgrowError` if this torch lacks what the edit uses."""
    state_mod, group_mod = _internals()
    missing = [
        n
        for n, obj in (
            ("_get_module_fsdp_state", state_mod),
            ("FSDPParamGroup", group_mod),
        )
        if not hasattr(obj, n)
    ]
    if missing:  # pragma: no cover - depends on the installed torch
        raise TorchgrowError(
            f"torchgrow.fsdp: torch {torch.__version__} lacks {missing}; it was written for the "
            "FSDP2 internals of torch 2.13"
        )


def _state_of(module: nn.Module) -> Any:
    state_mod, _ = _internals()
    return state_mod._get_module_fsdp_state(module)


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` or one of its submodules was wrapped with ``fully_shard``."""
    return any(_state_of(m) is not None for m in model.modules())


def _states(model: nn.Module) -> list[tuple[str, Any]]:
    """(qualified name, FSDP state) of every wrapped module, in module order, each state once."""
    seen: set[int] = set()
    out = []
    for name, m in model.named_modules():
        s = _state_of(m)
        if s is not None and id(s) not in seen:
            seen.add(id(s))
            out.append((name, s))
    return out


def _managed_modules(group: Any) -> list[nn.Module]:
    """The modules whose own parameters a group manages: its modules' subtrees minus nested FSDP."""
    out: list[nn.Module] = []
    seen: set[int] = set()

    def visit(m: nn.Module, top: bool) -> None:
        if id(m) in seen or (not top and _state_of(m) is not None):
            return
        seen.add(id(m))
        out.append(m)
        for child in m.children():
            visit(child, False)

    for m in group.modules:
        visit(m, True)
    return out


@dataclass
class _Saved:
    """What restores one group exactly: its modules' attributes and dicts, the state's groups."""

    state: Any
    groups: list[Any]
    modules: list[tuple[nn.Module, dict[str, Any], dict[str, tuple[dict, dict]]]] = field(
        default_factory=list
    )


def _snapshot(state: Any, modules: Iterable[nn.Module]) -> _Saved:
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


def _restore(saved: _Saved) -> None:
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


def _is_dtensor(t: object) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def _full(t: Tensor) -> Tensor:
    return t.full_tensor() if _is_dtensor(t) else t


class _Gather:
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
        self.plain: list[list[nn.Parameter]] = []  # per target, the full parameters

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
        for _, state in _states(self.model):
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
            self.saved.append(_snapshot(state, _managed_modules(g)))
        state_of_opt = self.optimizer.state if self.optimizer is not None else {}
        for _, g in self.targets:
            full_params = []
            for fp in g.fsdp_params:
                sp = fp.sharded_param
                info = fp._module_info
                p = nn.Parameter(sp.full_tensor().detach().clone(), requires_grad=sp.requires_grad)
                if sp.grad is not None:
                    p.grad = _full(sp.grad).detach().clone()
                for mod, attr in [(info.module, info.param_name), *zip(
                    info.shared_modules, info.shared_param_names, strict=True
                )]:  # fmt: skip
                    mod._parameters[attr] = p
                full_params.append(p)
                if sp in state_of_opt:
                    self.opt_state[sp] = state_of_opt[sp]
                    state_of_opt[p] = {k: _full(v) for k, v in state_of_opt.pop(sp).items()}
                self._swap_opt_param(sp, p)
            self.plain.append(full_params)

    def _swap_opt_param(self, old: Tensor, new: Tensor) -> None:
        if self.optimizer is None:
            return
        for group in self.optimizer.param_groups:
            group["params"] = [new if q is old else q for q in group["params"]]

    def reshard(self) -> None:
        """Broadcast rank 0's edited values and rebuild every gathered group around them."""
        _, group_mod = _internals()
        for (state, old), saved in zip(self.targets, self.saved, strict=True):
            modules = _managed_modules(old)
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
            _restore(saved)
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
) -> Iterator[_Gather]:
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
    g = _Gather(model, optimizer, modules)
    try:
        g.gather()
        yield g
        g.reshard()
    except BaseException:
        g.rollback()
        raise


def reshard_idle(model: nn.Module) -> None:
    """Reshard every idle FSDP group (the root keeps its parameters unsharded after a forward)."""
    for _, state in _states(model):
        if state._training_state.name == "IDLE":
            for g in state._fsdp_param_groups:
                if not g.is_sharded:
                    g.reshard()


def _output(model: nn.Module, example: Any) -> Tensor:
    from .modes import eval_mode

    args, kwargs = example
    with torch.no_grad(), eval_mode(model):
        out = model(*args, **kwargs)
    reshard_idle(model)
    if isinstance(out, dict) or hasattr(out, "logits"):
        out = out["logits"] if isinstance(out, dict) else out.logits
    return out.detach().float()


def edit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    fn: Callable[[], Any],
    *,
    modules: Iterable[str],
    preserve: bool | None = None,
    atol: float = 1e-5,
) -> Any:
    """Run ``fn`` (torchgrow edits) on the gathered ``modules``, reshard, and check on every rank.

    The example input set with :func:`torchgrow.graph.set_example` is run
    before and after (a collective forward); the edit is kept only if it ran
    on every rank, the output is finite (and, when ``preserve``, within
    ``atol`` of the output before; ``None`` takes it from what the returned
    :class:`~torchgrow.ops.EditRecord` promised, ``details["preserving"]``) and every rank ends with the same
    architecture and optimizer-state shapes. Otherwise every rank restores
    the model, its FSDP groups and the optimizer and raises
    :class:`FSDPGrowthError` (or the failing rank's own error).

    Returns
    -------
    Any
        What ``fn`` returned.
    """
    from .distributed import agree
    from .graph import example_of

    example = example_of(model)
    if example is None:
        raise GrowthInputError(
            "torchgrow.fsdp.edit checks every edit on an example input: call "
            "torchgrow.graph.set_example(model, x) first (the same x on every rank)"
        )
    before = _output(model, example)
    g = _Gather(model, optimizer, modules)
    g.gather()  # collective; its checks give the same answer on every rank
    result: list[Any] = []

    def check() -> None:
        after = _output(model, example)
        if not bool(torch.isfinite(after).all()):
            raise FSDPGrowthError("the output after the edit is not finite")
        delta = float((after - before).abs().max()) if after.shape == before.shape else None
        promised = preserve
        if promised is None:
            details = getattr(result[0], "details", {})
            promised = bool(details.get("preserving", False))
        if promised and (delta is None or delta > atol):
            raise FSDPGrowthError(
                f"the edit should preserve the function but moved the output by {delta} "
                f"(atol {atol})"
            )

    # each stage ends in an agreement, before the next collective: a rank that failed
    # makes every rank roll back and raise instead of waiting at a mismatched collective
    for stage in (lambda: result.append(fn()), g.reshard, check):
        error: BaseException | None = None
        try:
            stage()
        except Exception as e:
            error = e
        try:
            agree("a growth edit under FSDP", model, optimizer, error=error)
        except BaseException:
            g.rollback()
            raise
    return result[0]


def _unit_modules(model: nn.Module, unit: Any) -> list[str]:
    names = [*unit.producers, *unit.per_channel, *(c.name for c in unit.consumers)]
    names += [q.rpartition(".")[0] for q, _, _ in unit.tensors]
    return list(dict.fromkeys(names))


def widen(
    model: nn.Module,
    name: str,
    k: int,
    *,
    fan_in: Any = None,
    fan_out: Any = None,
    optimizer: torch.optim.Optimizer | None = None,
    atol: float = 1e-5,
) -> Any:
    """:func:`torchgrow.ops.widen` on a model sharded with ``fully_shard``.

    Same arguments; the unit is found by the usual analysis (a recorded
    forward of the sharded model), only the FSDP groups owning its producers,
    per-channel layers and consumers are gathered, and the edit is checked
    on every rank (:func:`edit`). A zero ``fan_in`` or ``fan_out`` must keep
    the output within ``atol``.
    """
    from .graph import find_unit
    from .ops import widen as plain_widen

    unit = find_unit(model, name)
    zero = [t is None or (torch.is_tensor(t) and not bool(t.any())) for t in (fan_in, fan_out)]
    return edit(
        model,
        optimizer,
        lambda: plain_widen(
            model,
            name,
            k,
            fan_in=fan_in,
            fan_out=fan_out,
            optimizer=optimizer,
            verify=False,
            unit=unit,
        ),  # fmt: skip
        modules=_unit_modules(model, unit),
        preserve=any(zero),
    )


def _blocks_touched(model: nn.Module, block: int | None) -> list[str]:
    """The qualified names of the transformer blocks an edit of ``block`` (None: all) touches."""
    from .ops import find_layout

    parts = find_layout(model)
    chosen = parts.blocks if block is None else [parts.blocks[block]]
    return [b.name for b in chosen]


def grow_ffn(
    model: nn.Module, k: int, *, block: int | None = None,
    optimizer: torch.optim.Optimizer | None = None, atol: float = 1e-5, **kwargs: Any,
) -> Any:  # fmt: skip
    """:func:`torchgrow.ops.grow_ffn` on a sharded transformer: gathers the grown blocks only."""
    from . import ops

    return edit(
        model, optimizer,
        lambda: ops.grow_ffn(model, k, block=block, optimizer=optimizer, verify=False, **kwargs),
        modules=_blocks_touched(model, block), atol=atol,
    )  # fmt: skip


def add_heads(
    model: nn.Module, k: int, *, block: int | None = None,
    optimizer: torch.optim.Optimizer | None = None, atol: float = 1e-5, **kwargs: Any,
) -> Any:  # fmt: skip
    """:func:`torchgrow.ops.add_heads` on a sharded transformer: gathers the grown blocks only."""
    from . import ops

    return edit(
        model, optimizer,
        lambda: ops.add_heads(model, k, block=block, optimizer=optimizer, verify=False, **kwargs),
        modules=_blocks_touched(model, block), atol=atol,
    )  # fmt: skip


def grow_hidden(
    model: nn.Module, k: int, *, optimizer: torch.optim.Optimizer | None = None,
    atol: float = 1e-5, **kwargs: Any,
) -> Any:  # fmt: skip
    """:func:`torchgrow.ops.grow_hidden` on a sharded transformer (every group is gathered:
    the residual stream runs through all of them)."""
    from . import ops

    return edit(
        model, optimizer,
        lambda: ops.grow_hidden(model, k, optimizer=optimizer, verify=False, **kwargs),
        modules=[""], atol=atol,
    )  # fmt: skip


# ------------------------------------------------------------------ checkpoints of grown models

ARCHITECTURE_FILE = "torchgrow-architecture.pt"


def _plain_class(module: nn.Module) -> type:
    from torch.distributed.fsdp import FSDPModule

    cls = type(module)
    if issubclass(cls, FSDPModule):  # fully_shard's FSDP<cls>(FSDPModule, cls)
        return next(b for b in cls.__bases__ if b is not FSDPModule)
    return cls


def _meta(t: Tensor, memo: dict[int, Any]) -> Tensor:
    if id(t) not in memo:
        new = torch.empty(tuple(t.shape), dtype=t.dtype, device="meta")
        memo[id(t)] = nn.Parameter(new, t.requires_grad) if isinstance(t, nn.Parameter) else new
    return memo[id(t)]


def plain_mirror(module: nn.Module, _memo: dict[int, Any] | None = None) -> nn.Module:
    """A copy of ``module`` without FSDP: the original classes, no hooks, and ``meta`` tensors
    of the full (global) shapes; shared tensors stay shared. What an architecture record of a
    sharded model is made from."""
    memo: dict[int, Any] = {} if _memo is None else _memo
    if id(module) in memo:
        return memo[id(module)]
    new = object.__new__(_plain_class(module))
    memo[id(module)] = new
    d: dict[str, Any] = {}
    for k, v in module.__dict__.items():
        if k.startswith("__composable") or k.startswith("_fsdp") or k == "_is_fsdp_managed_module":
            continue
        if k == "_parameters":
            d[k] = {n: None if p is None else _meta(p, memo) for n, p in v.items()}
        elif k == "_buffers":
            d[k] = {n: None if b is None else _meta(b, memo) for n, b in v.items()}
        elif k == "_modules":
            d[k] = {n: None if c is None else plain_mirror(c, memo) for n, c in v.items()}
        elif "hook" in k and isinstance(v, dict):
            d[k] = type(v)()
        else:
            d[k] = v
    new.__dict__.update(d)
    return new


def save(
    folder: str | Any, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Save a (grown, sharded) model and its optimizer with ``torch.distributed.checkpoint``.

    Every rank writes its shards; rank 0 adds the architecture record
    (:func:`torchgrow.io.architecture_record` of :func:`plain_mirror`), so that
    :func:`restore` can build the model at its grown size on resume, with any
    number of ranks.
    """
    from pathlib import Path

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from .io import architecture_record

    folder = Path(folder)
    reshard_idle(model)
    record = architecture_record(plain_mirror(model))
    opts = [optimizer] if optimizer is not None else []
    msd, osd = get_state_dict(model, opts)
    state = {"model": msd, **({"optim": osd} if optimizer is not None else {})}
    dcp.save(state, checkpoint_id=str(folder))
    if not dist.is_initialized() or dist.get_rank() == 0:
        (folder / ARCHITECTURE_FILE).write_bytes(record)
    if dist.is_initialized():
        dist.barrier()


def restore(folder: str | Any, model: nn.Module, *, allow: Iterable[Any] = ()) -> list[str]:
    """Give a freshly built (plain, not yet sharded) ``model`` the architecture saved in
    ``folder``: "grow on resume". Then ``fully_shard`` it as before (or not) and :func:`load`.

    Returns the submodules replaced (see :func:`torchgrow.io.restore_architecture`).
    """
    from pathlib import Path

    from .io import restore_architecture

    if is_sharded(model):
        raise GrowthInputError(
            "torchgrow.fsdp.restore: call it on the model as built, before fully_shard: the "
            "grown modules it puts in must be sharded with the others"
        )
    record = (Path(folder) / ARCHITECTURE_FILE).read_bytes()
    return restore_architecture(model, record, allow=allow)


def load(
    folder: str | Any, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Load what :func:`save` wrote into ``model`` (sharded on any number of ranks, or plain in
    one process) and ``optimizer``, after :func:`restore` gave the model its grown size."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    opts = [optimizer] if optimizer is not None else []
    msd, osd = get_state_dict(model, opts)
    state = {"model": msd, **({"optim": osd} if optimizer is not None else {})}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(
        model, opts, model_state_dict=state["model"],
        optim_state_dict=state.get("optim", {}),
    )  # fmt: skip
