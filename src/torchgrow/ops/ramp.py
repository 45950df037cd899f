"""Masked ramp-in (MSG): new structure enters through a mask that rises from 0 to 1.

A :class:`Ramp` passed to a transformer edit (``grow_ffn(..., ramp=r)``,
``add_heads``, ``stack_blocks``) multiplies the new structure by its current
value ``m``: the new FFN units' pre-activations, the new heads' queries, keys
and values, or a new block's contribution (``x + m * (block(x) - x)``). At
``m = 0`` the grown model computes the old function whatever the new weights
are (MSG's point: growth independent of the initialisation); call
:meth:`Ramp.step` after every optimizer step and ``m`` rises by ``1 / steps``.
When it reaches 1 the masks are removed: a mask of ones is already folded into
the weights, so nothing else changes.

The masks are forward hooks, so a ramp does not survive :func:`torchgrow.save`;
finish it (:meth:`Ramp.finish`) before saving.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..errors import GrowthInputError

__all__ = ["Ramp", "adopt_copied_masks"]

Steps = list[tuple[Callable[[], None], Callable[[], None]]]


class Ramp:
    """A mask value that rises linearly from 0 to 1 over ``steps`` optimizer steps.

    Parameters
    ----------
    steps : int
        Steps until the new structure is fully in (MSG's ``grow_time``).

    Attributes
    ----------
    count : int
        Steps taken so far.
    """

    def __init__(self, steps: int) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise GrowthInputError(f"Ramp: steps must be a positive int, got {steps!r}")
        self.steps = steps
        self.count = 0
        self._handles: list[Any] = []

    @property
    def value(self) -> float:
        """The mask's current value, ``min(1, count / steps)``."""
        return min(1.0, self.count / self.steps)

    @property
    def active(self) -> bool:
        """Whether masks are still installed."""
        return bool(self._handles)

    def step(self) -> None:
        """Advance one optimizer step; at the end of the ramp remove the masks."""
        self.count += 1
        if self.count >= self.steps:
            self.finish()

    def finish(self) -> None:
        """End the ramp now: ``m = 1`` and the masks removed."""
        self.count = max(self.count, self.steps)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # ------------------------------------------------------------ installing masks (by edits)
    def _install(
        self, register: Callable[[], Any]
    ) -> tuple[Callable[[], None], Callable[[], None]]:
        """A ``(do, undo)`` pair for an edit's commit: installs a hook, or removes it on rollback."""
        box: list[Any] = []

        def do() -> None:
            handle = register()
            box.append(handle)
            self._handles.append(handle)

        def undo() -> None:
            for handle in box:
                handle.remove()
                if handle in self._handles:
                    self._handles.remove(handle)

        return do, undo

    def _hooked(self, fn: Callable) -> Callable:
        fn._torchgrow_ramp = self  # type: ignore[attr-defined]  (found again in deep copies)
        return fn

    def _factor(self, like: Tensor, index: Tensor) -> Tensor:
        f = torch.ones(like.shape[-1], dtype=like.dtype, device=like.device)
        f[index.to(like.device)] = self.value
        return f

    def mask_outputs(self, module: nn.Module, index: Tensor) -> Steps:
        """Multiply output features ``index`` of ``module`` by the ramp's value."""
        index = index.detach().clone()

        def hook(mod: nn.Module, args: tuple, out: Tensor) -> Tensor:
            return out * self._factor(out, index)

        return [self._install(lambda: module.register_forward_hook(self._hooked(hook)))]

    def mask_block(self, block: nn.Module) -> Steps:
        """Make ``block`` compute ``x + m * (block(x) - x)`` on its first input."""

        def hook(mod: nn.Module, args: tuple, kwargs: dict, out: Any) -> Any:
            x = args[0] if args else kwargs.get("hidden_states")
            m = self.value
            if isinstance(out, Tensor) and isinstance(x, Tensor):
                return x + m * (out - x)
            if (
                isinstance(out, tuple)
                and out
                and isinstance(out[0], Tensor)
                and isinstance(x, Tensor)
            ):
                return (x + m * (out[0] - x), *out[1:])
            raise GrowthInputError(
                f"Ramp: block {type(mod).__name__} returned {type(out).__name__}; "
                "a masked block must take the stream first and return a tensor (or a tuple "
                "starting with one)"
            )

        return [
            self._install(lambda: block.register_forward_hook(self._hooked(hook), with_kwargs=True))
        ]


def adopt_copied_masks(module: nn.Module) -> None:
    """Let each ramp remove the masks a deep copy of a masked module carries along.

    ``copy.deepcopy`` copies forward hooks; the copies still read their ramp's value
    but were never registered with it. Called on every block an edit copies.
    """
    for mod in module.modules():
        for key, fn in list(mod._forward_hooks.items()):
            ramp = getattr(fn, "_torchgrow_ramp", None)
            if isinstance(ramp, Ramp) and ramp.active:
                handle = RemovableHandle(
                    mod._forward_hooks, extra_dict=mod._forward_hooks_with_kwargs
                )
                handle.id = key
                ramp._handles.append(handle)
