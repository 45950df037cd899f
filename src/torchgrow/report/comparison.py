"""A ``torchgrow compare`` directory read back: every run's metrics and events
(:func:`load_comparison`), and one row per method averaged over seeds
(:func:`summarise_comparison`).
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["load_comparison", "summarise_comparison", "SUMMARY_KEYS"]


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as fh:
        return [
            {
                k: (None if v == "" else float(v) if "." in v or "e" in v else int(v))
                for k, v in r.items()
            }
            for r in csv.DictReader(fh)
        ]


def load_comparison(out: str | Path) -> dict[str, Any]:
    """Everything a ``torchgrow compare`` directory holds, grouped by method.

    Parameters
    ----------
    out : str or Path
        The comparison's directory.

    Returns
    -------
    dict
        ``config`` (the settings), ``manifest`` (versions, command, date),
        ``methods`` (method -> ``description`` and ``runs``, each run with its
        ``seed``, ``result`` (``result.json``), ``metrics`` (``metrics.csv``
        rows) and ``events`` (``events.jsonl``)), ``missing`` (``(method,
        seed)`` runs not finished) and ``growth_kinds``.

    Raises
    ------
    FileNotFoundError
        If ``out`` holds no comparison or no finished run.
    """
    from ..compare import GROWTH_KINDS, CompareConfig, run_dir

    out = Path(out)
    if not (out / "config.toml").exists():
        raise FileNotFoundError(
            f"{out} is not a comparison directory (no config.toml): run `torchgrow compare "
            f"--out {out}` first"
        )
    cfg = CompareConfig.from_toml(out / "config.toml")
    man_path = out / "manifest.json"
    comparison: dict[str, Any] = {
        "config": cfg.to_dict(),
        "manifest": json.loads(man_path.read_text()) if man_path.exists() else {},
        "methods": {},
        "missing": [],
        "growth_kinds": GROWTH_KINDS,
    }
    for method in cfg.methods:
        for seed in cfg.seeds:
            path = run_dir(out, method, seed)
            if not (path / "result.json").exists():
                comparison["missing"].append((method, seed))
                continue
            result = json.loads((path / "result.json").read_text())
            events = [
                json.loads(line)
                for line in (path / "events.jsonl").read_text().splitlines()
                if line.strip()
            ]
            entry = comparison["methods"].setdefault(
                method, {"description": result["description"], "runs": []}
            )
            entry["runs"].append(
                {
                    "seed": seed,
                    "result": result,
                    "metrics": _read_metrics(path / "metrics.csv"),
                    "events": events,
                }
            )
    if not comparison["methods"]:
        raise FileNotFoundError(
            f"{out} holds no finished run: run `torchgrow compare --config {out / 'config.toml'}`"
        )
    return comparison


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


SUMMARY_KEYS = (
    "test_accuracy",
    "parameters",
    "flops_per_example",
    "training_flops",
    "wall_seconds",
    "growth_events",
)
"""The per-run numbers averaged over seeds in a comparison report."""


def summarise_comparison(comparison: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per method: its description and the mean and std over seeds of each measure.

    Parameters
    ----------
    comparison : mapping
        From :func:`load_comparison`.

    Returns
    -------
    list of dict
        ``method``, ``description``, ``seeds`` (how many finished), for each
        key of :data:`SUMMARY_KEYS` a ``(mean, std)`` pair (sample std, 0 for
        one seed), and ``max_abs_delta``, the largest over seeds (``None`` if
        never measured).
    """
    rows = []
    for method, entry in comparison["methods"].items():
        results = [r["result"] for r in entry["runs"]]
        row: dict[str, Any] = {
            "method": method,
            "description": entry["description"],
            "seeds": len(results),
        }
        for key in SUMMARY_KEYS:
            row[key] = _mean_std([float(r[key]) for r in results])
        deltas = [r["max_abs_delta"] for r in results if r["max_abs_delta"] is not None]
        row["max_abs_delta"] = max(deltas) if deltas else None
        bpc = [r.get("extra", {}).get("test_bits_per_char") for r in results]
        if all(b is not None for b in bpc):  # language models (the gpt family)
            row["test_bits_per_char"] = _mean_std([float(b) for b in bpc])
        rows.append(row)
    return rows
