"""A grown Lightning run for tests/test_lightning.py, importable by a fresh process."""

from __future__ import annotations

import warnings

import lightning.pytorch as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchgrow import Grower
from torchgrow.how import GradMax
from torchgrow.integrations.lightning import GrowableModule, GrowthCallback
from torchgrow.nn import ReLU1
from torchgrow.size import Units
from torchgrow.when import Every

STEPS_PER_EPOCH = 8


def loader(accumulate: int = 1) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    n = 32 * STEPS_PER_EPOCH * accumulate
    x = torch.randn(n, 10, generator=g)
    y = (x[:, :3].argmax(1) + (x[:, 3] > 1).long()) % 3
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False)


class Net(GrowableModule, L.LightningModule):
    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(10, 4), ReLU1(), nn.Linear(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)}


class PlainNet(Net):
    """The same module without the mixin's hook (the callback wraps the instance's)."""

    on_load_checkpoint = L.LightningModule.on_load_checkpoint


def grower(module: L.LightningModule, optimizer: torch.optim.Optimizer) -> Grower:
    return Grower(module.net, optimizer, when=Every(5, times=3), how=GradMax(), size=Units(2))


def trainer(root: str, epochs: int, accumulate: int = 1, **kw) -> L.Trainer:
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    return L.Trainer(
        default_root_dir=root,
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        deterministic=True,
        enable_progress_bar=False,
        enable_model_summary=False,
        accumulate_grad_batches=accumulate,
        log_every_n_steps=4,
        callbacks=[
            GrowthCallback(grower),
            L.callbacks.ModelCheckpoint(dirpath=f"{root}/ckpt", save_top_k=-1, save_last=True),
        ],
        logger=L.loggers.CSVLogger(root, name="logs"),
        **kw,
    )


def resume(root: str, ckpt: str, epochs: int | str, out: str, module: str = "Net") -> None:
    """Resume a fit from ``ckpt`` in this (fresh) process and save the final weights."""
    L.seed_everything(0, verbose=False)
    model = {"Net": Net, "PlainNet": PlainNet}[module]()
    fit = trainer(root, int(epochs))
    fit.fit(model, loader(), ckpt_path=ckpt)
    grow = fit.callbacks[0]
    torch.save(
        {
            "state": model.state_dict(),
            "steps": grow.grower.state.step,
            "events": len(grow.events),
            "lr": fit.optimizers[0].param_groups[0]["lr"],
        },
        out,
    )
