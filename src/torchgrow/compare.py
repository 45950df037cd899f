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

import csv
import dataclasses
import json
import os
import platform
import shlex
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__, contenders_lm, distributed
from . import data as tg_data
from .contenders import CONTENDERS, FSDP_CONTENDERS, Context, Interrupted, Outcome
from .errors import GrowthInputError
from .train import tensorboard_writer
from .why import count_parameters, flops_per_example

__all__ = ["CompareConfig", "parse_budget", "run_compare", "RUN_FILES"]

RUN_FILES = ("metrics.csv", "events.jsonl", "result.json")
METRIC_COLUMNS = (
    "epoch",
    "training_flops",
    "parameters",
    "flops_per_example",
    "val_accuracy",
    "val_loss",
    "seconds",
)
GROWTH_KINDS = ("grow", "deepen")

TEXT_DATASETS = {"text_chars": lambda: tg_data.text_chars(context=contenders_lm.CONTEXT)}
"""The text data sets of the gpt family (character-level, fixed splits)."""

FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {
        "data": "fashion_mnist",
        "methods": ("static", "random", "gradmax", "nest", "autogrow", "compnet"),
        "lr": 0.05,
    },
    "gpt": {"data": "text_chars", "methods": tuple(contenders_lm.LM_CONTENDERS), "lr": 2e-3},
}
"""Per model family, the data set, methods and learning rate a comparison defaults to."""
"""Event kinds counted as growth events (pruning and trimming are logged, not counted)."""


