"""The README's comparison: every method of ``torchgrow compare`` on Fashion-MNIST, 10 epochs, 3 seeds.

Runs the command the README shows (``torchgrow compare --data fashion_mnist
--budget 10 --seeds 3 --threads 1``) into a fresh folder, writes its report
(``torchgrow report``) and copies the report, its plots, ``config.toml`` and
``manifest.json`` to ``docs/compare-fashion-mnist/``. The results JSON holds
the per-method summary the README's table is rendered from. ``--quick`` runs
the scikit-learn digits for 3 epochs and one seed, into ``results/quick/``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, markdown_table, results_dir, write_results
from torchgrow.compare import CompareConfig, run_compare
from torchgrow.report import PLOTS, load_comparison, summarise_comparison, write_report

DOCS = ROOT / "docs" / "compare-fashion-mnist"
CONFIG = {"name": "Fashion-MNIST, 10 epochs", "data": "fashion_mnist", "budget_epochs": 10,
          "seeds": [0, 1, 2], "threads": 1}  # fmt: skip
QUICK = {"name": "quick", "data": "digits", "budget_epochs": 3, "seeds": [0], "threads": 1}
COMMAND = (
    "torchgrow compare --data {data} --budget {budget_epochs} --seeds {n} --out runs/fmnist "
    "--name '{name}' --threads 1"
)


def _fmt(pair: tuple[float, float], fmt: Any, seeds: int) -> str:
    mean, std = pair
    return fmt(mean) if seeds < 2 or std == 0 else f"{fmt(mean)} ± {fmt(std)}"


def readme_table(rows: list[dict[str, Any]]) -> str:
    """The README's table: the measured columns of the report, one row per method."""
    from torchgrow.report import format_count

    table = []
    for r in rows:
        n = r["seeds"]
        table.append(
            {
                "Method": r["description"].get("name", r["method"]),
                "Test acc. %": _fmt(r["test_accuracy"], lambda x: f"{100 * x:.2f}", n),
                "Parameters": _fmt(r["parameters"], lambda x: f"{x:,.0f}", n),
                "FLOPs/example": _fmt(r["flops_per_example"], lambda x: f"{x:,.0f}", n),
                "Training FLOPs": _fmt(r["training_flops"], lambda x: format_count(round(x)), n),
                "Wall s": _fmt(r["wall_seconds"], lambda x: f"{x:.1f}", n),
                "Growth events": _fmt(r["growth_events"], lambda x: f"{x:.3g}", n),
                "max \\|Δout\\|": "-"
                if r["max_abs_delta"] is None
                else f"{r['max_abs_delta']:.1e}",
            }
        )
    return markdown_table(table)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke run (digits, 3 epochs, 1 seed)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    values = QUICK if args.quick else CONFIG
    command = COMMAND.format(n=len(values["seeds"]), **values)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "compare"
        run_compare(CompareConfig.from_dict(values), out, progress=False, command=command)
        write_report(out)
        comparison = load_comparison(out)
        rows = summarise_comparison(comparison)
        dest = results_dir(True) / "compare" if args.quick else DOCS
        dest.mkdir(parents=True, exist_ok=True)
        for name in ["report.md", "config.toml", "manifest.json", *(p for p, _ in PLOTS)]:
            shutil.copy(out / name, dest / name)
    summary = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items()} for r in rows]
    table = readme_table(rows)
    payload = {
        "quick": args.quick,
        "threads": 1,
        "config": comparison["config"],
        "summary": summary,
        "report": str(dest.relative_to(ROOT)),
        "wall_s": time.perf_counter() - t0,
    }
    md = f"`{command}`; the report is in `{payload['report']}`.\n\n" + table
    write_results("compare_fashion_mnist", payload, md, argv=argv, tables={"summary": table})
    return payload


if __name__ == "__main__":
    main()
