"""``torchgrow compare``: several growth methods on the same data, budget and seeds.

A comparison is described by a :class:`CompareConfig` (command-line flags or
a TOML file) and lives in one directory::

    <out>/config.toml           the settings, re-runnable: torchgrow compare --config <out>/config.toml
    <out>/manifest.json         versions of torchgrow, torch, python, numpy; platform; date; command
    <out>/runs/<method>/seed<k>/
        metrics.csv             one row per evaluation: epoch, training_flops, parameters,
                                flops_per_example, val_accuracy, val_loss, seconds
        events.jsonl            one line per structural change (growth, pruning, deepening)
        result.json             written last, when the run has finished
        fit/                    checkpoints of resumable runs

Running the same comparison again skips finished runs (those with a
``result.json``) and resumes an interrupted one from its last checkpoint
(contenders trained by :func:`torchgrow.train.fit`) or from its start (the
others). Every method gets the same training-epoch budget; the report
compares the training FLOPs each one spent.

Methods are the contenders of :mod:`torchgrow.contenders` (the ``mlp`` family:
classifiers) and :mod:`torchgrow.contenders_lm` (the ``gpt`` family: a
character-level language model on ``text_chars``); ``model`` picks the family.
"""

from __future__ import annotations

from ..contenders import Interrupted
from .config import GROWTH_KINDS, RUN_FILES, CompareConfig, parse_budget
from .jobs import manifest, run_dir, run_job
from .runner import BACKENDS, compare_methods, load_results, run_compare

__all__ = [
    "CompareConfig",
    "parse_budget",
    "run_compare",
    "RUN_FILES",
    "BACKENDS",
    "GROWTH_KINDS",
    "Interrupted",
    "compare_methods",
    "load_results",
    "manifest",
    "run_dir",
    "run_job",
]
