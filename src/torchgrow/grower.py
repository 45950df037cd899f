"""The engine: plugs growth into any training loop.

.. code-block:: python

    grower = torchgrow.Grower(model, optimizer, when=Every(500), where=AllAtOnce(),
                              how=Random(), size=Units(4))
    for x, y in loader:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        events = grower.step((x, y), loss_fn)      # grows when `when` fires
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed
from .batches import head_rows, split_batch
from .errors import GrowthInputError, require_int, warn
from .graph import GrowableUnit, Wiring, analyse, example_of, growable_units, set_example
from .growth_event import GrowthEvent, LossFn, default_loss
from .how import How, Init, Zero
from .measure import forward_eval, measure_gradients
from .ops.batch import edit_batch
from .ops.followers import follow
from .ops.optim_policy import OptimizerPolicy
from .ops.optim_state import flush_subnormal_state
from .ops.registry import lookup
from .ops.units import shrink, widen
from .size import Size, Units
from .stats import Statistics, gather
from .when import GrowthState, When
from .where import AllAtOnce, Where

__all__ = ["Grower", "GrowthEvent"]


def _block_shapes(model: nn.Module, unit: GrowableUnit, k: int) -> dict[str, tuple[int, ...]]:
    """Expected fan-in (per producer) and fan-out (per consumer) shapes for ``k`` new units
    (``unit`` as it is now)."""
    shapes = {}
    for p in unit.producers:
        m = model.get_submodule(p)
        shapes[p] = tuple(lookup(m).fan_in_shape(m, k))
    for c in unit.consumers:
        m = model.get_submodule(c.name)
        shapes[c.name] = tuple(lookup(m).fan_out_shape(m, k, c.factor))
    return shapes


def _pad_to(block: Tensor | None, before: tuple[int, ...], now: tuple[int, ...]) -> Tensor | None:
    """Zero-pad ``block`` from the shape expected before the step to the shape expected now.

    In an all-at-once step every unit's init is computed from the model as it
    was before the step. Once an earlier unit has grown, a later unit's
    producer may have new inputs and its consumer new outputs; the weights
    between the new units of both start at zero. Only a block that had the
    right shape before the step is padded: a wrong block is left for ``widen``
    to report.
    """
    if block is None or tuple(block.shape) != before or before == now:
        return block
    pad: list[int] = []
    for b, s in reversed(list(zip(before, now, strict=True))):
        pad += [0, s - b]
    return F.pad(block, pad)


def _fit_init(
    model: nn.Module, unit: GrowableUnit, k: int, init: Init, before: dict[str, tuple[int, ...]]
) -> Init:
    """``init`` with its blocks padded to the unit's current shapes (see :func:`_pad_to`)."""
    now = _block_shapes(model, unit, k)

    def fit(name: str, t: Tensor | None) -> Tensor | None:
        if name not in before or name not in now:
            return t
        return _pad_to(t, before[name], now[name])

    return Init(
        fan_in={p: fit(p, t) for p, t in init.fan_in.items()},
        fan_out={c: fit(c, t) for c, t in init.fan_out.items()},
        info=init.info,
    )


EXAMPLE_ROWS = 4
"""Rows of the first growth batch kept as the model's example input (see ``graph.set_example``)."""


