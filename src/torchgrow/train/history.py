"""The record of a training run: :class:`History` (one row per epoch, and the growth events)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..grower import Grower, GrowthEvent
from ..why import TrainingCompute

__all__ = ["COLUMNS", "History"]

LossFn = Callable[[Tensor, Tensor], Tensor]

COLUMNS: tuple[str, ...] = (
    "epoch",
    "step",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "parameters",
    "flops_per_example",
    "training_flops",
    "lr",
    "seconds",
    "growth_events",
    "units_added",
)
"""The columns of a :class:`History` row, in order.

``epoch`` (1-based), ``step`` (optimizer steps so far), ``train_loss`` (mean
over the epoch's examples), ``val_loss`` and ``val_accuracy`` (on the test
loader; ``None`` when not evaluated, accuracy ``None`` for regression),
``parameters`` (:func:`~torchgrow.why.count_parameters`), ``flops_per_example``
(forward), ``training_flops`` (cumulative, :class:`~torchgrow.why.TrainingCompute`),
``lr`` (of the first param group, at the start of the epoch), ``seconds`` (cumulative wall time, across
resumes), ``growth_events`` (units grown this epoch, one
:class:`~torchgrow.GrowthEvent` each) and ``units_added`` (their total).
"""


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become ``None``, tensors become numbers."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _event_from_dict(d: dict[str, Any]) -> GrowthEvent:
    d = {
        k: (float("nan") if v is None and k.startswith(("max_abs", "grad_norm")) else v)
        for k, v in d.items()
    }
    return GrowthEvent(**d)


class History:
    """What :func:`fit` recorded: one row per epoch and every growth event.

    Parameters
    ----------
    rows : list of dict, optional
        Per-epoch rows with the keys of :data:`COLUMNS`.
    events : list of GrowthEvent, optional
        Growth events, in order.

    Attributes
    ----------
    rows : list of dict
        One row per epoch.
    events : list of GrowthEvent
        Every growth event of the run.
    model, optimizer, grower, compute
        Set by :func:`fit`: the objects trained (useful after resuming, when
        they come from the checkpoint). Not saved by :meth:`to_json`.
    """

    def __init__(
        self,
        rows: Sequence[dict[str, Any]] | None = None,
        events: Sequence[GrowthEvent] | None = None,
    ) -> None:
        self.rows: list[dict[str, Any]] = [dict(r) for r in rows or []]
        self.events: list[GrowthEvent] = list(events or [])
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.grower: Grower | None = None
        self.compute: TrainingCompute | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        last = self.last
        tail = "" if last is None else f", last={_clean(last)}"
        return f"History(epochs={len(self.rows)}, events={len(self.events)}{tail})"

    @property
    def initial_parameters(self) -> int | None:
        """Parameters before the first growth event (else those of the first epoch)."""
        if self.events:
            return self.events[0].params_before
        return self.rows[0]["parameters"] if self.rows else None

    @property
    def last(self) -> dict[str, Any] | None:
        """The last row (``None`` before the first epoch ends)."""
        return self.rows[-1] if self.rows else None

    def column(self, name: str) -> list[Any]:
        """Every row's value of column ``name``.

        Parameters
        ----------
        name : str
            One of :data:`COLUMNS`.

        Returns
        -------
        list
            The values, one per epoch.
        """
        if self.rows and name not in self.rows[0]:
            raise KeyError(f"unknown column {name!r}; columns: {', '.join(self.rows[0])}")
        return [r.get(name) for r in self.rows]

    def as_dict(self) -> dict[str, Any]:
        """Plain-Python form: ``{"rows": [...], "events": [...]}`` (JSON-safe)."""
        return {
            "rows": [_clean(r) for r in self.rows],
            "events": [_clean(e.as_dict()) for e in self.events],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        """Inverse of :meth:`as_dict`."""
        return cls(d.get("rows", []), [_event_from_dict(e) for e in d.get("events", [])])

    def to_csv(self, path: str | Path) -> Path:
        """Write the rows as CSV (header = :data:`COLUMNS`; missing values empty).

        Parameters
        ----------
        path : str or Path
            The file.

        Returns
        -------
        Path
            The path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fields = list(COLUMNS) + [k for r in self.rows for k in r if k not in COLUMNS]
        fields = list(dict.fromkeys(fields))
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            for r in self.rows:
                writer.writerow({k: ("" if v is None else v) for k, v in _clean(r).items()})
        return path

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`as_dict` as JSON (non-finite numbers become ``null``).

        Parameters
        ----------
        path : str or Path
            The file.

        Returns
        -------
        Path
            The path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2, allow_nan=False))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> History:
        """Read a file written by :meth:`to_json`."""
        return cls.from_dict(json.loads(Path(path).read_text()))
