"""The command line's ``--model package.module:factory`` and ``--data package.module:function``.

The user names a function of their own; the command line imports its module (the user's
code, run because they asked for it: the current directory is searched first, as
``python -m`` does) and calls it:

* a **data function** takes no arguments and returns a :class:`torchgrow.data.Dataset`, or the
  tensors ``(x_train, y_train, x_test, y_test)`` (class labels as integers: a classification
  task; float targets: regression);
* a **model factory** returns an ``nn.Module``; it is given ``input_shape`` and
  ``num_classes`` (of the data) as keyword arguments if its signature takes them.

Example (``examples/my_task.py`` in the repository)::

    torchgrow run --data examples.my_task:spirals --model examples.my_task:two_layer_net
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .data import Dataset

__all__ = ["is_user_spec", "load_function", "user_dataset", "user_model"]


def is_user_spec(value: str) -> bool:
    """Whether ``value`` names a user's function (``module:function``)."""
    return ":" in value


def load_function(spec: str, what: str) -> Callable[..., Any]:
    """Import ``module:function`` and return the function.

    Raises
    ------
    ValueError
        If the spec is malformed, the module cannot be imported or has no such callable;
        the message says which and what to write instead.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{what} {spec!r}: write package.module:function")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"{what} {spec!r}: cannot import {module_name!r} ({exc}); run from the folder that "
            "holds it, or put it on PYTHONPATH"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f"{what} {spec!r}: {module_name} has no {attr!r}")
    if not callable(obj):
        raise ValueError(f"{what} {spec!r}: {attr} is a {type(obj).__name__}, not a function")
    return obj


def _as_dataset(name: str, got: Any) -> Dataset:
    if isinstance(got, Dataset):
        return got
    if isinstance(got, (tuple, list)) and len(got) == 4 and all(isinstance(t, Tensor) for t in got):
        x_train, y_train, x_test, y_test = got
        classification = not y_train.is_floating_point()
        return Dataset(
            name=name,
            x_train=x_train.float(),
            y_train=y_train.long() if classification else y_train.float(),
            x_test=x_test.float(),
            y_test=y_test.long() if classification else y_test.float(),
            num_classes=int(torch.cat([y_train, y_test]).max()) + 1 if classification else None,
            input_shape=tuple(x_train.shape[1:]),
            task="classification" if classification else "regression",
        )
    raise ValueError(
        f"--data {name!r} returned {type(got).__name__}: return a torchgrow.data.Dataset or "
        "the tensors (x_train, y_train, x_test, y_test)"
    )


def user_dataset(spec: str) -> Dataset:
    """The data set a user's ``--data module:function`` returns."""
    function = load_function(spec, "--data")
    try:
        got = function()
    except TypeError as exc:
        raise ValueError(f"--data {spec!r}: calling it with no arguments failed: {exc}") from exc
    return _as_dataset(spec, got)


def user_model(spec: str, ds: Dataset) -> nn.Module:
    """The model a user's ``--model module:factory`` builds for ``ds``."""
    factory = load_function(spec, "--model")
    given = {"input_shape": tuple(ds.input_shape), "num_classes": ds.num_classes}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    model = factory(**{k: v for k, v in given.items() if takes_all or k in params})
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {spec!r} returned {type(model).__name__}, not an nn.Module")
    return model
