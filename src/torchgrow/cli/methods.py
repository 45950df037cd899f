"""Growth methods by name for ``torchgrow run``: :data:`METHODS` and :func:`register_method`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .. import how as tg_how
from ..grower import Grower
from ..size import Units
from ..when import Every
from ..where import AllAtOnce

__all__ = ["METHODS", "Method", "register_method", "CLI_DATASETS"]


GrowerFactory = Callable[[nn.Module, torch.optim.Optimizer, argparse.Namespace], Grower | None]


@dataclass(frozen=True)
class Method:
    """A growth method the CLI can run.

    Attributes
    ----------
    name : str
        The ``--method`` value.
    summary : str
        One line for ``--help``.
    make_grower : callable
        ``make_grower(model, optimizer, args) -> Grower | None`` (``None``: no
        growth). ``args`` holds the parsed command line (``grow_every``,
        ``grow_start``, ``grow_times``, ``units``, ``seed``...).
    """

    name: str
    summary: str
    make_grower: GrowerFactory


METHODS: dict[str, Method] = {}
"""Growth methods by name (``--method``)."""


def register_method(method: Method) -> Method:
    """Add (or replace) a growth method of the ``torchgrow run`` command.

    Parameters
    ----------
    method : Method
        The method.

    Returns
    -------
    Method
        The same method.
    """
    METHODS[method.name] = method
    return method


def _every(args: argparse.Namespace) -> Every:
    return Every(args.grow_every, start=args.grow_start, times=args.grow_times)


def _how_grower(make_how: Callable[[argparse.Namespace], tg_how.How]) -> GrowerFactory:
    def factory(model: nn.Module, optimizer: torch.optim.Optimizer, args: argparse.Namespace):
        return Grower(
            model,
            optimizer,
            when=_every(args),
            where=AllAtOnce(),
            how=make_how(args),
            size=Units(args.units),
        )

    return factory


register_method(
    Method(
        "random",
        "random fan-out, zero fan-in (function-preserving; GradMax's random baseline)",
        _how_grower(lambda args: tg_how.Random(seed=args.seed)),
    )
)
register_method(
    Method(
        "gradmax",
        "GradMax: zero fan-in, fan-out from the SVD of the gradient (function-preserving); "
        "schedule from --grow-every/--grow-start/--grow-times, --units per layer",
        _how_grower(lambda args: tg_how.GradMax(seed=args.seed)),
    )
)
register_method(
    Method(
        "zero",
        "zero fan-in and fan-out (function-preserving)",
        _how_grower(lambda a: tg_how.Zero()),
    )
)
register_method(
    Method("static", "no growth: train the initial network as it is", lambda m, o, a: None)
)

CLI_DATASETS = ("mnist1d", "digits", "mnist5k", "fashion_mnist")
