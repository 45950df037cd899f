"""Growth at fixed points of a run, with the learning-rate schedule a method prescribes.

The transformer methods (G_stack, MIDAS, MSG, HyperCloning, LEMON) grow at set
fractions of a known number of training steps and prescribe what the optimizer
and the learning rate do afterwards. :class:`ScheduledGrowth` holds such a plan;
call :meth:`ScheduledGrowth.update` at the top of every training step, before the
forward pass, and step :attr:`ScheduledGrowth.optimizer` (it changes when a method
starts a fresh optimizer)::

    method = methods.GStack(model, opt, total_steps=1000, example=x)
    for step, (x, y) in zip(range(1000), batches):
        method.update(step)                    # grows when due, sets the learning rate
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        method.optimizer.zero_grad()
        loss.backward()
        method.optimizer.step()
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import GrowthInputError
from ..ops import EditRecord, OptimizerPolicy, Ramp

__all__ = ["Event", "ScheduledGrowth", "cosine", "fresh_like", "group_roles", "regroup"]

Apply = Callable[["ScheduledGrowth"], EditRecord]


@dataclass
class Event:
    """A growth at a fraction of the run: ``apply(method) -> EditRecord``."""

    at: float
    name: str
    apply: Apply
    fresh_optimizer: bool = False


def cosine(t: int, length: int, warm: float = 0.05, floor: float = 0.1) -> float:
    """Linear warm-up over ``warm`` of the phase (at least 10 steps), then cosine to ``floor``."""
    w = min(max(10, round(warm * length)), max(1, length))
    if t < w:
        return (t + 1) / w
    progress = min(1.0, (t - w) / max(1, length - w))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def fresh_like(
    optimizer: torch.optim.Optimizer, model: nn.Module, roles: dict[str, int] | None = None
) -> torch.optim.Optimizer:
    """A new optimizer of the same kind and settings, over ``model``'s parameters, with no state.

    Parameter groups with their own settings (no decay on norms...) are rebuilt by
    parameter role: each parameter joins the group that held its role
    (``roles``, from :func:`group_roles` before the edit; default: read now).
    """
    accepted = inspect.signature(type(optimizer)).parameters
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    if len(optimizer.param_groups) == 1:
        return type(optimizer)(model.parameters(), **defaults)
    roles = group_roles(optimizer, model) if roles is None else roles
    groups: list[dict[str, Any]] = [
        {"params": [], **{k: v for k, v in g.items() if k in accepted and k != "params"}}
        for g in optimizer.param_groups
    ]
    for name, p in model.named_parameters():
        groups[roles.get(_role(name), 0)]["params"].append(p)
    return type(optimizer)([g for g in groups if g["params"]], **defaults)


def _role(name: str) -> str:
    """A parameter's role without its position: ``blocks.3.attn.q.weight`` -> ``attn.q.weight``."""
    parts = [p for p in name.split(".") if not p.isdigit()]
    return ".".join(parts[-3:])


