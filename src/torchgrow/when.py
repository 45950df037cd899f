"""When to grow: triggers.

A trigger is asked once per training step (after the optimizer step) by
:meth:`torchgrow.Grower.step`, with the number of optimizer steps done so far
and the metrics observed so far.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import GrowthInputError, require_int
from .policy import Policy

__all__ = ["GrowthState", "When", "Every", "Schedule", "Plateau", "Manual", "Stagnation"]


@dataclass
class GrowthState:
    """What triggers and selectors may look at.

    Attributes
    ----------
    step : int
        Optimizer steps done so far.
    events : int
        Growth steps done so far (a step may grow several units).
    metrics : dict
        Metric name -> list of observed values (see :meth:`torchgrow.Grower.observe`).
    """

    step: int = 0
    events: int = 0
    metrics: dict[str, list[float]] = field(default_factory=dict)


class When(Policy):
    """Base class of triggers: ``fires(state) -> bool``."""

    def fires(self, state: GrowthState) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


class Every(When):
    """Grow every ``steps`` steps from step ``start``, at most ``times`` times (GradMax).

    Fires at step ``t`` when ``t % steps == 0``, ``t >= start`` and fewer than
    ``times`` growth steps happened.

    Parameters
    ----------
    steps : int
        Period in optimizer steps (>= 1).
    start : int
        First step at which growth may happen.
    times : int, optional
        Maximum number of growth steps (``None``: no limit).
    """

    def __init__(self, steps: int, start: int = 0, times: int | None = None) -> None:
        self.steps = require_int(steps, "Every(steps)", 1)
        self.start = require_int(start, "Every(start)")
        self.times = None if times is None else require_int(times, "Every(times)")

    def fires(self, state: GrowthState) -> bool:
        if self.times is not None and state.events >= self.times:
            return False
        return state.step >= self.start and state.step % self.steps == 0 and state.step > 0

    def describe(self) -> str:
        n = "unbounded" if self.times is None else f"{self.times}x"
        return f"every {self.steps} steps from step {self.start}, {n}"


class Schedule(When):
    """Grow at the given steps.

    Parameters
    ----------
    steps : sequence of int
        Optimizer step counts at which to grow (>= 1).
    """

    def __init__(self, steps: Sequence[int]) -> None:
        self.steps = sorted({require_int(s, "Schedule step", 1) for s in steps})
        if not self.steps:
            raise GrowthInputError("Schedule needs at least one step")

    def fires(self, state: GrowthState) -> bool:
        return state.step in self.steps

    def describe(self) -> str:
        return f"at steps {self.steps}"


class Plateau(When):
    """Grow when a metric has not improved by ``min_delta`` for ``patience`` observations.

    After firing, the trigger waits another ``patience`` observations (and the
    optional ``cooldown``) before it can fire again. Metrics are fed with
    :meth:`torchgrow.Grower.observe`.

    Parameters
    ----------
    metric : str
        Name of the observed metric (e.g. ``"val_loss"``, ``"val_accuracy"``).
    patience : int
        Observations without improvement before firing (>= 1).
    min_delta : float
        Minimum change that counts as an improvement.
    mode : {"min", "max"}
        Whether lower (loss) or higher (accuracy) is better.
    cooldown : int
        Extra observations to wait after a growth step.
    """

    def __init__(
        self,
        metric: str = "val_loss",
        patience: int = 3,
        min_delta: float = 0.0,
        mode: str = "min",
        cooldown: int = 0,
    ) -> None:
        if mode not in ("min", "max"):
            raise GrowthInputError(f"Plateau(mode) must be 'min' or 'max', got {mode!r}")
        if not (
            isinstance(min_delta, (int, float)) and math.isfinite(min_delta) and min_delta >= 0
        ):
            raise GrowthInputError(f"Plateau(min_delta) must be finite and >= 0, got {min_delta!r}")
        self.metric = metric
        self.patience = require_int(patience, "Plateau(patience)", 1)
        self.cooldown = require_int(cooldown, "Plateau(cooldown)")
        self.min_delta = float(min_delta)
        self.mode = mode
        self._seen = 0  # observations consumed
        self._best: float | None = None
        self._since_best = 0
        self._wait = 0

    def _better(self, value: float) -> bool:
        if self._best is None:
            return True
        if self.mode == "min":
            return value < self._best - self.min_delta
        return value > self._best + self.min_delta

    def fires(self, state: GrowthState) -> bool:
        values = state.metrics.get(self.metric, [])
        for value in values[self._seen :]:
            if not math.isfinite(value):
                raise GrowthInputError(f"Plateau: metric {self.metric!r} is {value}")
            if self._wait > 0:
                self._wait -= 1
            if self._better(value):
                self._best = value
                self._since_best = 0
            else:
                self._since_best += 1
        self._seen = len(values)
        if self._since_best >= self.patience and self._wait == 0:
            self._since_best = 0
            self._best = None  # the grown model starts a new comparison
            self._wait = self.cooldown
            return True
        return False

    def describe(self) -> str:
        return (
            f"when {self.metric} has not improved by {self.min_delta:g} "
            f"for {self.patience} observations"
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "seen": self._seen,
            "best": self._best,
            "since_best": self._since_best,
            "wait": self._wait,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._seen = state["seen"]
        self._best = state["best"]
        self._since_best = state["since_best"]
        self._wait = state["wait"]


class Manual(When):
    """Never fires on its own; call :meth:`trigger` (or ``Grower.grow``) to grow."""

    def __init__(self) -> None:
        self._pending = False

    def trigger(self) -> None:
        """Grow at the next :meth:`torchgrow.Grower.step`."""
        self._pending = True

    def fires(self, state: GrowthState) -> bool:
        fired, self._pending = self._pending, False
        return fired

    def describe(self) -> str:
        return "on request"

    def state_dict(self) -> dict[str, Any]:
        return {"pending": self._pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = bool(state.get("pending", False))


class Stagnation(Policy):
    """AutoGrow's stopping signal: validation accuracy stopped improving over the last ``J`` epochs.

    Keeps ``best[t]``, the running maximum (``metric="max"``, the paper's) or
    an exponential moving average (``metric="ema"``, the code's ``avg``,
    which starts from 0 as the official one does) of validation accuracy in
    percent, one value per epoch. :meth:`stalled` is
    true when ``best[now] - best[now - J] < tau``; with fewer than ``J + 1``
    values it is false.

    Parameters
    ----------
    tau : float
        Minimum improvement in percentage points (paper: 0.05).
    window : int
        ``J``, in epochs (code: 100 on CIFAR; the J = T rule: the epochs a
        non-growing baseline spends at its largest learning rate).
    metric : {"max", "ema"}
        Running maximum or EMA.
    decay : float
        EMA decay (code: 0.95).
    """

    def __init__(
        self, tau: float = 0.05, window: int = 100, metric: str = "max", decay: float = 0.95
    ) -> None:
        if not tau >= 0:
            raise GrowthInputError(f"Stagnation(tau) must be >= 0 points, got {tau!r}")
        if metric not in ("max", "ema"):
            raise GrowthInputError(f"Stagnation(metric) must be 'max' or 'ema', got {metric!r}")
        if not 0 < decay < 1:
            raise GrowthInputError(f"Stagnation(decay) must be in (0, 1), got {decay!r}")
        self.tau, self.metric, self.decay = float(tau), metric, float(decay)
        self.window = require_int(window, "Stagnation(window)", 1)
        self.values: list[float] = []

    def push(self, accuracy: float) -> float:
        """Record one epoch's validation accuracy (a fraction in [0, 1]); returns ``best[now]``."""
        if not 0.0 <= accuracy <= 1.0:
            raise GrowthInputError(f"accuracy must be a fraction in [0, 1], got {accuracy!r}")
        pct = 100.0 * accuracy
        previous = self.values[-1] if self.values else None
        if self.metric == "max":
            value = pct if previous is None else max(previous, pct)
        else:  # the official ExponentialMovingAverage starts from 0, not from the first value
            value = self.decay * (previous or 0.0) + (1 - self.decay) * pct
        self.values.append(value)
        return value

    def delta(self) -> float:
        """``best[now] - best[now - J]`` in points (``inf`` with fewer than ``J + 1`` values)."""
        if len(self.values) <= self.window:
            return math.inf
        return self.values[-1] - self.values[-1 - self.window]

    def stalled(self) -> bool:
        """Whether the improvement over the last ``J`` epochs is below ``tau``."""
        return self.delta() < self.tau

    def describe(self) -> str:
        what = "running max" if self.metric == "max" else f"EMA ({self.decay:g})"
        return f"{what} of val accuracy improved < {self.tau:g} points over {self.window} epochs"

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self.values)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values = [float(v) for v in state["values"]]
