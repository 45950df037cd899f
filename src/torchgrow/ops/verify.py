"""Edits that check themselves: one forward on the model's example input, before and after.

When the model has an example input (:func:`torchgrow.graph.set_example`; the
:class:`~torchgrow.grower.Grower` sets one from its first growth batch), an
edit runs the model on it before committing. If the forward fails, or the edit
promised to preserve the function (zero fan-in or zero fan-out widening,
identity or zero insertion) and an output moved by more than the tolerance,
the edit is rolled back and :class:`~torchgrow.errors.EditVerificationError`
says what happened.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import EditVerificationError
from ..modes import eval_mode

__all__ = ["Verifier", "ATOL", "RTOL"]

ATOL = 1e-5
RTOL = 1e-4


def _outputs(model: nn.Module, example: tuple[tuple, dict]) -> list[Tensor]:
    from ..graph.record import tensors_in

    args, kwargs = example
    device = next((p.device for p in model.parameters()), None)
    if device is not None:
        args = tuple(a.to(device) if isinstance(a, Tensor) else a for a in args)
        kwargs = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in kwargs.items()}
    with eval_mode(model), torch.no_grad(), _no_autocast():
        out = model(*args, **kwargs)
    return [t.detach().clone() for t in tensors_in(out) if t.is_floating_point()]


def _no_autocast() -> contextlib.ExitStack:
    """Autocast off on every device type it is on: an edit is checked in the model's own
    precision, so that bfloat16's rounding (~1e-3) is not reported as the edit's change."""
    stack = contextlib.ExitStack()
    for device in ("cpu", "cuda", "xpu", "mps"):
        try:
            on = torch.is_autocast_enabled(device)
        except (RuntimeError, TypeError):  # a device type this torch does not know
            continue
        if on:
            stack.enter_context(torch.autocast(device, enabled=False))
    return stack


class Verifier:
    """Runs the example forward before an edit and checks it after.

    Parameters
    ----------
    model : nn.Module
        The model being edited.
    what : str
        The edit, for messages (``"widen('fc1', k=4)"``).
    preserve : bool
        Whether the edit promised to keep the function.
    example : Tensor or tuple, optional
        The input to check on: a tensor (``model(example)``) or ``(args,
        kwargs)``. Default: the model's example input
        (:func:`torchgrow.graph.example_of`).

    Attributes
    ----------
    max_delta : float
        After the check: the largest ``|output after - output before|`` over
        the model's outputs on the example (NaN when there was nothing to
        compare).
    """

    def __init__(
        self,
        model: nn.Module,
        what: str,
        *,
        preserve: bool,
        example: Tensor | tuple[tuple, dict] | None = None,
    ) -> None:
        from ..graph import example_of

        self.model, self.what, self.preserve = model, what, preserve
        self.example: Any = example_of(model) if example is None else example
        if isinstance(self.example, Tensor):
            self.example = ((self.example,), {})
        self.before: list[Tensor] | None = None
        self.max_delta = float("nan")
        if self.example is not None:
            try:
                self.before = _outputs(model, self.example)
            except Exception:  # the example no longer fits the model: nothing to compare
                self.example = None

    @property
    def active(self) -> bool:
        """Whether there is an example to check on."""
        return self.example is not None

    def __call__(self) -> None:
        """Check the edited model; raise :class:`EditVerificationError` if it is broken."""
        if self.example is None:
            return
        try:
            after = _outputs(self.model, self.example)
        except Exception as exc:
            raise EditVerificationError(
                f"{self.what}: after the edit the model's forward on its example input fails "
                f"({type(exc).__name__}: {exc}); the edit was rolled back"
            ) from exc
        if self.before is None:
            return
        if len(after) == len(self.before) and all(
            a.shape == b.shape for a, b in zip(after, self.before, strict=True)
        ):
            self.max_delta = max(
                (float((a - b).abs().max()) for a, b in zip(after, self.before, strict=True)
                 if a.numel()),
                default=0.0,
            )  # fmt: skip
        if not self.preserve:
            return
        if len(after) != len(self.before):
            raise EditVerificationError(
                f"{self.what}: the model now returns {len(after)} tensors, not "
                f"{len(self.before)}; the edit was rolled back"
            )
        for i, (a, b) in enumerate(zip(after, self.before, strict=True)):
            if a.shape != b.shape:
                raise EditVerificationError(
                    f"{self.what}: output {i} changed shape {tuple(b.shape)} -> {tuple(a.shape)}; "
                    "the edit was rolled back"
                )
            err = (a - b).abs()
            bad = err > ATOL + RTOL * b.abs()
            if bool(bad.any()):
                raise EditVerificationError(
                    f"{self.what} promised to preserve the function, but output {i} moved by "
                    f"up to {float(err.max()):.3g} (tolerance {ATOL:g} + {RTOL:g}*|y|) on the "
                    "example input; the edit was rolled back"
                )
