"""NeST — "A Neural Network Synthesis Tool Based on a Grow-and-Prune Paradigm" (Dai, Yin, Jha, 2019).

No public implementation exists; every rule the paper leaves open is a named
parameter here (defaults marked [I] are engineering choices, see
``docs/nest.md``). The algorithm:

1. **Seed**: the given architecture (built at width ratio ``r``, e.g.
   ``models.lenet_300_100(width_mult=0.4)``) with ``seed_connectivity`` (10 %)
   random connections per layer.
2. **Growth phase**, round by round until validation accuracy reaches
   ``target_accuracy`` or ``max_grow_rounds`` rounds are done:
   Policy 1 (activate the dormant connections with the largest |dL/dw|),
   Policy 2 (new neurons in hidden FC layers from the bridging gradient),
   Policy 3 (new conv feature maps, best of ``r`` candidates), then
   ``grow_epochs`` of training.
3. **Pruning phase**: prune the smallest-magnitude active weights of every
   layer (``prune_fraction``; BatchNorm-effective), remove dead neurons and
   maps, retrain ``retrain_epochs``; keep the step while validation accuracy
   stays within ``tolerance`` of the target accuracy (or, without a target,
   of the accuracy after growth), else stop and keep the previous network.
4. Optionally, **partial-area convolution** (Algorithm 2, ``area_rounds``):
   mask the weakest ``area_gamma`` of every conv's input positions, retrain,
   keep while validation accuracy holds.

Validation is a held-out split of the training data.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .. import distributed
from ..connections import grow_by_gradient, prune_by_magnitude, remove_dead_units
from ..data import Dataset
from ..errors import GrowthInputError, require_int
from ..graph import growable_units
from ..grower import Grower
from ..how import NeSTFeatureMap, NeSTNeuron
from ..ops.masks import apply_mask, is_masked
from ..partial_area import prune_input_area
from ..size import Units
from ..when import Manual
from ..where import Layers
from ..why import TrainingCompute, accuracy, count_parameters, flops_per_example

__all__ = ["NeST", "DESCRIPTION"]

DESCRIPTION = {
    "name": "NeST",
    "paper": "Dai, Yin, Jha. IEEE Trans. Computers 2019 (arXiv 1711.02017)",
    "why": "compact and accurate networks: fewest active parameters and FLOPs at the target error",
    "when": "growth rounds until a target accuracy (or budget), then prune/retrain rounds "
    "while validation error stays within a tolerance",
    "where": "dormant connections (all layers), neurons (FC), feature maps (conv); "
    "pruning everywhere",
    "how": "connections by largest |dL/dw|; neurons from the bridging gradient with "
    "birth-strength rescale; maps best of r candidates; magnitude pruning",
}

LossFn = Callable[[Tensor, Tensor], Tensor]


class NeST:
    """Run NeST's grow-and-prune synthesis on a model, with its optimizer carried throughout.

    Parameters
    ----------
    model : nn.Module
        The seed architecture (already at width ratio ``r``).
    optimizer : torch.optim.Optimizer
        Its optimizer; carried through every growth and pruning edit.
    data : Dataset
        Training data; ``val_fraction`` of it is held out for the phase decisions.
    loss_fn : callable, optional
        Default cross-entropy.
    batch_size : int
        Training batch size.
    val_fraction : float
        Held-out fraction of the training set used for validation.
    seed_connectivity : float or None
        Random connectivity applied to every Linear/Conv2d at the start (10 %
        in the paper); ``None`` keeps the model's masks as they are.
    target_accuracy : float, optional
        Growth stops when validation accuracy reaches it (the paper: 1 - 1.3 %
        error for LeNet-300-100 on MNIST).
    max_grow_rounds : int
        Growth budget in rounds.
    grow_patience : int, optional
        Growth also stops when validation accuracy has not improved on its best
        for this many rounds (``None``: only the target and the budget stop
        it). [I]
    grow_epochs : int
        Training epochs after each growth round. [I]
    connection_fraction : float
        Policy 1: fraction of each layer's dormant connections activated per
        round. [I]
    connection_init : {"gradient", "zero"}
        Policy 1: new weights as one gradient step (``-connection_lr * grad``) or 0.
    connection_lr : float
        Step size of the gradient initialisation. [I]
    neurons_per_round : int
        Policy 2: new neurons per hidden FC layer per round (default 10, the
        value of torchgrow's LeNet-300-100 benchmark; 0 turns Policy 2 off).
        [I] The paper grows neurons but gives no number.
    alpha, beta : float
        Policy 2/3 birth strength (paper: > 0.3) and Policy 2 growth ratio. [I]
    maps_per_round, candidates : int
        Policy 3: new feature maps per conv layer per round (default 2, the
        LeNet-5 benchmark's; only where the model has convs; 0 turns it off),
        and candidates r (10). [I]
    prune_fraction : float
        Policy 4: fraction of each layer's active weights pruned per step. [I]
    retrain_epochs : int
        Retraining after each pruning step. [I]
    prune_lr : float, optional
        Learning rate of every parameter group during the pruning phase (and
        partial-area phase); ``None`` keeps the optimizer's. Retraining a
        pruned net at a lower rate than it was trained with, as Han et al. do,
        makes each accept/reject decision less noisy. [I]
    max_prune_rounds : int
        Pruning budget in steps (tried steps, accepted or not).
    prune_retries : int
        After a rejected step, retry from the last accepted network with half
        the fraction, at most this many times; the phase ends at the next
        rejection after that. [I] (The paper prunes in small steps.)
    tolerance : float
        Largest drop of validation accuracy (absolute, e.g. 0.003 = 0.3 points)
        accepted during pruning, relative to ``target_accuracy`` when growth
        reached it (the same reference a pruning-only baseline is judged on),
        else to the best validation accuracy of the seed and growth rounds.
        Measuring from the round that first crossed the target would favour a
        lucky draw: the stopping rule selects it upward.
    area_rounds : int
        Partial-area convolution (Algorithm 2) after the pruning phase: at most
        this many steps, each masking ``area_gamma`` of every conv's active
        input positions, then ``retrain_epochs``, kept while validation
        accuracy holds (same rule as pruning; the first failing step ends it).
        0 (default) skips it; only ordinary ``Conv2d`` layers are masked.
    area_gamma : float
        Partial-area γ: share of active input positions masked per step
        (paper: 1 %).
    seed : int
        Seed of the masks, the data split and order, and the policies.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data: Dataset,
        *,
        loss_fn: LossFn | None = None,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        seed_connectivity: float | None = 0.1,
        target_accuracy: float | None = None,
        max_grow_rounds: int = 5,
        grow_epochs: int = 2,
        grow_patience: int | None = None,
        connection_fraction: float = 0.15,
        connection_init: str = "gradient",
        connection_lr: float = 0.01,
        neurons_per_round: int = 10,
        alpha: float = 0.5,
        beta: float = 0.01,
        maps_per_round: int = 2,
        candidates: int = 10,
        prune_fraction: float = 0.15,
        retrain_epochs: int = 1,
        prune_lr: float | None = None,
        max_prune_rounds: int = 10,
        prune_retries: int = 2,
        tolerance: float = 0.003,
        area_rounds: int = 0,
        area_gamma: float = 0.01,
        seed: int = 0,
    ) -> None:
        for name, value, lo in (
            ("batch_size", batch_size, 1),
            ("max_grow_rounds", max_grow_rounds, 0),
            ("grow_epochs", grow_epochs, 0),
            ("neurons_per_round", neurons_per_round, 0),
            ("maps_per_round", maps_per_round, 0),
            ("retrain_epochs", retrain_epochs, 0),
            ("max_prune_rounds", max_prune_rounds, 0),
            ("prune_retries", prune_retries, 0),
            ("area_rounds", area_rounds, 0),
        ):
            require_int(value, f"NeST({name})", lo)
        if grow_patience is not None:
            require_int(grow_patience, "NeST(grow_patience)", 1)
        if not 0 < val_fraction < 1:
            raise GrowthInputError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        if prune_lr is not None and not prune_lr > 0:
            raise GrowthInputError(f"prune_lr must be > 0 or None, got {prune_lr!r}")
        if not 0 < area_gamma < 1:
            raise GrowthInputError(f"area_gamma must be in (0, 1), got {area_gamma!r}")
        if not tolerance >= 0:
            raise GrowthInputError(f"tolerance must be >= 0, got {tolerance!r}")
        if data.task != "classification":
            raise GrowthInputError("NeST is run on a classification data set")
        self.model, self.optimizer = model, optimizer
        self.loss_fn = loss_fn or F.cross_entropy
        self.batch_size = batch_size
        self.train_set, self.val_set = data.split_validation(val_fraction, seed=seed)
        self.test = (data.x_test, data.y_test)
        self.settings = dict(
            seed_connectivity=seed_connectivity,
            target_accuracy=target_accuracy,
            max_grow_rounds=max_grow_rounds,
            grow_epochs=grow_epochs,
            grow_patience=grow_patience,
            connection_fraction=connection_fraction,
            connection_init=connection_init,
            connection_lr=connection_lr,
            neurons_per_round=neurons_per_round,
            alpha=alpha,
            beta=beta,
            maps_per_round=maps_per_round,
            candidates=candidates,
            prune_fraction=prune_fraction,
            retrain_epochs=retrain_epochs,
            prune_lr=prune_lr,
            max_prune_rounds=max_prune_rounds,
            prune_retries=prune_retries,
            tolerance=tolerance,
            area_rounds=area_rounds,
            area_gamma=area_gamma,
            seed=seed,
        )
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.example = data.x_train[:2]
        self.history: list[dict[str, Any]] = []
        self.training_flops = 0  # training steps (3x forward, active weights) + scoring passes
        self.epochs_trained = 0  # including the retraining of rejected pruning candidates
        self.description = DESCRIPTION

    # ------------------------------------------------------------ pieces
    def _loader(self) -> DataLoader:
        x, y = self.train_set.x_train, self.train_set.y_train
        return DataLoader(
            torch.utils.data.TensorDataset(x, y),
            batch_size=self.batch_size,
            shuffle=True,
            generator=self.generator,
        )

    def _train(self, model: nn.Module, optimizer: torch.optim.Optimizer, epochs: int) -> None:
        """``epochs`` passes; under torch.distributed each rank takes its share of each batch."""
        model.train()
        step_flops = TrainingCompute.step_multiplier * flops_per_example(model, self.example)
        forward = distributed.GrowingDDP(model) if distributed.is_active() else model
        for _ in range(epochs):
            for x, y, n in distributed.sharded_batches(self._loader()):
                loss = distributed.weighted_loss(self.loss_fn(forward(x), y), len(x), n)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                self.training_flops += step_flops * n
            self.epochs_trained += 1

    def _growth_batch(self, n: int = 1024) -> tuple[Tensor, Tensor]:
        x, y = self.train_set.x_train, self.train_set.y_train
        idx = torch.randperm(len(x), generator=self.generator)[:n]
        return x[idx], y[idx]

    def _val(self, model: nn.Module) -> float:
        return distributed.accuracy(model, (self.val_set.x_test, self.val_set.y_test))

    def _record(self, phase: str, round_: int, model: nn.Module, **extra: Any) -> dict[str, Any]:
        row = {
            "phase": phase,
            "round": round_,
            "val_accuracy": self._val(model),
            "val_loss": float(
                distributed.evaluate(model, (self.val_set.x_test, self.val_set.y_test))["loss"]
            ),
            "test_accuracy": distributed.accuracy(model, self.test),
            "parameters": count_parameters(model),
            "flops_per_example": flops_per_example(model, self.example),
            "epochs_trained": self.epochs_trained,
            "training_flops": self.training_flops,
            **extra,
        }
        self.history.append(row)
        return row

    def _grow_units(self, batch: tuple[Tensor, Tensor]) -> tuple[int, int]:
        s = self.settings
        modules = dict(self.model.named_modules())
        neurons = maps = 0
        for u in growable_units(self.model):
            if len(u.producers) != 1 or len(u.consumers) != 1:
                continue
            prod = modules[u.producers[0]]
            if isinstance(prod, nn.Linear) and s["neurons_per_round"]:
                how, k = (
                    NeSTNeuron(
                        alpha=s["alpha"], beta=s["beta"], seed=self.seed + len(self.history)
                    ),
                    s["neurons_per_round"],
                )
            elif isinstance(prod, nn.Conv2d) and s["maps_per_round"]:
                how, k = (
                    NeSTFeatureMap(
                        r=s["candidates"], alpha=s["alpha"], seed=self.seed + len(self.history)
                    ),
                    s["maps_per_round"],
                )
            else:
                continue
            grower = Grower(
                self.model,
                self.optimizer,
                when=Manual(),
                where=Layers([u.name]),
                how=how,
                size=Units(k),
                loss_fn=self.loss_fn,
                measure=False,
            )
            grower.grow(batch)
            if isinstance(prod, nn.Linear):
                neurons += k
            else:
                maps += k
        return neurons, maps

    # ------------------------------------------------------------ the algorithm
    def run(self) -> list[dict[str, Any]]:
        """Run both phases; returns :attr:`history` (one row per round).

        After :meth:`run`, :attr:`model` and :attr:`optimizer` hold the result
        (pruning steps are tried on copies, so they may be new objects).
        """
        s = self.settings
        start = time.perf_counter()
        if s["seed_connectivity"] is not None:
            for m in self.model.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)) and not is_masked(m):
                    apply_mask(
                        m,
                        density=s["seed_connectivity"],
                        generator=self.generator,
                        optimizer=self.optimizer,
                    )
        self._train(self.model, self.optimizer, s["grow_epochs"])
        row = self._record("seed", 0, self.model)
        best, since_best = row["val_accuracy"], 0
        for r in range(1, s["max_grow_rounds"] + 1):
            if s["target_accuracy"] is not None and row["val_accuracy"] >= s["target_accuracy"]:
                break
            if s["grow_patience"] is not None and since_best >= s["grow_patience"]:
                break  # growth stopped helping: prune from here instead of densifying further
            batch = self._growth_batch()
            step_flops = TrainingCompute.step_multiplier * flops_per_example(
                self.model, self.example
            )
            self.training_flops += step_flops * len(batch[0])  # the dense-gradient scoring pass
            local = distributed.shard(batch)  # each rank scores its share; scores are reduced
            added = grow_by_gradient(
                self.model,
                local,
                self.loss_fn,
                fraction=s["connection_fraction"],
                init=s["connection_init"],
                lr=s["connection_lr"],
                optimizer=self.optimizer,
            )
            distributed.agree("NeST's connection growth", self.model, self.optimizer)
            neurons, maps = self._grow_units(local)  # the Grower gathers the shares again
            self._train(self.model, self.optimizer, s["grow_epochs"])
            row = self._record(
                "grow",
                r,
                self.model,
                connections_added=sum(added.values()),
                neurons_added=neurons,
                maps_added=maps,
            )
            if row["val_accuracy"] > best:
                best, since_best = row["val_accuracy"], 0
            else:
                since_best += 1
        # The tolerance is measured from the target when growth reached it (the round that
        # first crossed it is a draw selected upward by the stopping rule itself). Otherwise
        # (no target, or the budget or patience ran out first) from the best accuracy growth
        # reached: the last round's is a noisy draw at the training rate, and a low one would
        # let pruning lose accuracy the network had.
        target = s["target_accuracy"]
        reference = best if target is None else min(target, best)
        if s["prune_lr"] is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = s["prune_lr"]
        fraction, retries = s["prune_fraction"], s["prune_retries"]
        for r in range(1, s["max_prune_rounds"] + 1):
            cand_model, cand_opt = copy.deepcopy((self.model, self.optimizer))
            pruned = prune_by_magnitude(cand_model, fraction, optimizer=cand_opt)
            removed = remove_dead_units(cand_model, optimizer=cand_opt)
            self._train(cand_model, cand_opt, s["retrain_epochs"])
            val = self._val(cand_model)
            accepted = val >= reference - s["tolerance"]
            if accepted:
                distributed.agree("NeST's pruning", cand_model, cand_opt)
                self.model, self.optimizer = cand_model, cand_opt
            self._record(
                "prune",
                r,
                cand_model,
                accepted=accepted,
                prune_fraction=fraction,
                connections_pruned=sum(pruned.values()),
                units_removed=sum(removed.values()),
            )
            if not accepted:
                if retries == 0:
                    break
                retries -= 1
                fraction /= 2  # a smaller step from the last accepted network
        self._partial_area(reference)
        self.seconds = time.perf_counter() - start
        return self.history

    def _partial_area(self, reference: float) -> None:
        """Algorithm 2 steps on copies, kept while validation accuracy holds."""
        s = self.settings
        if not s["area_rounds"]:
            return
        if not any(isinstance(m, nn.Conv2d) and m.groups == 1 for m in self.model.modules()):
            return
        calibration = self._growth_batch()[0]
        for r in range(1, s["area_rounds"] + 1):
            cand_model, cand_opt = copy.deepcopy((self.model, self.optimizer))
            masked = prune_input_area(cand_model, calibration, s["area_gamma"])
            self._train(cand_model, cand_opt, s["retrain_epochs"])
            accepted = self._val(cand_model) >= reference - s["tolerance"]
            if accepted:
                self.model, self.optimizer = cand_model, cand_opt
            self._record(
                "area", r, cand_model, accepted=accepted, positions_masked=sum(masked.values())
            )
            if not accepted:
                break

    def summary(self) -> dict[str, Any]:
        """The final network: validation/test accuracy, active parameters, FLOPs per example."""
        return {
            "val_accuracy": self._val(self.model),
            "test_accuracy": accuracy(self.model, self.test),
            "parameters": count_parameters(self.model),
            "flops_per_example": flops_per_example(self.model, self.example),
            "rounds": len(self.history),
            "epochs_trained": self.epochs_trained,
            "training_flops": self.training_flops,
        }
