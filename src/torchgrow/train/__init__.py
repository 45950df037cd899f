"""The reference training loop: :func:`fit`.

.. code-block:: python

    ds = torchgrow.data.load("mnist1d")
    model = torchgrow.models.mlp([40, 8, 10], activation="relu1")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    grower = torchgrow.Grower(model, opt, when=Every(200, times=3), how=Random())
    history = fit(model, opt, ds, epochs=10, grower=grower, log_dir="runs/demo")
    print(history.last)

Per batch :func:`fit` runs forward, loss, ``zero_grad``, backward,
``optimizer.step()``, charges the step to a :class:`~torchgrow.why.TrainingCompute`,
then calls ``grower.step((x, y), loss_fn)``. At each epoch end it evaluates on
the test loader, feeds the grower's metric-driven triggers and records one row
of :class:`History`. It can log (CSV, JSON lines, JSON, TensorBoard), show a
progress bar, checkpoint every few epochs and resume from a checkpoint exactly
(same batches, same random numbers, same result as an uninterrupted run).

The loop is composed of pieces a training loop of one's own (or a framework
integration) can use alone: :func:`train_epoch` and :func:`validate`
(:mod:`torchgrow.train.epoch`), :func:`save_checkpoint` and :func:`resume`
(:mod:`torchgrow.train.state`), :func:`write_logs` and :func:`summary`
(:mod:`torchgrow.train.logs`), and :class:`History` (:mod:`torchgrow.train.history`).
"""

from .epoch import GrowthBatches, Progress, train_epoch, validate
from .history import COLUMNS, History
from .logs import summary, tensorboard_writer, write_logs
from .loop import fit
from .state import restore_loop, resume, save_checkpoint

__all__ = [
    "COLUMNS",
    "History",
    "fit",
    "train_epoch",
    "validate",
    "GrowthBatches",
    "Progress",
    "save_checkpoint",
    "resume",
    "restore_loop",
    "write_logs",
    "summary",
    "tensorboard_writer",
]
