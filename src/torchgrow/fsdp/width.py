"""Growth edits of sharded models: gather, edit with torchgrow.ops, shard again, check on every rank."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import GrowthInputError
from .gather import Gather
from .state import FSDPGrowthError, reshard_idle


def output_of(model: nn.Module, example: Any) -> Tensor:
    """The model's output on ``example`` that edits are checked on: its ``logits`` when it has
    them (Hugging Face outputs), else its first floating-point tensor (an encoder's hidden
    states)."""
    from ..graph.record import tensors_in
    from ..modes import eval_mode

    args, kwargs = example
    with torch.no_grad(), eval_mode(model):
        out = model(*args, **kwargs)
    reshard_idle(model)
    logits = out.get("logits") if isinstance(out, dict) else getattr(out, "logits", None)
    if logits is None:
        logits = next((t for t in tensors_in(out) if t.is_floating_point()), None)
    if logits is None:
        raise FSDPGrowthError(
            f"the model's output on the example ({type(out).__name__}) holds no floating-point "
            "tensor to check the edit on"
        )
    return logits.detach().float()


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
    example = require_example(model)
    before = output_of(model, example)
    g = Gather(model, optimizer, modules)
    g.gather()  # collective; its checks give the same answer on every rank
    result: list[Any] = []
    stages = (
        lambda: result.append(fn()),
        g.reshard,
        lambda: check_output(model, example, before, result[0], preserve, atol),
    )
    run_stages("a growth edit under FSDP", model, optimizer, stages, g.rollback)
    return result[0]


def require_example(model: nn.Module) -> Any:
    """The model's example input, which every checked edit under FSDP runs."""
    from ..graph import example_of

    example = example_of(model)
    if example is None:
        raise GrowthInputError(
            "torchgrow.fsdp checks every edit on an example input: call "
            "torchgrow.graph.set_example(model, x) first (the same x on every rank)"
        )
    return example


def check_output(
    model: nn.Module, example: Any, before: Tensor, record: Any, preserve: bool | None, atol: float
) -> float | None:
    """Raise unless the output is finite and, if the edit preserves (``preserve``, or when
    ``None`` what ``record`` promised), within ``atol`` of ``before``; return the output's
    largest change (``None`` when its shape changed)."""
    after = output_of(model, example)
    if not bool(torch.isfinite(after).all()):
        raise FSDPGrowthError("the output after the edit is not finite")
    delta = float((after - before).abs().max()) if after.shape == before.shape else None
    if preserve is None:
        preserve = bool(getattr(record, "details", {}).get("preserving", False))
    if preserve and (delta is None or delta > atol):
        raise FSDPGrowthError(
            f"the edit should preserve the function but moved the output by {delta} (atol {atol})"
        )
    return delta


def run_stages(
    what: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    stages: Iterable[Callable[[], Any]],
    rollback: Callable[[], None],
) -> None:
    """Run ``stages``, each ending in an agreement of every rank, before the next collective:
    a rank that failed makes every rank ``rollback`` and raise instead of waiting forever at
    a mismatched collective."""
    from ..distributed import agree

    # what a committed edit changed in a Hugging Face config (widths, depth, layer types)
    configs = {id(c): c for m in model.modules() if (c := getattr(m, "config", None)) is not None}
    saved = [(c, dict(vars(c))) for c in configs.values() if hasattr(c, "__dict__")]
    for stage in stages:
        error: BaseException | None = None
        try:
            stage()
        except Exception as e:
            error = e
        try:
            agree(what, model, optimizer, error=error)
        except BaseException:
            rollback()
            for config, attributes in saved:
                vars(config).clear()
                vars(config).update(attributes)
            raise


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
    from ..graph import find_unit
    from ..ops import widen as plain_widen

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
    from ..ops import find_layout

    parts = find_layout(model)
    chosen = parts.blocks if block is None else [parts.blocks[block]]
    return [b.name for b in chosen]


def _block_edit(op: Callable[..., Any], model: nn.Module, k: int, block: int | None,
                optimizer: Any, atol: float, kwargs: dict[str, Any]) -> Any:  # fmt: skip
    return edit(
        model, optimizer,
        lambda: op(model, k, block=block, optimizer=optimizer, verify=False, **kwargs),
        modules=_blocks_touched(model, block), atol=atol,
    )  # fmt: skip


def grow_ffn(
    model: nn.Module, k: int, *, block: int | None = None,
    optimizer: torch.optim.Optimizer | None = None, atol: float = 1e-5, **kwargs: Any,
) -> Any:  # fmt: skip
    """:func:`torchgrow.ops.grow_ffn` on a sharded transformer: gathers the grown blocks only."""
    from .. import ops

    return _block_edit(ops.grow_ffn, model, k, block, optimizer, atol, kwargs)


def add_heads(
    model: nn.Module, k: int, *, block: int | None = None,
    optimizer: torch.optim.Optimizer | None = None, atol: float = 1e-5, **kwargs: Any,
) -> Any:  # fmt: skip
    """:func:`torchgrow.ops.add_heads` on a sharded transformer: gathers the grown blocks only."""
    from .. import ops

    return _block_edit(ops.add_heads, model, k, block, optimizer, atol, kwargs)


def grow_hidden(
    model: nn.Module, k: int, *, optimizer: torch.optim.Optimizer | None = None,
    atol: float = 1e-5, **kwargs: Any,
) -> Any:  # fmt: skip
    """:func:`torchgrow.ops.grow_hidden` on a sharded transformer (every group is gathered:
    the residual stream runs through all of them)."""
    from .. import ops

    return edit(
        model, optimizer,
        lambda: ops.grow_hidden(model, k, optimizer=optimizer, verify=False, **kwargs),
        modules=[""], atol=atol,
    )  # fmt: skip