class Grower:
    """Grows a model during training: ``when`` fires, ``where`` picks units, ``how`` initialises.

    Parameters
    ----------
    model : nn.Module
        The model, edited in place.
    optimizer : torch.optim.Optimizer, optional
        Carried across every edit (state kept, new entries zero).
    when : When
        The trigger (see :mod:`torchgrow.when`).
    where : Where, optional
        Unit selection (default :class:`~torchgrow.where.AllAtOnce`).
    how : How, optional
        Initialiser (default :class:`~torchgrow.how.Zero`).
    size : Size, optional
        Units per grown unit per step (default ``Units(1)``).
    loss_fn : callable, optional
        Default loss for statistics (default: cross-entropy for class labels, MSE otherwise).
    measure : bool or "full"
        What each :class:`GrowthEvent` reports. ``True``: max |Δ output| on the
        first ``EXAMPLE_ROWS`` rows of the growth batch (read off the forward
        that verifies the step), and the new weights' gradient norms from the
        initialiser where it knows them exactly (GradMax's closed form between
        activations of slope 1 at 0), else from one forward+backward on the
        growth batch. ``"full"``: both on the whole growth batch (two eval
        forwards and a forward+backward). ``False``: neither.
    unknown_optimizer : {"raise", "reset"}
        See :func:`torchgrow.ops.widen`.
    flush_subnormals_every : int or None
        Every this many steps, :meth:`step` sets the optimizer's subnormal
        state entries to 0 (:func:`torchgrow.ops.flush_subnormal_state`): the
        momentum of grown units that died decays into subnormal floats, which
        make every later optimizer step several times slower on CPUs. ``None``
        turns it off.
    policy : OptimizerPolicy, optional
        What each growth step does to the optimizer beyond carrying it
        (:class:`torchgrow.ops.OptimizerPolicy`): ``state="reset"`` drops the
        grown parameters' state, ``rewarm_steps=N`` re-warms the new entries'
        updates over ``N`` steps; applied once per step to every parameter it
        replaced. Default: the carry alone (new entries' state zero).
    followers : sequence, optional
        What else holds the model and must follow every edit: further
        optimizers, LR schedulers, averaged copies (``AveragedModel``, EMAs).
        See :meth:`follow`.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        when: When,
        where: Where | None = None,
        how: How | None = None,
        size: Size | None = None,
        loss_fn: LossFn | None = None,
        measure: bool | str = True,
        unknown_optimizer: str = "raise",
        flush_subnormals_every: int | None = 100,
        policy: OptimizerPolicy | None = None,
        followers: Sequence[Any] = (),
    ) -> None:
        if not isinstance(model, nn.Module):
            raise GrowthInputError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(model, nn.parallel.DistributedDataParallel):
            raise GrowthInputError(
                "torch's DistributedDataParallel cannot follow a change of parameters: wrap the "
                "model in torchgrow.distributed.GrowingDDP instead (a drop-in that rebuilds the "
                "DDP wrapper after each growth step), and pass that or the bare model"
            )
        model = distributed.unwrap(model)
        if not isinstance(when, When):
            raise GrowthInputError(f"when must be a torchgrow.when trigger, got {when!r}")
        self.model = model
        self.optimizer = optimizer
        self.when = when
        self.where = where if where is not None else AllAtOnce()
        self.how = how if how is not None else Zero()
        self.size = size if size is not None else Units(1)
        self.loss_fn = loss_fn or default_loss
        if measure not in (True, False, "full"):
            raise GrowthInputError(f"measure must be True, False or 'full', got {measure!r}")
        self.measure = measure
        self.unknown_optimizer = unknown_optimizer
        if policy is not None and not isinstance(policy, OptimizerPolicy):
            raise GrowthInputError(
                f"policy must be a torchgrow.ops.OptimizerPolicy, got {type(policy).__name__}"
            )
        self.policy = policy
        self.flush_subnormals_every = (
            None
            if flush_subnormals_every is None
            else require_int(flush_subnormals_every, "flush_subnormals_every", 1)
        )
        self.state = GrowthState()
        self.events: list[GrowthEvent] = []
        self.description: dict[str, str] | None = None  # set by torchgrow.methods
        if followers:
            self.follow(*followers)

    def follow(self, *objects: Any) -> None:
        """Have every edit of the model update ``objects`` too.

        Optimizers besides the grower's are carried as it is; averaged copies
        (``torch.optim.swa_utils.AveragedModel``, EMAs keeping the copy in
        ``.module``) are rebuilt at the new structure, keeping the averages of
        the entries an edit keeps (new entries start at the model's values); LR
        schedulers need nothing (accepted to register a whole set-up). An
        optimizer that steps replaced parameters without being registered warns
        at its step. See :func:`torchgrow.ops.follow`, which this calls for the
        grower's model (every edit of it, by this grower or by ``torchgrow.ops``,
        updates the followers).
        """
        follow(self.model, *objects)

    # ------------------------------------------------------------ the training-loop hooks
    def step(self, batch: object = None, loss_fn: LossFn | None = None) -> list[GrowthEvent]:
        """Count one optimizer step; grow on ``batch`` if the trigger fires.

        Parameters
        ----------
        batch : tuple or callable, optional
            ``(x, y)``: the growth batch (needed only when growth happens), or
            a function of no arguments returning it, called only when growth
            happens (to draw a separate growth batch, as the official GradMax
            code does from its own iterator).
        loss_fn : callable, optional
            Overrides the grower's loss for this step.

        Returns
        -------
        list of GrowthEvent
            Empty unless the model grew.
        """
        self.state.step += 1
        every = self.flush_subnormals_every
        if every is not None and self.state.events and self.state.step % every == 0:
            flush_subnormal_state(self.optimizer)  # dead grown units' momentum (see the parameter)
        try:
            if not self.when.fires(self.state):
                return []
            if callable(batch):
                batch = batch()
            if batch is None:
                raise GrowthInputError(
                    f"the trigger fired at step {self.state.step} but no growth batch was given: "
                    "call grower.step((x, y), loss_fn)"
                )
            return self.grow(batch, loss_fn)
        except BaseException:
            self.state.step -= 1  # a step that raised did not happen
            raise

    def observe(self, **metrics: float) -> None:
        """Record metric values (for ``Plateau`` and other metric-driven triggers).

        Under ``torch.distributed`` the values are averaged over ranks (every
        rank must call it with the same names), so triggers fire on every
        rank at the same step.
        """
        metrics = distributed.all_mean({k: float(v) for k, v in metrics.items()})
        for name, value in metrics.items():
            self.state.metrics.setdefault(name, []).append(value)

    # ------------------------------------------------------------ growing
    def candidates(self) -> list[GrowableUnit]:
        """The model's growable units now."""
        return growable_units(self.model)

    def grow(self, batch: object, loss_fn: LossFn | None = None) -> list[GrowthEvent]:
        """Grow now: select units, gather statistics once, initialise, widen.

        All statistics come from the model as it was before this step (as in
        GradMax's all-at-once updater). The step is atomic: if any unit fails,
        units already grown in this step are shrunk back and the error re-raised.

        Parameters
        ----------
        batch : tuple
            ``(x, y)`` growth batch.
        loss_fn : callable, optional
            Overrides the grower's loss.

        Returns
        -------
        list of GrowthEvent
            One per grown unit.
        """
        loss_fn = loss_fn or self.loss_fn
        if distributed.is_active():
            batch = distributed.gather_batch(batch)  # the global growth batch
            distributed.broadcast_buffers(self.model)  # rank 0's running statistics
        x, _ = split_batch(batch)
        rows = head_rows(x, EXAMPLE_ROWS)
        if example_of(self.model) is None and rows is not None:
            set_example(self.model, *rows[0], **rows[1])
        wiring = analyse(self.model)  # the one analysis of this step
        units = self.where.select(list(wiring.units), self.state)
        if not units:
            warn("growth step selected no unit: nothing grows")
            return []
        events: list[GrowthEvent] = []
        committed: list[tuple[str, int]] = []
        agreeing = False
        try:
            start = time.perf_counter()
            ks = {u.name: self.size.units(u) for u in units}
            stats: Statistics | None = None
            if self.how.needs:
                stats = gather(self.model, batch, loss_fn, units, self.how.needs)
            shapes = {u.name: _block_shapes(self.model, u, ks[u.name]) for u in units}
            inits: dict[str, Init] = {
                u.name: self.how.init(u, ks[u.name], stats, self.model) for u in units
            }
            prep = (time.perf_counter() - start) / len(units)
            events = self._widen_all(wiring, units, ks, inits, shapes, prep, batch, loss_fn)
            committed = [(u.name, u.width) for u in units]
            agreeing = True
            distributed.agree("the growth step", self.model, self.optimizer)
        except BaseException as exc:
            for name, width in reversed(committed):  # the batch itself rolled back on its own
                shrink(
                    self.model,
                    name,
                    range(width),
                    optimizer=self.optimizer,
                    unknown_optimizer=self.unknown_optimizer,
                )
            if not agreeing and distributed.is_active():
                distributed.agree("the growth step", self.model, self.optimizer, error=exc)
            raise
        distributed.broadcast_model(self.model)  # bit-identical replicas
        self.state.events += 1
        self.events.extend(events)
        return events

    def _widen_all(
        self,
        wiring: Wiring,
        units: Sequence[GrowableUnit],
        ks: dict[str, int],
        inits: dict[str, Init],
        shapes: dict[str, dict[str, tuple[int, ...]]],
        prep: float,
        batch: object,
        loss_fn: LossFn,
    ) -> list[GrowthEvent]:
        """Widen every selected unit as one batch of edits, and measure what changed."""
        x, _ = split_batch(batch)
        events: list[GrowthEvent] = []
        sample = None  # the rows the verifying forward reads the output change on
        if self.measure is True:
            sample = head_rows(x, EXAMPLE_ROWS)
        y_prev = forward_eval(self.model, x) if self.measure and sample is None else None
        before: dict[str, GrowableUnit] = {}
        with edit_batch(
            self.model,
            self.optimizer,
            unknown_optimizer=self.unknown_optimizer,
            example=sample,
            policy=self.policy,
        ) as eb:
            for u in units:
                event, before[u.name], _ = self._widen_unit(
                    wiring, u, ks[u.name], inits[u.name], shapes[u.name], prep
                )
                events.append(event)
            if y_prev is not None:  # one forward for the whole step
                delta = float((forward_eval(self.model, x) - y_prev).abs().max())
                for ev in events:
                    ev.max_abs_delta = delta
            unknown = list(events) if self.measure == "full" else []
            if self.measure is True:
                known = ("grad_norm_fan_in", "grad_norm_fan_out")
                for ev in events:  # exact by construction where the initialiser says so
                    if all(k in ev.info for k in known):
                        ev.grad_norm_fan_in, ev.grad_norm_fan_out = (ev.info[k] for k in known)
                    else:
                        unknown.append(ev)
            if unknown:  # one backward, only as deep as the earliest of these units
                measure_gradients(self.model, unknown, batch, loss_fn, before)
        if sample is not None and eb.verifier is not None:
            for ev in events:
                ev.max_abs_delta = eb.verifier.max_delta
        return events

    def _widen_unit(
        self,
        wiring: Wiring,
        unit: GrowableUnit,
        k: int,
        init: Init,
        shapes: dict[str, tuple[int, ...]],
        prep: float,
        verify: bool = True,
    ) -> tuple[GrowthEvent, GrowableUnit, Init]:
        """Widen one selected unit by ``k`` with ``init`` (fitted to the unit as it is now, after
        the step's earlier units); its event, the unit as it was, and the init applied."""
        t0 = time.perf_counter()
        current = wiring.unit_of(unit.name)
        assert current is not None
        init = _fit_init(self.model, current, k, init, shapes)
        rec = widen(
            self.model,
            unit.name,
            k,
            fan_in=init.fan_in or None,
            fan_out=init.fan_out or None,
            optimizer=self.optimizer,
            unknown_optimizer=self.unknown_optimizer,
            new_connections=self.how.new_connections,
            unit=current,
            verify=verify,
        )
        wiring.after_widen(unit.name, k)
        event = GrowthEvent(
            step=self.state.step,
            unit=unit.name,
            units_added=k,
            width_before=unit.width,
            width_after=unit.width + k,
            params_before=rec.params_before,
            params_after=rec.params_after,
            how=self.how.describe(),
            info=dict(init.info),
            seconds=prep + time.perf_counter() - t0,
        )
        return event, current, init

    # ------------------------------------------------------------ description and state
    def describe(self) -> dict[str, str]:
        """The when/where/how/size of this grower, one line each (for reports)."""
        return {
            "when": self.when.describe(),
            "where": self.where.describe(),
            "how": self.how.describe(),
            "size": self.size.describe(),
        }

    def state_dict(self) -> dict[str, Any]:
        """Counters, metric history, events and the policies' own state."""
        return {
            "step": self.state.step,
            "events_count": self.state.events,
            "metrics": {k: list(v) for k, v in self.state.metrics.items()},
            "events": [e.as_dict() for e in self.events],
            "when": self.when.state_dict(),
            "where": self.where.state_dict(),
            "how": self.how.state_dict(),
            "size": self.size.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the policies must be of the same kinds)."""
        self.state = GrowthState(
            step=int(state["step"]),
            events=int(state["events_count"]),
            metrics={k: list(v) for k, v in state["metrics"].items()},
        )
        self.events = [GrowthEvent(**e) for e in state["events"]]
        self.when.load_state_dict(state["when"])
        self.where.load_state_dict(state["where"])
        self.how.load_state_dict(state["how"])
        self.size.load_state_dict(state["size"])
