"""HyperCloning (Samragh et al. 2024) and LEMON (Wang et al., ICLR 2024): train a small
transformer, expand it function-preservingly, and train the large one with a fresh schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .. import ops
from ..errors import GrowthInputError
from .scheduled import Event, ScheduledGrowth, cosine

__all__ = ["HyperCloning", "LEMON", "HYPERCLONING_DESCRIPTION", "LEMON_DESCRIPTION"]

HYPERCLONING_DESCRIPTION = {
    "why": "start a large model from a trained small one: the paper reports 2-4x fewer "
    "GPU hours to the final accuracy of a large model trained from random init",
    "when": "once: the small model trains on its own full schedule first (here 40 % of the "
    "run, the CPU protocol's mapping)",
    "where": "every width x n: the residual stream, the heads and the FFN; depth kept",
    "how": "tiled copies with the readers' weights divided by n (exact, norms included); "
    "optional +-noise that cancels on the tiled input (off by default); fresh AdamW, "
    "warm-up + cosine over the rest",
}

LEMON_DESCRIPTION = {
    "why": "lossless expansion of a trained model: -56.7 % training of ViT, -33.2 % of BERT "
    "(abstract; the savings exclude the small model's training)",
    "when": "once, after the small model's own schedule (here 40 % of the run)",
    "where": "width x2 (residual stream, heads, FFN) and depth x2: every block followed by an "
    "inserted copy whose output projections are zero (pre-LN: the identity)",
    "how": "function-preserving; every reader's weight split unevenly over the copies it reads "
    "(W - C and C, C = 0.1 x a fresh N(0, 0.02) init: the copies' gradients differ); a fresh "
    "AdamW with a re-warm-up from 0.1 of the peak over 4 % of the run, then cosine to 0.1 of "
    "the peak",
}


class _Expand(ScheduledGrowth):
    """A small phase on its own schedule, one expansion at ``at``, a fresh optimizer after."""

    warm_after: float = 0.05
    warm_from: float = 0.0

    def __init__(self, model, optimizer, total_steps, example, *, at: float,
                 make_optimizer=None) -> None:  # fmt: skip
        super().__init__(model, optimizer, total_steps, example, make_optimizer=make_optimizer)
        if not 0 < at < 1:
            raise GrowthInputError(f"at must be a share of the run in (0, 1), got {at!r}")
        self.at = at

    def lr_factor(self, step: int) -> float:
        at = self.last_event()
        if step < at:
            return cosine(step, at)
        length = self.total_steps - at
        w = max(1, round(self.warm_after * self.total_steps))
        t = step - at
        if t < w:
            return self.warm_from + (1 - self.warm_from) * (t + 1) / w
        progress = min(1.0, (t - w) / max(1, length - w))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


class HyperCloning(_Expand):
    """Clone every width of a trained small transformer ``n`` times (HyperCloning).

    Parameters
    ----------
    model, optimizer, total_steps, example, make_optimizer
        See :class:`~torchgrow.methods.scheduled.ScheduledGrowth`.
    n : int, default 2
        Width multiplier of the residual stream, heads and FFN (the code's examples).
    at : float, default 0.4
        When to clone, as a share of ``total_steps``; before it the small model runs
        a warm-up + cosine schedule of its own.
    snr_db : float, optional
        Symmetry-breaking noise at this signal-to-noise ratio (dB); default none, the
        code's default (the paper's noisy variants used about 10 dB).
    seed : int, default 0
        Seed of the noise.
    """

    name = "HyperCloning"
    DESCRIPTION = HYPERCLONING_DESCRIPTION

    def __init__(self, model, optimizer, total_steps, example, *, n: int = 2, at: float = 0.4,
                 snr_db: float | None = None, seed: int = 0, make_optimizer=None) -> None:  # fmt: skip
        super().__init__(
            model, optimizer, total_steps, example, at=at, make_optimizer=make_optimizer
        )
        self.n, self.snr_db = n, snr_db
        self._gen = torch.Generator().manual_seed(seed)
        self.events = [Event(at, f"clone x{n}", self._clone, fresh_optimizer=True)]

    def _clone(self, method: ScheduledGrowth) -> ops.EditRecord:
        return ops.clone_width(self.model, self.n, snr_db=self.snr_db, generator=self._gen,
                               example=self.example)  # fmt: skip


class LEMON(_Expand):
    """Expand a trained small transformer x2 in width and up to x2 in depth, losslessly (LEMON).

    Parameters
    ----------
    model, optimizer, total_steps, example, make_optimizer
        See :class:`~torchgrow.methods.scheduled.ScheduledGrowth`.
    n : int, default 2
        Width multiplier (torchgrow's LEMON needs an integer; see docs/transformers.md).
    n_layer : int, optional
        Depth after expansion, at most twice the model's (default twice). The last
        ``n_layer - L`` blocks are each followed by an inserted zero-output copy.
    at : float, default 0.4
        When to expand, as a share of ``total_steps``.
    rewarm : float, default 0.04
        Re-warm-up after expansion, as a share of ``total_steps``, from
        ``0.1`` of the peak (the code's ``udfcosine``), then cosine to 0.1.
    split : {"comp", "projection", "even"}, default "comp"
        How each reader's weight is shared by the copies it reads (see
        :func:`torchgrow.ops.clone_width`): LEMON's BERT default ``"comp"``, its ViT
        rule ``"projection"``, or ``"even"`` (HyperCloning's ``W / n``: copies stay
        copies; a named deviation for ablations).
    split_std, split_scale : float, default 0.02 and 0.1
        The random parts of the split (the large model's init scale; ``comp``'s factor).
    seed : int, default 0
        Seed of the split.
    """

    name = "LEMON"
    DESCRIPTION = LEMON_DESCRIPTION
    warm_from = 0.1

    def __init__(self, model, optimizer, total_steps, example, *, n: int = 2,
                 n_layer: int | None = None, at: float = 0.4, rewarm: float = 0.04,
                 split: str = "comp", split_std: float = 0.02, split_scale: float = 0.1,
                 seed: int = 0, make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None) -> None:  # fmt: skip
        super().__init__(
            model, optimizer, total_steps, example, at=at, make_optimizer=make_optimizer
        )
        depth = len(ops.find_layout(model).blocks)
        self.n, self.n_layer = n, 2 * depth if n_layer is None else n_layer
        if not depth <= self.n_layer <= 2 * depth:
            raise GrowthInputError(
                f"LEMON grows depth by at most 2x: n_layer={self.n_layer} for {depth} blocks"
            )
        self.warm_after = rewarm
        self.split = {"split": split, "split_std": split_std, "split_scale": split_scale}
        self._gen = torch.Generator().manual_seed(seed)
        self.events = [Event(at, f"width x{n} + depth {depth}->{self.n_layer}", self._expand,
                             fresh_optimizer=True)]  # fmt: skip

    def _expand(self, method: ScheduledGrowth) -> ops.EditRecord:
        record = ops.clone_width(self.model, self.n, generator=self._gen, example=self.example,
                                 **self.split)  # fmt: skip
        depth = len(ops.find_layout(self.model).blocks)
        worst = record.details["max_abs_dout"]
        for i in range(depth - 1, 2 * depth - self.n_layer - 1, -1):  # last blocks first
            r = ops.insert_identity_block(self.model, i + 1, source=i, example=self.example)
            worst = max(worst, r.details["max_abs_dout"])
        record.details["max_abs_dout"] = worst
        record.details["depth_after"] = self.n_layer
        return record
