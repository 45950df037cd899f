"""Saving and loading grown models, their optimizers and their growers.

.. code-block:: python

    torchgrow.save("run.pt", model, optimizer, grower, extra={"epoch": 3})
    ckpt = torchgrow.load("run.pt")
    model, optimizer, grower = ckpt.model, ckpt.optimizer, ckpt.grower

What is safe to load: :func:`load` never runs code from the file unless told to.
It verifies the file's checksum, then unpickles with
``torch.load(weights_only=True)`` and an allow-list (layers of ``torch.nn``
and torchgrow, ``torch.optim`` optimizers, torchgrow's policies). A model of
your own class is refused with its name until you allow the class
(``load(path, allow=[MyNet])``, :func:`add_safe_classes`) or trust the file
(``load(path, trusted=True)``, which unpickles anything: only for your own
files).

:func:`architecture_record` and :func:`restore_architecture` carry a grown model's
structure (without its weights) through another framework's checkpoint, so that its
``state_dict`` loads back (:mod:`torchgrow.integrations`).
"""

from ..errors import CheckpointError
from .architecture import architecture_record, restore_architecture
from .checkpoint import Checkpoint, load, save
from .safety import add_safe_classes

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "add_safe_classes",
    "architecture_record",
    "load",
    "restore_architecture",
    "save",
]
