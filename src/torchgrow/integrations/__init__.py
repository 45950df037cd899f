"""Growth inside the training frameworks people use.

Each integration is a module of its own, imported on demand (``import torchgrow`` never
imports a framework):

* :mod:`torchgrow.integrations.lightning`: a Lightning ``Callback`` that grows during
  ``Trainer.fit`` with Lightning's own optimizer, logs the growth events through the
  trainer's logger, and makes checkpoints of the grown model load back
  (``pip install torchgrow[lightning]``);
* :mod:`torchgrow.integrations.hf`: a ``transformers.TrainerCallback`` that grows during
  ``Trainer.train()`` with the ``Trainer``'s (accelerate-wrapped) optimizer, on dict batches,
  and checkpoints that resume (``pip install torchgrow[hf]``).
"""
