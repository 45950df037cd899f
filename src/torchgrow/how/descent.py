"""Initialisers that search for the new weights by optimisation: GradMaxOpt and LossDescent,
the baselines GradMax's paper compares against.

See ``docs/gradmax.md``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import GrowthInputError, require_int
from ..graph import GrowableUnit
from ..stats import Statistics
from .base import How, Init, Random, _normalise_rows, fan_out_block, fan_out_vectors_of_block

__all__ = ["GradMaxOpt", "LossDescent"]


def _project(vectors: Tensor, norms: float) -> Tensor:
    return _normalise_rows(vectors) * norms


class GradMaxOpt(How):
    """GradMax by optimisation (the official ``AddGradmaxOptim`` baseline).

    Starts from :class:`Random` growth (zero fan-in, uniform fan-out at the
    target norm), then takes ``steps`` Adam steps that *maximise* the norm of
    the new fan-in's gradient over the new fan-out, re-projecting each new
    vector to its target norm after every step.

    Parameters
    ----------
    scale, scale_method : see :class:`GradMax`.
    steps : int
        Adam steps (100 in the official code).
    lr : float
        Adam learning rate (the official code: Keras Adam's default, 0.001;
        its student-teacher notebook uses 100 for Fig. 2a).
    seed : int
        Seed of the random start.
    """

    needs = frozenset({"producer_input", "consumer_grad"})
    function_preserving = True

    def __init__(
        self,
        scale: float = 0.5,
        scale_method: str = "mean_norm",
        steps: int = 100,
        lr: float = 0.001,
        seed: int = 0,
    ) -> None:
        if not lr > 0:
            raise GrowthInputError(f"lr must be > 0, got {lr!r}")
        self.start = Random(scale, zero_side="in", scale_method=scale_method, seed=seed)
        self.steps = require_int(steps, "GradMaxOpt(steps)", 1)
        self.lr = float(lr)
        self.scale = float(scale)
        self.scale_method = scale_method

    def describe(self) -> str:
        return f"zero fan-in; fan-out: {self.steps} Adam steps maximising the fan-in gradient"

    def state_dict(self) -> dict[str, Any]:
        return self.start.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start.load_state_dict(state)

    def init(self, unit: GrowableUnit, k: int, stats: Statistics | None, model: nn.Module) -> Init:
        from ..trial import TrialGrowth

        if stats is None:
            raise GrowthInputError("GradMaxOpt needs growth-batch statistics")
        modules = dict(model.named_modules())
        start = self.start.init(unit, k, stats, model)
        trial = TrialGrowth(model, unit, k)
        names = [c.name for c in unit.consumers]
        factors = {c.name: c.factor for c in unit.consumers}
        v = {
            c: fan_out_vectors_of_block(modules[c], start.fan_out[c], factors[c])
            .clone()
            .requires_grad_()
            for c in names
        }
        norms = {c: float(v[c].detach().norm(dim=1).mean()) for c in names}
        opt = torch.optim.Adam(list(v.values()), lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.steps):
                g = trial.fan_in_gradient(
                    stats.batch,
                    stats.loss_fn,
                    v,
                    create_graph=True,
                    consumer_grads=stats.consumer_grads,
                )
                objective = sum(t.pow(2).sum() for t in g.values())
                opt.zero_grad()
                (-objective).backward()
                opt.step()
                with torch.no_grad():
                    for c in names:
                        v[c].copy_(_project(v[c], norms[c]))
        out = Init(info={"solver": "adam", "steps": self.steps})
        for c in names:
            out.fan_out[c] = fan_out_block(modules[c], v[c].detach(), factors[c])
        return out


class LossDescent(How):
    """Firefly-like growth (the official ``AddFirefly`` baseline): descend the loss over new weights.

    Starts from random fan-in and fan-out (uniform directions; fan-out at
    ``scale`` x the mean existing fan-out norm, fan-in at ``in_scale`` x the
    mean existing fan-in norm), then takes ``steps`` Adam steps *minimising*
    the loss over both, re-projecting each new vector to its target norm after
    every step. The function changes (the event records by how much).

    Parameters
    ----------
    scale : float
        Fan-out norm factor.
    in_scale : float
        Fan-in norm factor (> 0: a zero fan-in could not be re-projected).
    scale_method : {"mean_norm", "fixed"}
        How target norms are computed.
    steps : int
        Adam steps (100 in the official code).
    lr : float
        Adam learning rate (the official code: Keras Adam's default, 0.001;
        its student-teacher notebook uses 100 for Fig. 2a).
    seed : int
        Seed of the random start.
    """

    needs = frozenset({"producer_input", "consumer_grad"})
    function_preserving = False

    def __init__(
        self,
        scale: float = 0.5,
        in_scale: float = 0.01,
        scale_method: str = "mean_norm",
        steps: int = 100,
        lr: float = 0.001,
        seed: int = 0,
    ) -> None:
        if not in_scale > 0:
            raise GrowthInputError(f"in_scale must be > 0, got {in_scale!r}")
        self.out_start = Random(scale, zero_side="in", scale_method=scale_method, seed=seed)
        self.in_start = Random(in_scale, zero_side="out", scale_method=scale_method, seed=seed + 1)
        self.steps = require_int(steps, "LossDescent(steps)", 1)
        self.lr = float(lr)

    def describe(self) -> str:
        return f"random fan-in and fan-out, then {self.steps} Adam steps on the loss"

    def state_dict(self) -> dict[str, Any]:
        return {"out": self.out_start.state_dict(), "in": self.in_start.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.out_start.load_state_dict(state["out"])
        self.in_start.load_state_dict(state["in"])

    def init(self, unit: GrowableUnit, k: int, stats: Statistics | None, model: nn.Module) -> Init:
        from ..trial import TrialGrowth

        if stats is None:
            raise GrowthInputError("LossDescent needs a growth batch")
        modules = dict(model.named_modules())
        outs = self.out_start.init(unit, k, stats, model).fan_out
        ins = self.in_start.init(unit, k, stats, model).fan_in
        trial = TrialGrowth(model, unit, k)
        factors = {c.name: c.factor for c in unit.consumers}
        v = {
            c: fan_out_vectors_of_block(modules[c], outs[c], factors[c]).clone().requires_grad_()
            for c in factors
        }
        w = {p: t.reshape(k, -1).clone().requires_grad_() for p, t in ins.items()}
        vn = {c: float(t.detach().norm(dim=1).mean()) for c, t in v.items()}
        wn = {p: float(t.detach().norm(dim=1).mean()) for p, t in w.items()}
        opt = torch.optim.Adam([*v.values(), *w.values()], lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.steps):
                loss = trial.loss(stats.batch, stats.loss_fn, w, v)
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for c in v:
                        v[c].copy_(_project(v[c], vn[c]))
                    for p in w:
                        w[p].copy_(_project(w[p], wn[p]))
        out = Init(info={"solver": "adam", "steps": self.steps, "loss_after": float(loss.detach())})
        for c in v:
            out.fan_out[c] = fan_out_block(modules[c], v[c].detach(), factors[c])
        for p in w:
            out.fan_in[p] = w[p].detach().reshape(ins[p].shape)
        return out
