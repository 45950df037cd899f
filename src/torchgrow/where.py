"""Where to grow: which growable units a growth step widens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import GrowthInputError
from .graph import GrowableUnit
from .policy import Policy
from .when import GrowthState

__all__ = ["Where", "Layers", "AllAtOnce", "RoundRobin", "Stages", "StageRoundRobin", "AllStages"]


class Where(Policy):
    """Base class: ``select(candidates, state) -> units to grow now``.

    ``candidates`` are the model's growable units at the time of the step.
    """

    def __init__(self, layers: Sequence[str] | None = None) -> None:
        if layers is not None:
            if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
                raise GrowthInputError(f"layers must be a list of module names, got {layers!r}")
            if not layers:
                raise GrowthInputError("layers must not be empty")
        self.layers = None if layers is None else list(layers)

    def _pool(self, candidates: Sequence[GrowableUnit]) -> list[GrowableUnit]:
        if self.layers is None:
            return list(candidates)
        by_name = {p: u for u in candidates for p in u.producers}
        missing = [n for n in self.layers if n not in by_name]
        if missing:
            raise GrowthInputError(
                f"{type(self).__name__}: {missing} are not growable units of the model; "
                f"growable: {[u.name for u in candidates]}"
            )
        out: list[GrowableUnit] = []
        for n in self.layers:
            if by_name[n] not in out:
                out.append(by_name[n])
        return out

    def select(
        self, candidates: Sequence[GrowableUnit], state: GrowthState
    ) -> list[GrowableUnit]:  # pragma: no cover - interface
        raise NotImplementedError


class Layers(Where):
    """Always the listed units (by producer name), in that order.

    Parameters
    ----------
    layers : sequence of str
        Producer names.
    """

    def __init__(self, layers: Sequence[str]) -> None:
        super().__init__(layers)

    def select(self, candidates: Sequence[GrowableUnit], state: GrowthState) -> list[GrowableUnit]:
        return self._pool(candidates)

    def describe(self) -> str:
        return f"layers {self.layers}"


class AllAtOnce(Where):
    """Every candidate unit at each growth step (GradMax's main setting).

    Parameters
    ----------
    layers : sequence of str, optional
        Restrict to these producers (default: every growable unit).
    """

    def select(self, candidates: Sequence[GrowableUnit], state: GrowthState) -> list[GrowableUnit]:
        return self._pool(candidates)

    def describe(self) -> str:
        return "all units at once" if self.layers is None else f"all of {self.layers} at once"


class RoundRobin(Where):
    """One unit per growth step, cycling through the candidates in graph order.

    Parameters
    ----------
    layers : sequence of str, optional
        Restrict to these producers (default: every growable unit).
    """

    def __init__(self, layers: Sequence[str] | None = None) -> None:
        super().__init__(layers)
        self.position = 0

    def select(self, candidates: Sequence[GrowableUnit], state: GrowthState) -> list[GrowableUnit]:
        pool = self._pool(candidates)
        if not pool:
            return []
        unit = pool[self.position % len(pool)]
        self.position += 1
        return [unit]

    def describe(self) -> str:
        return "one unit per step, round robin"

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


class Stages(Policy):
    """Base class of depth-growth selectors: which stages get a new block (AutoGrow).

    ``select(stages, open_stages, last)`` gets all stage names in order, those
    that may still grow (neither frozen nor full), and the stages grown last
    time; it returns the stages to grow now (empty: none may grow).
    """

    def select(
        self, stages: Sequence[str], open_stages: Sequence[str], last: Sequence[str]
    ) -> list[str]:  # pragma: no cover - interface
        raise NotImplementedError


class StageRoundRobin(Stages):
    """One block per growth step, stages in turn, skipping frozen or full ones (the paper's ``group``).

    The next stage is the first open one after the last grown stage,
    cyclically (the first open stage when nothing was grown yet). The official
    code may pick a stage that has just become full and then grow nothing;
    here frozen and full stages are always skipped.
    """

    def select(
        self, stages: Sequence[str], open_stages: Sequence[str], last: Sequence[str]
    ) -> list[str]:
        if not open_stages:
            return []
        order = list(stages)
        start = order.index(last[-1]) + 1 if last else 0
        for i in range(len(order)):
            name = order[(start + i) % len(order)]
            if name in open_stages:
                return [name]
        return []

    def describe(self) -> str:
        return "one block at the end of the next open stage, round robin"


class AllStages(Stages):
    """One block in every open stage per growth step (the code's ``all`` mode)."""

    def select(
        self, stages: Sequence[str], open_stages: Sequence[str], last: Sequence[str]
    ) -> list[str]:
        return [s for s in stages if s in open_stages]

    def describe(self) -> str:
        return "one block at the end of every open stage"
