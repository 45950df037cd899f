"""Switching a model to eval mode for a moment, and back exactly as it was."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode inside the block; restore each submodule's own mode after.

    ``model.train(was)`` would not do: it sets every submodule to ``was``, so a
    BatchNorm the user froze in eval mode inside a training model would be
    unfrozen. This restores the flag of every submodule one by one.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was in modes:
            m.training = was
