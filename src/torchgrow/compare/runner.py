"""All the runs of a comparison, locally or on Ray, and their results read back."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from ..contenders import CONTENDERS
from ..errors import GrowthInputError
from ..train import tensorboard_writer
from .config import CompareConfig
from .jobs import _check_same, _load_data, _write_atomic, manifest, run_job


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


def compare_methods() -> Sequence[str]:
    """The method names ``torchgrow compare`` knows."""
    return tuple(CONTENDERS)
