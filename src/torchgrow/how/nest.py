"""NeST's initialisers (Dai, Yin, Jha 2019): Policy 2 neurons and Policy 3 feature maps.

See ``docs/nest.md``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import GrowthInputError, require_int
from ..graph import GrowableUnit
from ..stats import Statistics
from .base import How, Init, fan_out_block, fan_out_vectors
from .pair_matrix import dense_pair_matrix


class NeSTNeuron(How):
    """NeST Policy 2 (Dai, Yin, Jha 2018, Algorithm 1): new neurons from the bridging gradient.

    ``B = sum_batch (dL/du_{l+1}) x_{l-1}^T`` is the gradient a direct
    connection ``n -> m`` from the producer's input to the consumer's output
    would get. For every pair with ``|B[m, n]|`` at or above the
    ``ceil(beta * B.numel())``-th largest value, a random sign ``eps`` adds
    ``eps * sqrt|B[m, n]|`` to the new neuron's fan-in ``w_in[n]`` and
    ``-sign(B[m, n]) * eps * sqrt|B[m, n]|`` to its fan-out ``w_out[m]``, so that
    each selected two-hop path ``w_out[m] * w_in[n] = -B[m, n]`` imitates a
    gradient-descent step on the virtual bridge (pairs sharing ``m`` or ``n``
    accumulate, as in the paper). Both vectors are then rescaled by the birth
    strength: ``mean|w_new| = alpha * mean|existing non-zero weights|`` of the
    producer (fan-in) and consumer (fan-out). The new neuron's connections are
    exactly its non-zero pattern (``new_connections = "nonzero"``); its bias is 0.

    Each of ``k`` neurons draws its own signs from the same ``B``.

    Parameters
    ----------
    alpha : float
        Birth strength (the paper: alpha > 0.3 works well).
    beta : float
        Growth ratio: fraction of the entries of ``B`` that connect (the paper
        gives no value; 0 < beta <= 1).
    seed : int
        Seed of the random signs.
    """

    needs = frozenset({"producer_input", "consumer_grad"})
    function_preserving = False
    new_connections = "nonzero"

    def __init__(self, alpha: float = 0.5, beta: float = 0.01, seed: int = 0) -> None:
        if not alpha > 0:
            raise GrowthInputError(f"alpha (birth strength) must be > 0, got {alpha!r}")
        if not 0 < beta <= 1:
            raise GrowthInputError(f"beta (growth ratio) must be in (0, 1], got {beta!r}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.generator = torch.Generator().manual_seed(seed)

    def describe(self) -> str:
        return f"bridging-gradient neurons (beta {self.beta:g}, birth strength {self.alpha:g})"

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    @staticmethod
    def _mean_abs_nonzero(w: Tensor) -> float:
        nz = w[w != 0]
        return float(nz.abs().mean()) if nz.numel() else 1.0

    def init(self, unit: GrowableUnit, k: int, stats: Statistics | None, model: nn.Module) -> Init:
        if stats is None:
            raise GrowthInputError("NeSTNeuron needs growth-batch statistics")
        modules = dict(model.named_modules())
        if len(unit.producers) != 1 or len(unit.consumers) != 1:
            raise GrowthInputError(
                f"NeSTNeuron grows a hidden layer between one producer and one consumer; "
                f"{unit.name!r} has {len(unit.producers)} and {len(unit.consumers)}"
            )
        p, c = unit.producers[0], unit.consumers[0]
        prod, cons = modules[p], modules[c.name]
        if not (isinstance(prod, nn.Linear) and isinstance(cons, nn.Linear) and c.factor == 1):
            raise GrowthInputError(
                "NeSTNeuron grows neurons of fully connected layers (Linear -> Linear); "
                "use feature-map growth for conv layers"
            )
        b = dense_pair_matrix(stats.producer_inputs[p], stats.consumer_grads[c.name])
        count = max(1, math.ceil(self.beta * b.numel()))
        thr = b.abs().flatten().topk(count).values[-1]
        selected = (b.abs() >= thr) & (b != 0)
        mags = b.abs().sqrt()
        w_in = torch.zeros(k, b.shape[1], dtype=torch.float64)
        w_out = torch.zeros(k, b.shape[0], dtype=torch.float64)
        ms, ns = selected.nonzero(as_tuple=True)
        for j in range(k):
            eps = torch.randint(0, 2, (len(ms),), generator=self.generator).double() * 2 - 1
            w_in[j].index_add_(0, ns, eps * mags[ms, ns])
            w_out[j].index_add_(0, ms, -torch.sign(b[ms, ns]) * eps * mags[ms, ns])
        ref_in = self._mean_abs_nonzero(prod.weight.detach())
        ref_out = self._mean_abs_nonzero(cons.weight.detach())
        for w, ref in ((w_in, ref_in), (w_out, ref_out)):
            for j in range(k):
                nz = w[j][w[j] != 0]
                if nz.numel():
                    w[j] *= self.alpha * ref / float(nz.abs().mean())
        dtype = prod.weight.dtype
        return Init(
            fan_in={p: w_in.to(dtype)},
            fan_out={c.name: w_out.T.to(dtype)},
            info={"pairs": int(selected.sum()), "threshold": float(thr)},
        )


class NeSTFeatureMap(How):
    """NeST Policy 3: new conv feature maps, the best of ``r`` random candidates by the loss.

    Each candidate draws He-normal kernels for the new maps' fan-in and random
    fan-out slices in the consumer, both rescaled like Policy 2's birth
    strength (``mean|new| = alpha * mean|existing non-zero|``); the candidate
    with the lowest loss on the growth batch is kept (the paper reports about
    twice the immediate loss reduction of a single random map). The paper
    gives no ``r``; 10 is used by default.

    Parameters
    ----------
    r : int
        Number of candidates.
    alpha : float
        Birth strength.
    seed : int
        Seed of the candidates.
    """

    needs = frozenset({"producer_input", "consumer_grad"})
    function_preserving = False

    def __init__(self, r: int = 10, alpha: float = 0.5, seed: int = 0) -> None:
        self.r = require_int(r, "NeSTFeatureMap(r)", 1)
        if not alpha > 0:
            raise GrowthInputError(f"alpha (birth strength) must be > 0, got {alpha!r}")
        self.alpha = float(alpha)
        self.generator = torch.Generator().manual_seed(seed)

    def describe(self) -> str:
        return f"best of {self.r} random feature maps by the loss (birth strength {self.alpha:g})"

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def _scaled(self, shape: tuple[int, ...], ref: Tensor, fan_in: int) -> Tensor:
        t = torch.randn(shape, generator=self.generator) * math.sqrt(2.0 / max(fan_in, 1))
        target = self.alpha * NeSTNeuron._mean_abs_nonzero(ref)
        return t * (target / float(t.abs().mean().clamp_min(1e-12)))

    def init(self, unit: GrowableUnit, k: int, stats: Statistics | None, model: nn.Module) -> Init:
        from ..trial import TrialGrowth

        if stats is None:
            raise GrowthInputError("NeSTFeatureMap needs a growth batch")
        modules = dict(model.named_modules())
        if not all(isinstance(modules[p], nn.Conv2d) for p in unit.producers):
            raise GrowthInputError(
                f"NeSTFeatureMap grows conv feature maps; {unit.name!r} is not produced by Conv2d"
            )
        trial = TrialGrowth(model, unit, k)
        best: tuple[float, Init] | None = None
        losses = []
        for _ in range(self.r):
            cand = Init()
            for p in unit.producers:
                w = modules[p].weight.detach()
                cand.fan_in[p] = self._scaled((k, *w.shape[1:]), w, w[0].numel())
            for c in unit.consumers:
                m = modules[c.name]
                existing = fan_out_vectors(m, c.factor)
                cand.fan_out[c.name] = self._scaled((k, existing.shape[1]), m.weight.detach(), k)
            with torch.no_grad():
                loss = float(trial.loss(stats.batch, stats.loss_fn, cand.fan_in, cand.fan_out))
            losses.append(loss)
            if best is None or loss < best[0]:
                best = (loss, cand)
        assert best is not None
        chosen = best[1]
        out = Init(
            fan_in=chosen.fan_in,
            info={"best_loss": best[0], "mean_candidate_loss": sum(losses) / len(losses)},
        )
        for c in unit.consumers:
            out.fan_out[c.name] = fan_out_block(modules[c.name], chosen.fan_out[c.name], c.factor)
        return out