@dataclass(frozen=True)
class CompareConfig:
    """The settings of a comparison (everything needed to re-run it exactly).

    Attributes
    ----------
    name : str
        A label for the report.
    model : {"mlp", "gpt"}
        The model family: an MLP classifier grown in width (and by NeST, AutoGrow,
        CompNet), or a character-level GPT grown by the transformer methods.
    data : str, optional
        An offline data set (:func:`torchgrow.data.load`; ``"text_chars"`` for the
        gpt family); default ``"fashion_mnist"`` or ``"text_chars"``.
    methods : tuple of str, optional
        Contender names (:data:`torchgrow.contenders.CONTENDERS`) of the family;
        default all of them.
    seeds : tuple of int
        One run per method and seed.
    budget_epochs : int
        Training epochs every method gets.
    width : int
        Hidden width of the starting networks.
    grow_factor : float
        Width growth ends at ``grow_factor x width``; NeST's seed architecture
        has that width.
    grow_times : int
        Growth steps of the width-growth contenders.
    batch_size : int
        Training batch size.
    lr : float, optional
        SGD learning rate (momentum 0.9) of every method; for the gpt family
        AdamW's peak learning rate. Default 0.05 (mlp) or 2e-3 (gpt).
    val_fraction : float
        Share of the training split held out for validation (decisions and
        curves); test accuracy is only reported.
    train_size, test_size : int, optional
        Random subsets of the data (seeded with 0, the same for all runs).
    threads : int, optional
        ``torch.set_num_threads``.
    epoch_tokens : int, optional
        The gpt family's epoch, in training tokens (default: the training split's
        length); a step trains on ``batch_size x 64`` tokens.
    fsdp : bool
        Under ``torchrun``, shard each run's model with ``fully_shard`` (per layer
        and at the root, :func:`torchgrow.fsdp.shard_layers`) instead of replicating
        it; the mlp family's ``static``, ``random`` and ``gradmax`` only (the others
        edit more of the model than the gathered units), and the runs are not
        resumable (their checkpoints would hold whole models).
    """

    name: str = "compare"
    data: str | None = None
    methods: tuple[str, ...] | None = None
    seeds: tuple[int, ...] = (0,)
    budget_epochs: int = 10
    width: int = 32
    grow_factor: float = 4.0
    grow_times: int = 4
    batch_size: int = 128
    lr: float | None = None
    val_fraction: float = 0.1
    train_size: int | None = None
    test_size: int | None = None
    threads: int | None = None
    model: str = "mlp"
    epoch_tokens: int | None = None
    fsdp: bool = False

    def __post_init__(self) -> None:
        if self.model not in FAMILY_DEFAULTS:
            raise GrowthInputError(
                f"unknown model family {self.model!r}; choose from {sorted(FAMILY_DEFAULTS)}"
            )
        defaults = FAMILY_DEFAULTS[self.model]
        for key in ("data", "methods", "lr"):
            if getattr(self, key) is None:
                object.__setattr__(self, key, defaults[key])
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        unknown = [m for m in self.methods if m not in CONTENDERS]
        if unknown or not self.methods:
            raise GrowthInputError(
                f"unknown methods {unknown} (or none given); choose from {sorted(CONTENDERS)}"
            )
        if len(set(self.methods)) != len(self.methods):
            raise GrowthInputError(f"methods are repeated: {list(self.methods)}")
        other = [m for m in self.methods if CONTENDERS[m].family != self.model]
        if other:
            raise GrowthInputError(
                f"methods {other} grow another model family than {self.model!r}; the "
                f"{self.model} family's are {[n for n, c in CONTENDERS.items() if c.family == self.model]}"
            )
        known = TEXT_DATASETS if self.model == "gpt" else tg_data.DATASETS
        if self.data not in known:
            raise GrowthInputError(
                f"unknown data set {self.data!r} for the {self.model} family; choose from "
                f"{sorted(known)}"
            )
        if self.epoch_tokens is not None and (
            self.model != "gpt" or isinstance(self.epoch_tokens, bool)
            or not isinstance(self.epoch_tokens, int) or self.epoch_tokens < 1
        ):  # fmt: skip
            raise GrowthInputError(
                f"epoch_tokens is a positive int of the gpt family, got {self.epoch_tokens!r} "
                f"for model {self.model!r}"
            )
        if self.model == "gpt" and (self.train_size is not None or self.test_size is not None):
            raise GrowthInputError("train_size and test_size subsample classification data; "
                                   "the gpt family's text has fixed splits")  # fmt: skip
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise GrowthInputError(f"seeds must be distinct and at least one: {self.seeds}")
        for name in ("budget_epochs", "width", "grow_times", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GrowthInputError(f"{name} must be a positive int, got {value!r}")
        if self.budget_epochs < 3:
            raise GrowthInputError(
                f"budget_epochs must be at least 3 (NeST and CompNet split it into phases), "
                f"got {self.budget_epochs}"
            )
        if not self.grow_factor >= 1:
            raise GrowthInputError(f"grow_factor must be >= 1, got {self.grow_factor!r}")
        if not self.lr > 0:
            raise GrowthInputError(f"lr must be > 0, got {self.lr!r}")
        if not 0 < self.val_fraction < 1:
            raise GrowthInputError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        self._check_fsdp()

    def _check_fsdp(self) -> None:
        if self.fsdp is not True and self.fsdp is not False:
            raise GrowthInputError(f"fsdp must be true or false, got {self.fsdp!r}")
        other = [m for m in self.methods if m not in FSDP_CONTENDERS]
        if self.fsdp and other:
            raise GrowthInputError(
                f"fsdp: methods {other} are not run sharded; choose from {list(FSDP_CONTENDERS)}"
            )

    # ------------------------------------------------------------------ TOML
    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values (``None`` left out)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_toml(self) -> str:
        """The settings as TOML (read back by :meth:`from_toml`)."""
        lines = ["# torchgrow compare settings: torchgrow compare --config <this file>"]
        for key, value in self.to_dict().items():
            lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CompareConfig:
        """Settings from a dict; unknown keys are an error.

        Parameters
        ----------
        values : dict
            Keys are the attribute names.

        Returns
        -------
        CompareConfig
            The settings.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise GrowthInputError(f"unknown settings {unknown}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | Path) -> CompareConfig:
        """Read settings written by :meth:`to_toml` (or by hand).

        Parameters
        ----------
        path : str or Path
            A TOML file.

        Returns
        -------
        CompareConfig
            The settings.
        """
        try:
            values = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no config file at {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise GrowthInputError(f"{path} is not valid TOML: {exc}") from exc
        return cls.from_dict(values)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def parse_budget(text: str) -> int:
    """``"10"``, ``"10ep"`` or ``"10epochs"`` -> 10 training epochs.

    Parameters
    ----------
    text : str
        The ``--budget`` value.

    Returns
    -------
    int
        Epochs.
    """
    t = text.strip().lower()
    for suffix in ("epochs", "epoch", "ep"):
        if t.endswith(suffix):
            t = t[: -len(suffix)]
            break
    else:
        if t.endswith("flops"):
            raise GrowthInputError(
                f"--budget {text}: a training-FLOPs budget is not supported; give epochs "
                "(e.g. --budget 10). Every method gets the same epochs, and the report "
                "compares the training FLOPs each one spent"
            )
    try:
        epochs = int(t)
    except ValueError:
        raise GrowthInputError(
            f"--budget must be a number of epochs like 10, got {text!r}"
        ) from None
    if epochs < 1:
        raise GrowthInputError(f"--budget must be at least 1 epoch, got {text!r}")
    return epochs


def manifest(command: str | None = None) -> dict[str, Any]:
    """Versions and machine facts recorded with a comparison."""
    return {
        "torchgrow": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "command": command or "torchgrow " + shlex.join(sys.argv[1:]),
    }


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _load_data(cfg: CompareConfig) -> Any:
    if cfg.model == "gpt":
        return TEXT_DATASETS[cfg.data]()
    ds = tg_data.load(cfg.data)
    if cfg.train_size is not None or cfg.test_size is not None:
        ds = ds.subset(cfg.train_size, cfg.test_size, seed=0)
    return ds


def run_dir(out: Path, method: str, seed: int) -> Path:
    """The directory of one run."""
    return out / "runs" / method / f"seed{seed}"


def _result(
    cfg: CompareConfig, method: str, seed: int, outcome: Outcome, ds: tg_data.Dataset, wall: float
) -> dict[str, Any]:
    deltas = [e["max_abs_delta"] for e in outcome.events if e["max_abs_delta"] is not None]
    return {
        "method": method,
        "seed": seed,
        "description": dict(CONTENDERS[method].description),
        "model": outcome.model_name,
        "test_accuracy": outcome.test_accuracy,
        "val_accuracy": outcome.val_accuracy,
        "parameters": count_parameters(outcome.model),
        "flops_per_example": outcome.extra.get("flops_per_example")
        or flops_per_example(outcome.model, ds.x_test[:2]),
        "training_flops": int(outcome.training_flops),
        "wall_seconds": wall,
        "growth_events": sum(e["kind"] in GROWTH_KINDS for e in outcome.events),
        "max_abs_delta": max(deltas) if deltas else None,
        "epochs": outcome.epochs,
        "extra": outcome.extra,
    }


def _write_run(path: Path, outcome: Outcome, result: dict[str, Any]) -> None:
    with open(path / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in outcome.rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_COLUMNS})
    with open(path / "events.jsonl", "w") as fh:
        for event in outcome.events:
            fh.write(json.dumps(event) + "\n")
    _write_atomic(path / "result.json", json.dumps(result, indent=2) + "\n")


def _write_tensorboard(path: Path, outcome: Outcome, result: dict[str, Any]) -> None:
    """The run's curves as TensorBoard scalars under ``path / "tensorboard"``.

    Steps are epochs (``by_epoch/...``) and training FLOPs (``by_flops/...``), so
    runs of different methods line up on either axis.
    """
    writer = tensorboard_writer(path / "tensorboard")(log_dir=str(path / "tensorboard"))
    try:
        for row in outcome.rows:
            for key in ("val_accuracy", "parameters", "flops_per_example"):
                if row.get(key) is None:  # not measured at this row
                    continue
                writer.add_scalar(f"by_epoch/{key}", row[key], int(row["epoch"]))
                writer.add_scalar(f"by_flops/{key}", row[key], int(row["training_flops"]))
        for event in outcome.events:
            writer.add_scalar(
                f"events/{event['kind']}_parameters_after",
                event["parameters_after"],
                int(event["training_flops"]),
            )
        writer.add_text("description", json.dumps(result["description"], indent=1))
        writer.add_scalar("final/test_accuracy", result["test_accuracy"], int(result["epochs"]))
    finally:
        writer.close()


def _check_same(out: Path, cfg: CompareConfig) -> None:
    path = out / "config.toml"
    if not path.exists():
        return
    old = CompareConfig.from_toml(path)
    if old != cfg:
        diff = {
            k: (v, cfg.to_dict().get(k))
            for k, v in old.to_dict().items()
            if cfg.to_dict().get(k) != v
        }
        diff.update({k: (None, v) for k, v in cfg.to_dict().items() if k not in old.to_dict()})
        raise GrowthInputError(
            f"{out} holds a comparison with other settings {diff} (old, new): resume it with "
            f"`torchgrow compare --config {path}`, or choose another --out"
        )


def run_job(
    cfg: CompareConfig,
    out: str | Path,
    method: str,
    seed: int,
    *,
    stop_after: int | None = None,
    tensorboard: bool = False,
    ds: tg_data.Dataset | None = None,
) -> dict[str, Any]:
    """One run of a comparison: skipped if finished, resumed if interrupted, else started.

    Every backend runs this (the local loop, each Ray task, every rank under
    ``torchrun``); under ``torch.distributed`` only rank 0 writes.

    Returns
    -------
    dict
        The run's ``result.json``.
    """
    out = Path(out)
    path = run_dir(out, method, seed)
    done = path / "result.json"
    finished = done.exists()
    if distributed.is_active():  # rank 0's view of the directory decides for every rank
        finished = distributed.broadcast_object(finished)
    if finished:
        return json.loads(done.read_text()) if distributed.rank() == 0 else {}
    writer = distributed.rank() == 0
    if writer:
        path.mkdir(parents=True, exist_ok=True)
    ds = ds if ds is not None else _load_data(cfg)
    contender = CONTENDERS[method]
    ctx = Context(cfg, ds, seed, path, stop_after if contender.resumable else None)
    torch.manual_seed(seed)
    start = time.perf_counter()
    outcome = contender.run(ctx)  # raises Interrupted on a simulated stop
    wall = time.perf_counter() - start
    if contender.resumable and outcome.rows:
        wall = float(outcome.rows[-1]["seconds"])  # fit's clock spans the resumes
    result = _result(cfg, method, seed, outcome, ds, wall)
    if distributed.is_active():
        result["processes"] = distributed.world_size()
    if writer:
        _write_run(path, outcome, result)
        if tensorboard:
            _write_tensorboard(path, outcome, result)
    return result


def _ray_job(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`run_job` in a Ray worker (one CPU thread unless the settings say otherwise)."""
    cfg = args[0]
    torch.set_num_threads(cfg.threads or 1)
    return run_job(*args, **kwargs)


def _run_ray(
    cfg: CompareConfig,
    out: Path,
    jobs: list[tuple[str, int]],
    *,
    address: str | None,
    stop_after: int | None,
    tensorboard: bool,
    bar: Any,
    task: Any,
) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError as exc:  # an optional extra
        raise GrowthInputError(
            "--backend ray needs the ray package: pip install torchgrow[ray]"
        ) from exc
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    try:
        remote = ray.remote(num_cpus=1)(_ray_job)
        refs = [
            remote.remote(cfg, str(out.resolve()), m, s, stop_after=stop_after,
                          tensorboard=tensorboard)
            for m, s in jobs
        ]  # fmt: skip
        pending = {ref: k for k, ref in enumerate(refs)}
        results: list[dict[str, Any] | None] = [None] * len(refs)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                k = pending.pop(ref)
                try:
                    results[k] = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.as_instanceof_cause()
                    raise cause from None
                bar.advance(task)
        return [r for r in results if r is not None]
    finally:
        if started_here:
            ray.shutdown()


BACKENDS = ("local", "ray")
"""Where ``run_compare`` runs its jobs: in this process, or as Ray tasks."""


def run_compare(
    cfg: CompareConfig,
    out: str | Path,
    *,
    progress: bool | None = None,
    stop_after: int | None = None,
    command: str | None = None,
    tensorboard: bool = False,
    backend: str = "local",
    address: str | None = None,
) -> list[dict[str, Any]]:
    """Run every method on every seed (finished runs are skipped, interrupted ones resumed).

    Parameters
    ----------
    cfg : CompareConfig
        The settings.
    out : str or Path
        The comparison's directory (created).
    progress : bool, optional
        Show a progress bar over the runs on stderr; ``None``: only on a terminal.
    stop_after : int, optional
        Simulated interruption: a resumable run stops after this many epochs
        of this invocation, and :class:`~torchgrow.contenders.Interrupted` is
        raised. Running again resumes it.
    command : str, optional
        The command line recorded in ``manifest.json``.
    tensorboard : bool
        Also write each run's curves as TensorBoard scalars in its
        ``tensorboard/`` folder (needs ``pip install torchgrow[tensorboard]``).
        An output option: it changes no result.
    backend : {"local", "ray"}
        ``"local"``: the runs one after the other in this process (under
        ``torchrun`` each run is data-parallel over the ranks). ``"ray"``:
        one Ray task per method and seed, on a local Ray instance or the
        cluster at ``address`` (``pip install torchgrow[ray]``); the outputs
        are the same.
    address : str, optional
        A Ray cluster's address (``"auto"``, ``"ray://host:10001"``); default:
        start a local instance.

    Returns
    -------
    list of dict
        The ``result.json`` of every run, in method and seed order (under
        ``torch.distributed``, on rank 0; other ranks get empty dicts).
    """
    if backend not in BACKENDS:
        raise GrowthInputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "ray" and distributed.is_active():
        raise GrowthInputError("--backend ray runs its own workers: do not launch it with torchrun")
    if cfg.fsdp and not distributed.is_active():
        raise GrowthInputError("fsdp shards each model over several processes: add --nproc N")
    if backend != "ray" and address is not None:
        raise GrowthInputError("--address is the address of a Ray cluster: use --backend ray")
    out = Path(out)
    _check_same(out, cfg)
    if tensorboard:
        tensorboard_writer(out)  # fail before any run starts
    if distributed.rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(out / "config.toml", cfg.to_toml())
        if not (out / "manifest.json").exists():
            _write_atomic(out / "manifest.json", json.dumps(manifest(command), indent=2) + "\n")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    jobs = [(m, s) for m in cfg.methods for s in cfg.seeds]
    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
    progress = progress and distributed.rank() == 0
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not progress,
    ) as bar:
        task = bar.add_task("compare", total=len(jobs))
        if backend == "ray":
            bar.update(task, description=f"compare on ray ({len(jobs)} tasks)")
            return _run_ray(
                cfg, out, jobs, address=address, stop_after=stop_after,
                tensorboard=tensorboard, bar=bar, task=task,
            )  # fmt: skip
        ds = _load_data(cfg)
        results: list[dict[str, Any]] = []
        for method, seed in jobs:
            bar.update(task, description=f"{method} seed {seed}")
            results.append(
                run_job(cfg, out, method, seed, stop_after=stop_after,
                        tensorboard=tensorboard, ds=ds)
            )  # fmt: skip
            bar.advance(task)
    return results


def load_results(out: str | Path) -> list[dict[str, Any]]:
    """The ``result.json`` of every finished run under ``out``."""
    return [json.loads(p.read_text()) for p in sorted(Path(out).glob("runs/*/seed*/result.json"))]


__all__ += ["BACKENDS", "Interrupted", "load_results", "manifest", "run_dir", "run_job"]


def compare_methods() -> Sequence[str]:
    """The method names ``torchgrow compare`` knows."""
    return tuple(CONTENDERS)
