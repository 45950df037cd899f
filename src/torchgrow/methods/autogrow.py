"""AutoGrow — "Automatic Layer Growing in Deep Convolutional Networks" (Wen et al., KDD 2020).

Depth growth of a stage-structured network, following the official code:

1. Train in intervals of ``interval`` (K) epochs at a constant learning rate
   (c-AutoGrow: a staircase inside each interval, lr, lr/10 from half, lr/100
   from three quarters).
2. At the end of every interval, first the stopping policy: if the running
   maximum of validation accuracy improved by less than ``tau`` points over
   the last ``window`` (J) epochs, the most recently grown stage is frozen for
   good. Then, if any stage is neither frozen nor full, a new block is appended
   at the end of the next stage (round robin, ``where``), initialised by
   ``init`` (GauInit by default), with the optimizer state of every old
   parameter carried and the new parameters starting with empty state.
3. When every stage is frozen or full (or the growth budget ends), the found
   network is fine-tuned for ``tail_epochs`` with the step schedule (x0.1 at
   50 % and 75 %).

Unlike the official code, which uses the test set for the stopping policy,
validation here is a held-out split of the training data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from .. import distributed
from ..data import Dataset
from ..errors import GrowthInputError, require_int
from ..how.autogrow import AdamInit, BlockInit, DefaultInit, GauInit, last_bn
from ..modes import eval_mode
from ..ops.depth import append_block
from ..train import fit
from ..when import Stagnation
from ..where import StageRoundRobin, Stages
from ..why import TrainingCompute, accuracy, count_parameters, flops_per_example

__all__ = ["AutoGrow", "DESCRIPTION"]

DESCRIPTION = {
    "name": "AutoGrow",
    "paper": "Wen, Yan, Chen, Li. KDD 2020 (arXiv 1906.02909)",
    "why": "automate depth: grow while growth still improves validation accuracy, "
    "at about the cost of one training",
    "when": "every K epochs at a constant learning rate (p-AutoGrow; c-AutoGrow after "
    "convergence); a stage freezes when the running max of val accuracy gains < tau "
    "over J epochs",
    "where": "one block at the end of a stage, stages round robin, skipping frozen or full",
    "how": "default init; last BN of the new residual block Gaussian (GauInit), "
    "zero (ZeroInit), uniform or Adam-tuned",
}

LossFn = Callable[[Tensor, Tensor], Tensor]


def _staged(model: nn.Module) -> list[str]:
    names = getattr(model, "stage_names", None)
    if not names or not callable(getattr(model, "new_block", None)):
        raise GrowthInputError(
            f"AutoGrow grows stage-structured models with `stage_names` and "
            f"`new_block(stage_name)` (models.CifarResNet, models.ResidualMLP, "
            f"models.PlainConvNet); {type(model).__name__} has no such interface"
        )
    return list(names)


class AutoGrow:
    """Run AutoGrow's depth search and fine-tuning on a stage-structured model.

    Parameters
    ----------
    model : nn.Module
        The seed network (e.g. ``models.cifar_resnet((1, 1, 1))``): it must have
        ``stage_names`` and ``new_block(stage_name)``; grown in place.
    optimizer : torch.optim.Optimizer
        Its optimizer (the paper: SGD, momentum 0.9, weight decay 5e-4, lr 0.1
        for ResNets); carried through every growth step. Its learning rate is
        the constant rate of the growth phase.
    data : Dataset
        Training data; ``val_fraction`` of it is held out for the stopping policy.
    interval : int
        K, epochs between growth steps (paper's best: 3; code default 1).
    convergent : bool
        c-AutoGrow: inside each interval the learning rate steps down to 1/10 at
        half and 1/100 at three quarters, so the net converges before growing
        (use a large ``interval``; the paper's source says 200).
    window : int
        J, the stopping policy's window in epochs (code: 100 on CIFAR).
    tau : float
        τ, the minimum improvement in percentage points (0.05).
    metric : {"max", "ema"}
        Running maximum (paper) or EMA of validation accuracy.
    init : BlockInit, optional
        New-block initialiser; default :class:`~torchgrow.how.GauInit` for
        residual blocks (with a ``last_bn``) and
        :class:`~torchgrow.how.DefaultInit` for plain blocks.
    where : Stages, optional
        Stage selector: :class:`~torchgrow.where.StageRoundRobin` (the paper's
        ``group`` mode, default) or :class:`~torchgrow.where.AllStages`.
    max_blocks : int or sequence of int
        Largest number of blocks per stage (code: 200).
    max_growth_epochs : int
        Budget of the growth phase in epochs.
    tail_epochs : int
        Fine-tuning epochs after growth, lr x0.1 at 50 % and 75 %.
    val_fraction : float
        Held-out share of the training set.
    batch_size : int
        Training batch size (paper: 128).
    loss_fn : callable, optional
        Default cross-entropy.
    probe_size : int
        Validation examples on which each growth step's max |Δ output| is measured.
    progress : bool, optional
        Progress bars of :func:`torchgrow.train.fit`.
    seed : int
        Seed of the split, the data order and the default initialiser.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data: Dataset,
        *,
        interval: int = 3,
        convergent: bool = False,
        window: int = 100,
        tau: float = 0.05,
        metric: str = "max",
        init: BlockInit | None = None,
        where: Stages | None = None,
        max_blocks: int | Sequence[int] = 200,
        max_growth_epochs: int = 4000,
        tail_epochs: int = 200,
        val_fraction: float = 0.1,
        batch_size: int = 128,
        loss_fn: LossFn | None = None,
        probe_size: int = 256,
        progress: bool | None = False,
        seed: int = 0,
    ) -> None:
        self.stages = _staged(model)
        self.interval = require_int(interval, "AutoGrow(interval)", 1)
        self.max_growth_epochs = require_int(max_growth_epochs, "AutoGrow(max_growth_epochs)", 0)
        self.tail_epochs = require_int(tail_epochs, "AutoGrow(tail_epochs)", 0)
        self.batch_size = require_int(batch_size, "AutoGrow(batch_size)", 1)
        require_int(probe_size, "AutoGrow(probe_size)", 1)
        if not 0 < val_fraction < 1:
            raise GrowthInputError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        if data.task != "classification":
            raise GrowthInputError("AutoGrow's stopping policy needs a classification data set")
        arch = self.arch_of(model)
        if isinstance(max_blocks, int):
            limits = [max_blocks] * len(self.stages)
        else:
            limits = [int(b) for b in max_blocks]
        if len(limits) != len(self.stages) or any(
            m < a for m, a in zip(limits, arch, strict=False)
        ):
            raise GrowthInputError(
                f"max_blocks must give one limit per stage ({len(self.stages)}), each at least "
                f"the seed's blocks {list(arch)}; got {max_blocks!r}"
            )
        sample = model.new_block(self.stages[0])
        if init is None:
            init = GauInit(seed=seed) if last_bn(sample) is not None else DefaultInit()
        init.init(sample)  # fails now, not at the first growth step, if it cannot apply
        self.model, self.optimizer = model, optimizer
        self.loss_fn = loss_fn or F.cross_entropy
        self.init = init
        self.where = where or StageRoundRobin()
        self.convergent = bool(convergent)
        self.stagnation = Stagnation(tau=tau, window=window, metric=metric)
        self.max_arch = dict(zip(self.stages, limits, strict=True))
        self.frozen: set[str] = set()
        self.last_grown: list[str] = []  # grown since the last freeze: what a stall freezes
        self.previous: list[str] = []  # the last growth step's stages: where round robin resumes
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.seed = seed
        self.train_set, self.val_set = data.split_validation(val_fraction, seed=seed)
        self.test = (data.x_test, data.y_test)
        self.probe = self.val_set.x_test[:probe_size]
        self.events: list[dict[str, Any]] = []
        self.description = DESCRIPTION
        self.settings = {
            "interval": self.interval,
            "convergent": self.convergent,
            "window": window,
            "tau": tau,
            "metric": metric,
            "init": self.init.describe(),
            "where": self.where.describe(),
            "max_blocks": limits,
            "max_growth_epochs": self.max_growth_epochs,
            "tail_epochs": self.tail_epochs,
            "val_fraction": val_fraction,
            "batch_size": batch_size,
            "seed": seed,
        }
        self.progress = progress
        self.compute: TrainingCompute | None = None
        self.rows: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ helpers
    def arch_of(self, model: nn.Module | None = None) -> tuple[int, ...]:
        """Blocks per stage of the (current) model."""
        model = model if model is not None else self.model
        return tuple(len(getattr(model, s)) for s in self.stages)

    def _loaders(self) -> tuple[DataLoader, DataLoader]:
        g = torch.Generator().manual_seed(self.seed)
        train = DataLoader(
            TensorDataset(self.train_set.x_train, self.train_set.y_train),
            batch_size=self.batch_size,
            shuffle=True,
            generator=g,
        )
        val = DataLoader(TensorDataset(self.val_set.x_test, self.val_set.y_test), batch_size=512)
        return train, val

    def _set_lr(self, factor: float) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

    def _staircase(self, epoch_in_interval: int) -> float:
        """c-AutoGrow's factor for the given 0-based epoch of an interval.

        The official code's integer thresholds: ``K // 2`` and ``K * 3 // 4``.
        """
        if epoch_in_interval < self.interval // 2:
            return 1.0
        if epoch_in_interval < self.interval * 3 // 4:
            return 0.1
        return 0.01

    @torch.no_grad()
    def _outputs(self) -> Tensor:
        with eval_mode(self.model):
            return self.model(self.probe)

    def _grow(self, epoch: int, loader: DataLoader) -> None:
        arch = dict(zip(self.stages, self.arch_of(), strict=True))
        open_stages = [
            s for s in self.stages if s not in self.frozen and arch[s] < self.max_arch[s]
        ]
        # after a freeze the round robin goes on from the frozen stage, as the official code's
        # next_group does, rather than starting again at the first stage
        chosen = self.where.select(self.stages, open_stages, self.previous)
        if not chosen:
            return
        assert self.compute is not None
        distributed.broadcast_buffers(self.model)  # rank 0's BatchNorm statistics everywhere
        old_train_acc = None
        if isinstance(self.init, AdamInit):
            old_train_acc = accuracy(self.model, (self.train_set.x_train, self.train_set.y_train))
            self.compute.add_forward(len(self.train_set.x_train))
        before = self._outputs()
        for stage in chosen:
            block = self.model.new_block(stage)
            self.init.init(block)
            append_block(self.model, stage, block, optimizer=self.optimizer)
            info: dict[str, Any] = {}
            if old_train_acc is not None:
                assert isinstance(self.init, AdamInit)
                info = self.init.adapt(self.model, block, loader, self.loss_fn, old_train_acc)
                self.compute.refresh()
                for _ in range(info["epochs"]):
                    self.compute.add_step(len(self.train_set.x_train))
            self.events.append(
                {
                    "epoch": epoch,
                    "stage": stage,
                    "arch": list(self.arch_of()),
                    **{f"adam_{k}": v for k, v in info.items()},
                }
            )
        distributed.agree("AutoGrow's growth step", self.model, self.optimizer)
        distributed.broadcast_model(self.model)  # bit-identical new blocks on every rank
        delta = float((self._outputs() - before).abs().max())
        for ev in self.events[-len(chosen) :]:
            ev["max_abs_delta"] = delta  # of the whole step (all blocks appended at once)
        self.compute.refresh()
        self.last_grown = self.previous = chosen

    def _on_epoch_end(self, loader: DataLoader) -> Callable[[Any], bool]:
        def hook(history: Any) -> bool:
            row = history.rows[-1]
            epoch = int(row["epoch"])
            self.stagnation.push(row["val_accuracy"])
            row.update(phase="growth", arch="-".join(map(str, self.arch_of())))
            if epoch % self.interval == 0:
                if self.last_grown and self.stagnation.stalled():
                    for stage in self.last_grown:
                        self.frozen.add(stage)
                        self.max_arch[stage] = self.arch_of()[self.stages.index(stage)]
                    self.events.append(
                        {
                            "epoch": epoch,
                            "frozen": list(self.last_grown),
                            "arch": list(self.arch_of()),
                        }
                    )
                    self.last_grown = []
                if all(
                    s in self.frozen or self.arch_of()[i] >= self.max_arch[s]
                    for i, s in enumerate(self.stages)
                ):
                    return True
                self._grow(epoch, loader)
            if self.convergent:
                self._set_lr(self._staircase(epoch % self.interval))
            return False

        return hook

    # ------------------------------------------------------------------ the algorithm
    def run(self) -> dict[str, Any]:
        """Grow, then fine-tune; returns :meth:`summary` (``rows`` holds one row per epoch)."""
        start = time.perf_counter()
        train, val = self._loaders()
        self.compute = TrainingCompute(self.model, self.train_set.x_train[:1])
        self._set_lr(1.0)
        growth = fit(
            self.model,
            self.optimizer,
            (train, val),
            epochs=self.max_growth_epochs,
            loss_fn=self.loss_fn,
            compute=self.compute,
            on_epoch_end=self._on_epoch_end(train),
            progress=self.progress,
            seed=self.seed,
        )
        self.growth_epochs = len(growth.rows)
        self.rows = list(growth.rows)
        self._set_lr(1.0)
        if self.tail_epochs:
            milestones = sorted({max(1, int(self.tail_epochs * f)) for f in (0.5, 0.75)})
            scheduler = torch.optim.lr_scheduler.MultiStepLR(
                self.optimizer, milestones=milestones, gamma=0.1
            )
            tail = fit(
                self.model,
                self.optimizer,
                (train, val),
                epochs=self.tail_epochs,
                loss_fn=self.loss_fn,
                compute=self.compute,
                scheduler=scheduler,
                progress=self.progress,
            )
            for row in tail.rows:
                row.update(
                    phase="tail",
                    epoch=row["epoch"] + self.growth_epochs,
                    arch="-".join(map(str, self.arch_of())),
                )
            self.rows += tail.rows
        self.seconds = time.perf_counter() - start
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """The found network: depth per stage, accuracies, parameters, FLOPs, training cost."""
        return {
            "arch": list(self.arch_of()),
            "frozen": sorted(self.frozen),
            "val_accuracy": accuracy(self.model, (self.val_set.x_test, self.val_set.y_test)),
            "test_accuracy": accuracy(self.model, self.test),
            "parameters": count_parameters(self.model),
            "flops_per_example": flops_per_example(self.model, self.probe[:1]),
            "training_flops": None if self.compute is None else self.compute.total,
            "growth_epochs": getattr(self, "growth_epochs", 0),
            "growth_steps": sum(1 for e in self.events if "stage" in e),
            "seconds": getattr(self, "seconds", None),
        }

    def describe(self) -> dict[str, str]:
        """The why/when/where/how of this run, in words."""
        return {**DESCRIPTION, "settings": repr(self.settings)}
