"""The Grower on a model sharded with ``fully_shard``: statistics through the sharded model, one
checked edit of the gathered units."""

from __future__ import annotations

import time
import types
from typing import Any

import torch
from torch import Tensor, nn

from .. import distributed
from ..batches import head_rows, split_batch
from ..errors import GrowthInputError, warn
from ..graph import GrowableUnit, analyse, example_of, set_example
from ..grower import EXAMPLE_ROWS, GrowthEvent, _block_shapes
from ..grower import Grower as _PlainGrower
from ..how import How, Init
from ..how.gradmax import GradMax
from ..ops.batch import edit_batch
from ..ops.optim_state import flush_subnormal_state
from ..stats import gather
from .gather import Gather
from .state import check_supported, is_dtensor, is_sharded
from .width import _unit_modules, check_output, output_of, require_example, run_stages

__all__ = ["Grower", "flush_subnormal_shards"]


def flush_subnormal_shards(optimizer: torch.optim.Optimizer | None) -> int:
    """:func:`torchgrow.ops.flush_subnormal_state` on each rank's own shards of the state.

    Sharded state entries (DTensors) are cleaned through their local tensors,
    without a collective: the flush is elementwise. Returns this rank's count.
    """
    if optimizer is None:
        return 0

    def local(t: Any) -> Any:
        return t.to_local() if is_dtensor(t) else t

    view = types.SimpleNamespace(
        state={local(p): {k: local(v) for k, v in st.items()} for p, st in optimizer.state.items()}
    )
    return flush_subnormal_state(view)  # type: ignore[arg-type]


