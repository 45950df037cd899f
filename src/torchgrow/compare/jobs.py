"""One run of a comparison (one method, one seed) and the files it leaves in its directory."""

from __future__ import annotations

import csv
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__, distributed
from .. import data as tg_data
from ..contenders import CONTENDERS, Context, Outcome
from ..errors import GrowthInputError
from ..train import tensorboard_writer
from ..why import count_parameters, flops_per_example
from .config import GROWTH_KINDS, METRIC_COLUMNS, TEXT_DATASETS, CompareConfig


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
