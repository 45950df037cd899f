"""The training compute a run has spent, and the gradient norm.

Training compute
----------------
:class:`TrainingCompute` charges a training step ``3x`` the forward FLOPs per
example (forward, plus a backward pass that costs about twice the forward:
one product for the gradient of the input and one for the gradient of the
weights), and a forward-only pass (statistics batches of a growth step,
evaluation) ``1x``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .flops import ModelInput, _as_inputs, flops_per_example

__all__ = ["TrainingCompute", "gradient_norm"]


class TrainingCompute:
    """Running total of the FLOPs spent on training.

    The per-example forward FLOPs are counted once, at construction, and
    cached: counting needs a forward pass, so it is not repeated every step.
    Call :meth:`refresh` after the architecture changes (a growth step).

    Convention: a training step costs ``3x`` the forward FLOPs per example
    (the backward pass costs about twice the forward); a forward-only pass
    (statistics batches for growth, evaluation if it should count) ``1x``.

    Parameters
    ----------
    model : nn.Module
        The model being trained (kept by reference, so :meth:`refresh` sees
        the grown model).
    example_input : Tensor or sequence of Tensor
        An example batch; only its first example is kept.

    Attributes
    ----------
    model : nn.Module
        The model whose FLOPs :meth:`refresh` recounts.
    total : int
        Cumulative FLOPs spent so far.
    steps : int
        Number of :meth:`add_step` calls.
    examples_trained : int
        Examples seen by training steps.
    examples_forward : int
        Examples seen by forward-only passes.
    """

    step_multiplier: int = 3
    """FLOPs of a training step, in units of forward FLOPs."""

    def __init__(self, model: nn.Module, example_input: ModelInput) -> None:
        inputs = _as_inputs(example_input)
        self.model = model
        self._example = tuple(t[:1].detach().clone() for t in inputs)
        self.total: int = 0
        self.steps: int = 0
        self.examples_trained: int = 0
        self.examples_forward: int = 0
        self._flops: int = flops_per_example(model, self._example)

    @property
    def flops_per_example(self) -> int:
        """The cached forward FLOPs per example of the current architecture."""
        return self._flops

    @staticmethod
    def _check_batch(batch_size: int) -> int:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
            raise ValueError(f"batch_size must be a non-negative int, got {batch_size!r}")
        return batch_size

    def add_step(self, batch_size: int) -> int:
        """Charge one training step (forward + backward) on ``batch_size`` examples.

        Parameters
        ----------
        batch_size : int
            Examples in the step.

        Returns
        -------
        int
            The FLOPs added: ``3 * flops_per_example * batch_size``.
        """
        n = self._check_batch(batch_size)
        added = self.step_multiplier * self._flops * n
        self.total += added
        self.steps += 1
        self.examples_trained += n
        return added

    def add_forward(self, batch_size: int) -> int:
        """Charge a forward-only pass on ``batch_size`` examples.

        Parameters
        ----------
        batch_size : int
            Examples in the pass.

        Returns
        -------
        int
            The FLOPs added: ``flops_per_example * batch_size``.
        """
        n = self._check_batch(batch_size)
        added = self._flops * n
        self.total += added
        self.examples_forward += n
        return added

    def refresh(self, example_input: ModelInput | None = None) -> int:
        """Recount the per-example FLOPs (after the architecture changed).

        Parameters
        ----------
        example_input : Tensor or sequence of Tensor, optional
            A new example batch (e.g. if the input shape changed); by default
            the one given at construction.

        Returns
        -------
        int
            The new per-example forward FLOPs.
        """
        if example_input is not None:
            self._example = tuple(t[:1].detach().clone() for t in _as_inputs(example_input))
        self._flops = flops_per_example(self.model, self._example)
        return self._flops

    def state_dict(self) -> dict[str, int]:
        """The counters, for checkpointing.

        Returns
        -------
        dict of str to int
            ``total``, ``flops_per_example``, ``steps``, ``examples_trained``
            and ``examples_forward``.
        """
        return {
            "total": self.total,
            "flops_per_example": self._flops,
            "steps": self.steps,
            "examples_trained": self.examples_trained,
            "examples_forward": self.examples_forward,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore counters saved by :meth:`state_dict`.

        Parameters
        ----------
        state : dict of str to int
            A state from :meth:`state_dict`. ``flops_per_example`` is restored
            too (the model is expected to be restored alongside).

        Raises
        ------
        ValueError
            If a key is missing or a value is not a non-negative integer.
        """
        keys = ("total", "flops_per_example", "steps", "examples_trained", "examples_forward")
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"TrainingCompute state is missing {missing}")
        values = {}
        for k in keys:
            v = state[k]
            if isinstance(v, Tensor):
                v = v.item()
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(
                    f"TrainingCompute state {k!r} must be a non-negative int, got {v!r}"
                )
            values[k] = v
        self.total = values["total"]
        self._flops = values["flops_per_example"]
        self.steps = values["steps"]
        self.examples_trained = values["examples_trained"]
        self.examples_forward = values["examples_forward"]

    def __repr__(self) -> str:
        return (
            f"TrainingCompute(total={self.total:,}, flops_per_example={self._flops:,}, "
            f"steps={self.steps})"
        )


def gradient_norm(tensors: Tensor | nn.Module | Iterable[Tensor]) -> float:
    """L2 norm of the gradients of ``tensors`` taken together.

    Used, e.g., to report the gradient norm of the weights a growth step just
    added. Tensors without a gradient (``.grad is None``) count as 0.

    Parameters
    ----------
    tensors : Tensor, nn.Module or iterable of Tensor
        The tensors (a module stands for its parameters).

    Returns
    -------
    float
        ``sqrt(sum of squared gradient entries)``, accumulated in float64.
    """
    if isinstance(tensors, nn.Module):
        tensors = list(tensors.parameters())
    elif isinstance(tensors, Tensor):
        tensors = [tensors]
    total = 0.0
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"gradient_norm expects tensors, got {type(t).__name__}")
        g = t.grad
        if g is None:
            continue
        if g.is_sparse:
            g = g.coalesce().values()
        total += float(g.detach().to(torch.float64).pow(2).sum())
    return math.sqrt(total)
