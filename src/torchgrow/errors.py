"""Exceptions raised by torchgrow.

Every error says what was wrong and what to do about it. All derive from
:class:`TorchgrowError`, and each also derives from the built-in exception a
user would expect (``ValueError``, ``TypeError``), so ``except ValueError``
keeps working.
"""

from __future__ import annotations


class TorchgrowError(Exception):
    """Base class of every error torchgrow raises on purpose."""


class GrowthInputError(TorchgrowError, ValueError):
    """Bad arguments to a growth operation (unknown name, k <= 0, wrong shape, NaN...)."""


class UnsupportedLayerError(TorchgrowError, TypeError):
    """A layer kind that the surgery registry does not know how to edit."""


class GraphError(TorchgrowError, ValueError):
    """The model's wiring cannot be analysed, or a unit cannot be grown because of it."""


class OptimizerCarryError(TorchgrowError, TypeError):
    """The optimizer's state cannot be carried across an edit."""


class EditVerificationError(TorchgrowError, RuntimeError):
    """An edit's own check failed (the forward raised, or the function moved); it was rolled back."""


class CheckpointError(TorchgrowError, ValueError):
    """A checkpoint cannot be written or read back (damaged, not torchgrow's, or not trusted)."""


def require_int(value: object, what: str, minimum: int = 0) -> int:
    """``value`` if it is an int (not a bool) ``>= minimum``, else a :class:`GrowthInputError`.

    Parameters
    ----------
    value : object
        The value to check.
    what : str
        Its name in the message (``"Every(steps)"``).
    minimum : int
        Smallest allowed value.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise GrowthInputError(
            f"{what} must be an int >= {minimum}, got {value!r} ({type(value).__name__})"
        )
    return value
