"""What every model family shares: activations by name and width scaling."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from torchgrow.nn import ReLU1

#: Activation names accepted by every builder, and the module class each builds.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "relu1": ReLU1,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


def activation_module(name: str) -> nn.Module:
    """Build a fresh activation module by name.

    Parameters
    ----------
    name : str
        ``"relu"`` (:class:`torch.nn.ReLU`), ``"relu1"``
        (:class:`torchgrow.nn.ReLU1`, derivative 1 at 0), ``"tanh"`` or
        ``"gelu"``.

    Returns
    -------
    nn.Module
        A new instance (never shared between layers).

    Raises
    ------
    ValueError
        If ``name`` is unknown; the message lists the valid names.
    """
    try:
        factory = ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; valid names: {', '.join(ACTIVATIONS)}"
        ) from None
    return factory()


def scale_width(width: int, width_mult: float) -> int:
    """Scale a hidden width: ``max(1, round_half_up(width * width_mult))``.

    Parameters
    ----------
    width : int
        The width at ``width_mult == 1``.
    width_mult : float
        The multiplier; must be positive.

    Returns
    -------
    int
        The scaled width, at least 1.

    Raises
    ------
    ValueError
        If ``width_mult`` is not positive.
    """
    if not width_mult > 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    return max(1, math.floor(width * width_mult + 0.5))


def _check_activation(name: str) -> None:
    activation_module(name)  # raises ValueError on an unknown name
