"""MSG (Yao, Zhang, Li, Wang; ICLR 2024): masked structural growth of a transformer on a schedule.

Every new structure (FFN units, hidden size, heads, layers) enters through a mask
that ramps linearly from 0 to 1 over a few steps, so each event preserves the function
whatever the new weights are; the optimizer is carried (old moments kept, new
entries at zero) and the linear learning-rate schedule is rewound to its peak at
the first two events.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .. import ops
from ..errors import GrowthInputError
from .scheduled import Event, ScheduledGrowth

__all__ = ["MSG", "DESCRIPTION"]

DESCRIPTION = {
    "why": "train most of the run on a smaller model: 2.2x faster BERT-large and 1.4x "
    "GPT-2 pre-training at the same downstream score (abstract)",
    "when": "on a fixed schedule: FFN at 10 %, layers x2 at 20 %, hidden at 30 %, heads at "
    "40 %, layers x2 at 50 % of the run (the official scripts' proportions)",
    "where": "every dimension in turn: FFN width, depth (copies appended on top), the hidden "
    "size (masked norms), heads",
    "how": "new weights N(0, 0.02) behind masks ramped 0 -> 1 over 5 % of the run "
    "(function-preserving at every event); Adam state carried, new entries zero; the linear "
    "lr schedule rewound to its peak at the first two events",
}


class MSG(ScheduledGrowth):
    """Masked structural growth into a target FFN width, hidden size, head count and depth.

    Parameters
    ----------
    model, optimizer, total_steps, example, make_optimizer, policy
        See :class:`~torchgrow.methods.scheduled.ScheduledGrowth`.
    d_ff, n_head, n_layer : int
        The target widths and depth; each must be at least the model's. Depth
        grows in two events, to ``min(2 L, n_layer)`` and then to ``n_layer``.
    d_model : int, optional
        The target hidden size (default the model's: no hidden event); it grows
        through :func:`torchgrow.ops.grow_hidden`'s masked norms.
    times : tuple of 4 floats, default (0.10, 0.20, 0.40, 0.50)
        When the FFN, first layer, heads and second layer events happen, as shares
        of ``total_steps`` (the official scripts' 10/20/40/50 %).
    hidden_at : float, default 0.30
        When the hidden-size event happens (the official 30 %).
    ramp : float, default 0.05
        Length of each mask's ramp, as a share of ``total_steps``; events must be
        further apart (MSG allows one ramp at a time).
    std : float, default 0.02
        Standard deviation of the new weights.
    layer_order : {"append", "interleave"}, default "append"
        Where copied layers go: on top in order ``0..L-1`` (MSG's default), or each
        after its source (its ``random-interpolate``).
    rewinds : int, default 2
        Events at which the linear schedule jumps back to its peak.
    warmup : float, default 0.05
        Warm-up share of the linear schedule (at least 10 steps).
    seed : int, default 0
        Seed of the new weights.
    """

    name = "MSG"
    DESCRIPTION = DESCRIPTION

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        example: Tensor,
        *,
        d_ff: int,
        n_head: int,
        n_layer: int,
        d_model: int | None = None,
        times: tuple[float, float, float, float] = (0.10, 0.20, 0.40, 0.50),
        hidden_at: float = 0.30,
        ramp: float = 0.05,
        std: float = 0.02,
        layer_order: str = "append",
        rewinds: int = 2,
        warmup: float = 0.05,
        seed: int = 0,
        make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
        policy: ops.OptimizerPolicy | None = None,
    ) -> None:
        super().__init__(
            model, optimizer, total_steps, example, make_optimizer=make_optimizer, policy=policy
        )
        if layer_order not in ("append", "interleave"):
            raise GrowthInputError(
                f"layer_order must be 'append' or 'interleave', got {layer_order!r}"
            )
        parts = ops.find_layout(model)
        b0 = parts.blocks[0]
        up = b0.ffn.up
        down = b0.ffn.down
        now = {"d_ff": int(getattr(up, "out_features", None) or up.nf),  # nn.Linear or Conv1D
               "n_head": b0.attn.n_head, "n_layer": len(parts.blocks),
               "d_model": int(getattr(down, "out_features", None) or down.nf)}  # fmt: skip
        d_model = now["d_model"] if d_model is None else d_model
        want = {"d_ff": d_ff, "n_head": n_head, "n_layer": n_layer, "d_model": d_model}
        for key, value in want.items():
            if value < now[key]:
                raise GrowthInputError(f"MSG grows: {key}={value} is below the model's {now[key]}")
        if len(times) != 4 or list(times) != sorted(times) or not 0 < times[0] <= times[-1] < 1:
            raise GrowthInputError(f"times must be 4 increasing shares in (0, 1), got {times!r}")
        if not 0 < hidden_at < 1:
            raise GrowthInputError(f"hidden_at must be a share in (0, 1), got {hidden_at!r}")
        grows_hidden = d_model > now["d_model"]
        shares = sorted([*times, hidden_at] if grows_hidden else times)
        gaps = [b - a for a, b in zip(shares, shares[1:], strict=False)]
        if ramp <= 0 or ramp > min(gaps):
            raise GrowthInputError(
                f"ramp={ramp} must be > 0 and no longer than the shortest gap between events "
                f"({min(gaps):.3f}): MSG ramps one structure at a time"
            )
        self.std, self.layer_order, self.rewinds, self.warmup = std, layer_order, rewinds, warmup
        self.ramp_steps = max(1, round(ramp * total_steps))
        self._gen = torch.Generator().manual_seed(seed)
        mid = min(2 * now["n_layer"], n_layer)
        plan = [
            (times[0], f"FFN {now['d_ff']}->{d_ff}", "ffn", d_ff - now["d_ff"]),
            (times[1], f"layers {now['n_layer']}->{mid}", "layers", mid),
            (hidden_at, f"hidden {now['d_model']}->{d_model}", "hidden", d_model - now["d_model"]),
            (times[2], f"heads {now['n_head']}->{n_head}", "heads", n_head - now["n_head"]),
            (times[3], f"layers {mid}->{n_layer}", "layers", n_layer),
        ]
        plan.sort(key=lambda e: e[0])  # stable: the official order when the shares tie
        self.events = [
            Event(at, name, self._apply(kind, amount))
            for at, name, kind, amount in plan
            if (
                amount > 0
                if kind != "layers"
                else amount > (now["n_layer"] if at == times[1] else mid)
            )
        ]

    def _apply(self, kind: str, amount: int):
        def apply(method: ScheduledGrowth) -> ops.EditRecord:
            kw = {
                "optimizer": self.optimizer,
                "example": self.example,
                "ramp": self.ramp(self.ramp_steps),
                "policy": self.policy,
            }
            if kind == "ffn":
                return ops.grow_ffn(self.model, amount, fan_out="random", std=self.std,
                                    generator=self._gen, **kw)  # fmt: skip
            if kind == "heads":
                return ops.add_heads(self.model, amount, std=self.std, generator=self._gen, **kw)
            if kind == "hidden":
                return ops.grow_hidden(self.model, amount, std=self.std, generator=self._gen, **kw)
            n = len(ops.find_layout(self.model).blocks)
            extra = amount - n
            if self.layer_order == "append":
                order = [*range(n), *range(extra)]
            else:
                order = [j for i in range(n) for j in ([i, i] if i < extra else [i])]
            return ops.stack_blocks(self.model, order, **kw)

        return apply

    def lr_factor(self, step: int) -> float:
        """Linear decay after warm-up, rewound to the peak at the first ``rewinds`` events."""
        total = self.total_steps
        w = min(max(10, round(self.warmup * total)), total - 1)
        if step < w:
            return (step + 1) / w
        shift = 0
        for t_e in self.event_steps()[: self.rewinds]:
            if step >= t_e:
                shift = max(0, t_e - w)
        return max(0.0, (total - step + shift) / (total - w))
