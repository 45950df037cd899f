"""How many units a growth step adds to a unit."""

from __future__ import annotations

from typing import Any

from .errors import GrowthInputError, require_int, warn
from .graph import GrowableUnit
from .policy import Policy

__all__ = ["Size", "Units", "Fraction"]


class Size(Policy):
    """Base class: ``units(unit) -> int`` (>= 1)."""

    def units(self, unit: GrowableUnit) -> int:  # pragma: no cover - interface
        raise NotImplementedError


class Units(Size):
    """A fixed number of units per growth step.

    Parameters
    ----------
    k : int
        Units added to each grown unit at each step (>= 1).
    """

    def __init__(self, k: int) -> None:
        self.k = require_int(k, "Units(k): k", 1)

    def units(self, unit: GrowableUnit) -> int:
        return self.k

    def describe(self) -> str:
        return f"{self.k} unit(s) per step"


class Fraction(Size):
    """A fraction of a unit's width: ``max(1, int(width * f))``.

    Parameters
    ----------
    f : float
        The fraction (> 0). GradMax uses 0.25 of the initial width.
    of : {"initial", "current"}
        ``"initial"`` fixes the amount from the width the unit had the first
        time it was asked about (GradMax's ``n_grow_fraction``); ``"current"``
        uses the width at each step (exponential growth).
    """

    def __init__(self, f: float, of: str = "initial") -> None:
        if not f > 0:
            raise GrowthInputError(f"Fraction(f): f must be > 0, got {f!r}")
        if of not in ("initial", "current"):
            raise GrowthInputError(f"Fraction(of=...) must be 'initial' or 'current', got {of!r}")
        self.f = float(f)
        self.of = of
        self.initial: dict[str, int] = {}

    def units(self, unit: GrowableUnit) -> int:
        width = (
            unit.width if self.of == "current" else self.initial.setdefault(unit.name, unit.width)
        )
        k = int(width * self.f)
        if k < 1:
            warn(
                f"Fraction({self.f}) of {unit.name!r}'s width {width} is {width * self.f:.3g}; "
                "growing 1 unit instead"
            )
            k = 1
        return k

    def describe(self) -> str:
        return f"{self.f:g} of the {self.of} width per step"

    def state_dict(self) -> dict[str, Any]:
        return {"initial": dict(self.initial)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.initial = dict(state.get("initial", {}))