class Grower(_PlainGrower):
    """:class:`torchgrow.Grower` for a model sharded with ``fully_shard`` (FSDP2).

    Same arguments and triggers; call :meth:`step` on every rank with the
    rank's own growth batch. A growth step then runs as follows:

    1. every rank's growth batch is gathered (the global batch, the same on
       every rank, as under DDP), and the analysis, the unit selection and
       the statistics (a forward and a backward to the consumers' outputs)
       run through the sharded model itself: no full copy of the model is
       made, and gradients are taken with :func:`torch.autograd.grad`, so no
       parameter's ``.grad`` changes;
    2. only the FSDP groups owning the selected units' layers are gathered;
       the initialiser computes the new weights from the statistics and the
       gathered layers, and :func:`torchgrow.ops.widen` edits them, carrying
       the optimizer;
    3. rank 0's new values are sharded again on every rank, and the step is
       checked as every edit of :mod:`torchgrow.fsdp` is: a forward on the
       example (within ``atol`` of the output before when every new unit has
       a zero fan-in or fan-out) and every rank's architecture and optimizer
       shapes. Anything failing on any rank rolls every rank back and raises.

    Initialisers that need the whole model (GradMax's iterative solver, its
    trial copies, NeST's neuron scores) are refused with that reason: their
    layers are not gathered. Each event's ``max_abs_delta`` is the checked
    output change on the example; the gradient norms are those the
    initialiser knows exactly (GradMax's closed form), else ``None``.

    An optimizer ``policy`` (:class:`torchgrow.ops.OptimizerPolicy`) applies
    as in one process: ``state="reset"`` drops the grown parameters' state
    before it is sharded; a re-warm's masks of new entries are sharded like
    their parameters, and each rank blends its own shard's new entries.

    Parameters
    ----------
    model : nn.Module
        The model, with ``fully_shard`` applied (per block and at the root).
    optimizer : torch.optim.Optimizer, optional
        Built on the sharded parameters; carried through every edit.
    atol : float
        Tolerance of the check of a function-preserving step.
    **kwargs
        ``when``, ``where``, ``how``, ``size``, ``loss_fn``, ``measure``,
        ``unknown_optimizer``, ``flush_subnormals_every``: as for
        :class:`torchgrow.Grower`; the flush cleans each rank's own shards, every
        ``shard_flush_every`` steps (the attribute it is kept in).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        atol: float = 1e-5,
        **kwargs: Any,
    ) -> None:
        check_supported()
        if not is_sharded(model):
            raise GrowthInputError(
                "torchgrow.fsdp.Grower grows a model sharded with fully_shard; this model has no "
                "FSDP state: use torchgrow.Grower"
            )
        # the plain step would flush DTensors whole: this grower flushes each rank's shards
        self.shard_flush_every = kwargs.pop("flush_subnormals_every", 100)
        super().__init__(model, optimizer, flush_subnormals_every=None, **kwargs)
        self.atol = float(atol)

    @classmethod
    def of(cls, grower: _PlainGrower, *, atol: float = 1e-5) -> Grower:
        """The FSDP version of ``grower``, a :class:`torchgrow.Grower` built on the sharded
        model, for instance by a method (``fsdp.Grower.of(methods.GradMax(model, opt))``):
        the same model, optimizer, policies (and their state, such as the initial widths a
        ``Fraction`` size fixed), counters, events and description."""
        if not isinstance(grower, _PlainGrower):
            raise GrowthInputError(f"expected a torchgrow.Grower, got {type(grower).__name__}")
        new = cls(
            grower.model,
            grower.optimizer,
            atol=atol,
            when=grower.when,
            where=grower.where,
            how=grower.how,
            size=grower.size,
            loss_fn=grower.loss_fn,
            measure=grower.measure,
            unknown_optimizer=grower.unknown_optimizer,
            flush_subnormals_every=grower.flush_subnormals_every,
            policy=grower.policy,
        )
        new.state, new.events = grower.state, list(grower.events)
        if hasattr(grower, "description"):
            new.description = grower.description
        return new

    def step(self, batch: object = None, loss_fn: Any = None) -> list[GrowthEvent]:
        """Count one optimizer step; grow on the global growth batch if the trigger fires
        (see :meth:`torchgrow.Grower.step`)."""
        every = self.shard_flush_every
        if every is not None and self.state.events and (self.state.step + 1) % every == 0:
            flush_subnormal_shards(self.optimizer)
        return super().step(batch, loss_fn)

    def grow(self, batch: object, loss_fn: Any = None) -> list[GrowthEvent]:
        """Grow now, on every rank (a collective): see the class description."""
        loss_fn = loss_fn or self.loss_fn
        batch = distributed.gather_batch(batch)
        x, _ = split_batch(batch)
        rows = head_rows(x, EXAMPLE_ROWS)
        if example_of(self.model) is None and rows is not None:
            set_example(self.model, *rows[0], **rows[1])
        example = require_example(self.model)
        wiring = analyse(self.model)
        units = self.where.select(list(wiring.units), self.state)
        if not units:
            warn("growth step selected no unit: nothing grows")
            return []
        _require_local_init(self.how, self.model, units)
        start = time.perf_counter()
        ks = {u.name: self.size.units(u) for u in units}
        stats = (
            gather(self.model, batch, loss_fn, units, self.how.needs) if self.how.needs else None
        )
        names = list(dict.fromkeys(n for u in units for n in _unit_modules(self.model, u)))
        before = output_of(self.model, example)
        g = Gather(self.model, self.optimizer, names)
        g.gather()
        events: list[GrowthEvent] = []
        delta: list[float] = []
        stages = (
            lambda: events.extend(self._edit(wiring, units, ks, stats, start)),
            g.reshard,
            lambda: delta.append(
                check_output(self.model, example, before, None, _preserving(events), self.atol)
            ),
        )
        stages = (*stages[:2], lambda: self._shard_policy(g), stages[2])

        def rollback() -> None:
            g.rollback()
            if self.policy is not None:
                self.policy.stop()  # a re-warm begun by this step names discarded tensors

        run_stages("a growth step under FSDP", self.model, self.optimizer, stages, rollback)
        for ev in events:
            ev.max_abs_delta = delta[0]
            if self.measure and all(
                k in ev.info for k in ("grad_norm_fan_in", "grad_norm_fan_out")
            ):
                ev.grad_norm_fan_in = ev.info["grad_norm_fan_in"]
                ev.grad_norm_fan_out = ev.info["grad_norm_fan_out"]
        self.state.events += 1
        self.events.extend(events)
        return events

    def _edit(
        self,
        wiring: Any,
        units: list[GrowableUnit],
        ks: dict[str, int],
        stats: Any,
        start: float,
    ) -> list[GrowthEvent]:
        """Initialise every unit from the model before the step, then widen each (gathered)."""
        shapes = {u.name: _block_shapes(self.model, u, ks[u.name]) for u in units}
        inits: dict[str, Init] = {
            u.name: self.how.init(u, ks[u.name], stats, self.model) for u in units
        }
        prep = (time.perf_counter() - start) / len(units)
        events = []
        with edit_batch(
            self.model, self.optimizer, unknown_optimizer=self.unknown_optimizer, verify=False,
            policy=self.policy,
        ):  # fmt: skip
            for u in units:  # each edit checked once for the whole step, on every rank
                event, _, init = self._widen_unit(
                    wiring, u, ks[u.name], inits[u.name], shapes[u.name], prep, verify=False
                )
                event.info["preserving"] = _zero_side(init)
                events.append(event)
        return events

    def _shard_policy(self, g: Gather) -> None:
        """A re-warm begun by this step, moved onto the sharded parameters: each mask of new
        entries sharded like its parameter, keyed by this rank's local shard (which the
        optimizer updates in place)."""
        policy = self.policy
        if policy is None or not policy.rewarming:
            return
        from torch.distributed.tensor import distribute_tensor

        masks = {}
        for p, mask in policy._masks.items():
            sp = g.sharded.get(p)
            if sp is None or not is_dtensor(sp):
                masks[p] = mask
                continue
            local = distribute_tensor(mask, sp.device_mesh, sp.placements, src_data_rank=None)
            masks[sp.to_local()] = local.to_local()
        policy._masks = masks


def _preserving(events: list[GrowthEvent]) -> bool:
    """Whether the step promised to keep the function: every new unit has a zero side."""
    return all(ev.info["preserving"] for ev in events)


def _require_local_init(how: How, model: nn.Module, units: list[GrowableUnit]) -> None:
    """Refuse, before anything changes, an initialiser that would run more of the model than the
    gathered units: anything needing statistics but GradMax's closed forms."""
    if not how.needs:
        return
    if isinstance(how, GradMax):
        modules = dict(model.named_modules())
        solvers = {u.name: how._kind(u, modules) for u in units}
        other = {n: k for n, k in solvers.items() if k not in ("dense", "conv")}
        if not other or (how.mixed == "random" and set(other.values()) == {"mixed"}):
            return  # closed forms, or the random fall-back, which needs no statistics
        raise GrowthInputError(
            "torchgrow.fsdp.Grower: GradMax needs its subspace iteration for "
            + ", ".join(f"{n!r} ({k})" for n, k in other.items())
            + ", which runs trial copies of the whole model; under FSDP only the grown units' "
            "layers are gathered. Select units with one producer and one consumer "
            "(where.Layers([...])), or grow these with how.Random"
        )
    raise GrowthInputError(
        f"torchgrow.fsdp.Grower: {type(how).__name__} is not supported under FSDP (it needs "
        f"statistics {sorted(how.needs)} beyond GradMax's closed forms); use how.GradMax on "
        "single pairs, how.Random or how.Zero"
    )


def _zero_side(init: Init) -> bool:
    """Whether every new unit of ``init`` has an all-zero fan-in or fan-out (or none given)."""

    def zero(blocks: dict[str, Tensor]) -> bool:
        return not blocks or all(not bool(t.any()) for t in blocks.values() if t is not None)

    return zero(init.fan_in) or zero(init.fan_out)