class ScheduledGrowth:
    """A plan of growth events at fractions of ``total_steps``, and the learning rate around them.

    Parameters
    ----------
    model : nn.Module
        A transformer with a registered layout (:func:`torchgrow.ops.find_layout`).
    optimizer : torch.optim.Optimizer
        Its optimizer; carried through the edits, or replaced by a fresh one of the
        same kind where the method restarts (:func:`fresh_like`, or ``make_optimizer``).
    total_steps : int
        Training steps of the whole run, growth phases included.
    example : Tensor
        An input batch: each edit is verified on it.
    make_optimizer : callable, optional
        ``make_optimizer(model) -> optimizer`` for the methods that restart it.
    policy : OptimizerPolicy, optional
        Passed to every edit of the methods that carry the optimizer (MSG, MIDAS):
        what it does with the new weights beyond the carry
        (:class:`torchgrow.ops.OptimizerPolicy`). The methods that restart it
        (G_stack, HyperCloning, LEMON) start from a fresh optimizer, with no state.

    Attributes
    ----------
    log : list of dict
        One entry per event: step, name, ``max_abs_dout``, parameters after.
    """

    #: Subclasses set these.
    events: list[Event]
    name = "scheduled"

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        example: Tensor,
        *,
        make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
        policy: OptimizerPolicy | None = None,
    ) -> None:
        if policy is not None and not isinstance(policy, OptimizerPolicy):
            raise GrowthInputError(
                f"policy must be a torchgrow.ops.OptimizerPolicy, got {type(policy).__name__}"
            )
        self.policy = policy
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 2:
            raise GrowthInputError(f"total_steps must be an int >= 2, got {total_steps!r}")
        self.model, self.optimizer, self.total_steps, self.example = (
            model, optimizer, total_steps, example,
        )  # fmt: skip
        self.make_optimizer = make_optimizer or (
            lambda m: fresh_like(self.optimizer, m, roles=self._roles)
        )
        self._roles: dict[str, int] | None = None
        self.base_lr = [g["lr"] for g in optimizer.param_groups]
        self.log: list[dict[str, Any]] = []
        self.ramps: list[tuple[Ramp, int]] = []
        self._done: set[int] = set()
        self._step = 0

    # ------------------------------------------------------------ the plan
    def event_steps(self) -> list[int]:
        """The step of each event, in order."""
        return [
            max(1, min(self.total_steps - 1, round(e.at * self.total_steps))) for e in self.events
        ]

    def lr_factor(self, step: int) -> float:
        """The learning-rate multiplier at ``step`` (default: one warm-up + cosine)."""
        return cosine(step, self.total_steps)

    def last_event(self) -> int:
        """The step of the last event (0 without events)."""
        steps = self.event_steps()
        return steps[-1] if steps else 0

    # ------------------------------------------------------------ running it
    def update(self, step: int) -> list[EditRecord]:
        """Call at the top of training step ``step``: grows when due, sets the learning rate."""
        self._step = step
        for r, started in self.ramps:
            if r.active and step > started:
                r.step()
        records = []
        for i, (e, at) in enumerate(zip(self.events, self.event_steps(), strict=True)):
            if at == step and i not in self._done:
                self._done.add(i)
                self._roles = roles = group_roles(self.optimizer, self.model)
                record = e.apply(self)
                regroup(self.optimizer, self.model, roles)
                if e.fresh_optimizer:
                    self.optimizer = self.make_optimizer(self.model)
                    if len(self.optimizer.param_groups) != len(self.base_lr):
                        # the groups' lr were scheduled; the peaks are those of base_lr
                        self.base_lr = [g["lr"] for g in self.optimizer.param_groups]
                self.log.append({
                    "step": step, "event": e.name,
                    "max_abs_dout": record.details.get("max_abs_dout"),
                    "params_after": sum(p.numel() for p in self.model.parameters()),
                })  # fmt: skip
                records.append(record)
        factor = self.lr_factor(step)
        for g, base in zip(self.optimizer.param_groups, self.base_lr, strict=False):
            g["lr"] = base * factor
        return records

    def ramp(self, steps: int) -> Ramp:
        """A ramp for an event now (MSG); :meth:`update` advances it every step."""
        r = Ramp(max(1, steps))
        self.ramps.append((r, self._step))
        return r

    def describe(self) -> dict[str, str]:
        """The method's why, when, where and how, in words."""
        return dict(getattr(self, "DESCRIPTION", {}))


def group_roles(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, int]:
    """The parameter group of each parameter role (:func:`_role`), read before an edit."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        _role(names[id(p)]): i
        for i, g in enumerate(optimizer.param_groups)
        for p in g["params"]
        if id(p) in names
    }


def regroup(optimizer: torch.optim.Optimizer, model: nn.Module, roles: dict[str, int]) -> int:
    """Move every parameter into the group its role had before the edit; returns how many moved.

    An edit that carries the optimizer puts the parameters it creates (a copied
    block's) into one group; with groups of their own settings (no weight decay on
    norms and biases) each copy belongs with the parameter of the same role. The
    state stays with the parameter.
    """
    if len(optimizer.param_groups) < 2:
        return 0
    names = {id(p): n for n, p in model.named_parameters()}
    moved = 0
    new_groups: list[list[nn.Parameter]] = [[] for _ in optimizer.param_groups]
    for i, g in enumerate(optimizer.param_groups):
        for p in g["params"]:
            want = roles.get(_role(names.get(id(p), "")), i)
            moved += want != i
            new_groups[want].append(p)
    for g, params in zip(optimizer.param_groups, new_groups, strict=True):
        g["params"][:] = params
    return moved
