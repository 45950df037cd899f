"""Exceptions raised by torchgrow.

Every error says what was wrong and what to do about it. All derive from
:class:`TorchgrowError`, and each also derives from the built-in exception a
user would expect (``ValueError``, ``TypeError``), so ``except ValueError``
keeps working.
"""

from __future__ import annotations

import os
import sys
import warnings


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


_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _library_frame(filename: str) -> bool:
    """Whether a frame's file belongs to torchgrow (or to torch, which calls torchgrow's hooks)."""
    path = os.path.abspath(filename)
    torch = sys.modules.get("torch")
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep if torch else None
    return path.startswith(_HERE) or (torch_dir is not None and path.startswith(torch_dir))


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the user's line: the first caller outside torchgrow
    (and outside torch, whose hooks call into torchgrow), not a line of the library."""
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and _library_frame(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
