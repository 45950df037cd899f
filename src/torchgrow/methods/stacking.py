"""G_stack (Du et al., NeurIPS 2024) and MIDAS (Saunshi et al., NeurIPS 2024): grow depth by
copying trained blocks."""

from __future__ import annotations

from .. import ops
from .scheduled import Event, ScheduledGrowth, cosine

__all__ = ["GStack", "MIDAS", "DESCRIPTION", "MIDAS_DESCRIPTION"]

DESCRIPTION = {
    "why": "reuse a small model's training: a deeper model initialised from it reaches a "
    "scratch model's loss with fewer tokens (7B: the 300B-token loss at 194B, abstract)",
    "when": "once, early: the official README stacks the base after about 10B of 300B tokens "
    "(its growth-time formula gives more tokens than the budget at small scale)",
    "where": "depth: the whole stack repeated g = 4 times (layer i copies layer i mod L); "
    "embeddings, final norm and head kept",
    "how": "copies of the trained blocks; not function-preserving; a fresh optimizer and a new "
    "warm-up + cosine schedule after stacking",
}

MIDAS_DESCRIPTION = {
    "why": "gradual stacking with a bias towards reasoning; up to 40 % faster (abstract)",
    "when": "in stages (here at 5, 15 and 30 % of the run, a stand-in for the unverified PROP "
    "schedule)",
    "where": "depth: a copy of the middle block inserted after it",
    "how": "copies, not function-preserving; one schedule, optimizer carried",
}


class GStack(ScheduledGrowth):
    """Stack the trained stack ``g`` times at ``at`` of the run (G_stack).

    Parameters
    ----------
    model, optimizer, total_steps, example, make_optimizer
        See :class:`~torchgrow.methods.scheduled.ScheduledGrowth`.
    g : int, default 4
        Growth factor (the paper's choice).
    at : float, default 0.033
        When to stack, as a share of ``total_steps`` (the README's 10B of 300B tokens).

    Notes
    -----
    Before stacking the learning rate warms up and then stays at its peak (the base
    checkpoint is taken mid-schedule); after it a fresh optimizer warms up again and
    decays by cosine to 0.1 of the peak over the rest of the run. The paper's stacked
    run also lowers the peak (3e-4 against 1e-3 at 7B); here the peak is the
    optimizer's own, a deviation named by ``peak_after`` (default 1.0: unchanged).
    """

    name = "G_stack"
    DESCRIPTION = DESCRIPTION

    def __init__(self, model, optimizer, total_steps, example, *, g: int = 4, at: float = 0.033,
                 peak_after: float = 1.0, make_optimizer=None) -> None:  # fmt: skip
        super().__init__(model, optimizer, total_steps, example, make_optimizer=make_optimizer)
        self.g, self.at, self.peak_after = g, at, peak_after
        self.events = [Event(at, f"stack x{g}", self._stack, fresh_optimizer=True)]

    def _stack(self, method: ScheduledGrowth) -> ops.EditRecord:
        n = len(ops.find_layout(self.model).blocks)
        order = ops.g_stack_order(n, self.g)
        return ops.stack_blocks(self.model, order, optimizer=None, example=self.example)

    def lr_factor(self, step: int) -> float:
        at = self.last_event()
        if step < at:
            return min(1.0, (step + 1) / max(1, min(10, at)))
        return self.peak_after * cosine(step - at, self.total_steps - at)


class MIDAS(ScheduledGrowth):
    """Insert a copy of the middle block at each of ``stages`` (MIDAS's gradual stacking).

    Parameters
    ----------
    model, optimizer, total_steps, example, make_optimizer, policy
        See :class:`~torchgrow.methods.scheduled.ScheduledGrowth`.
    stages : sequence of float, default (0.05, 0.15, 0.30)
        When to grow, as shares of ``total_steps`` (stage lengths 1:2:3; the paper's
        PROP schedule could not be verified).
    """

    name = "MIDAS"
    DESCRIPTION = MIDAS_DESCRIPTION

    def __init__(self, model, optimizer, total_steps, example, *,
                 stages: tuple[float, ...] = (0.05, 0.15, 0.30), make_optimizer=None,
                 policy: ops.OptimizerPolicy | None = None) -> None:  # fmt: skip
        super().__init__(model, optimizer, total_steps, example, make_optimizer=make_optimizer,
                         policy=policy)  # fmt: skip
        self.events = [Event(f, f"middle copy {i + 1}", self._grow) for i, f in enumerate(stages)]

    def _grow(self, method: ScheduledGrowth) -> ops.EditRecord:
        n = len(ops.find_layout(self.model).blocks)
        return ops.stack_blocks(
            self.model, ops.midas_order(n), optimizer=self.optimizer, example=self.example,
            policy=self.policy,
        )  # fmt: skip
