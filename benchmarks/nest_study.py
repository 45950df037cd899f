"""NeST schedule study on LeNet-300-100: which growth and pruning settings, judged on validation.

``benchmarks/nest_lenet.py`` runs one setting on one seed. This study runs a
small grid of the rules the NeST paper leaves open, on several seeds, and
chooses settings **on validation accuracy only**:

- ``connection_fraction`` (Policy 1's share of dormant connections per round):
  how fast the growth phase densifies;
- ``prune_lr``: the retraining rate of the pruning phase (``None``: the
  training rate 0.05; or 0.005, ten times lower as in Han et al.'s retraining).
  The pruning-only baseline gets the same choice, so the comparison stays fair;
- ``val_fraction``: a 10 % or 20 % validation split. Every pruning step is a
  decision on it, and many decisions on a small split overfit it.

The choice rule, applied in the same way to NeST and to pruning only: among
the settings whose mean validation error over seeds is at most the dense net's
mean validation error + 0.3 points, the one with the fewest mean active
parameters. Only then are test errors looked at, and they are reported for
every setting, so a reader can see whether the choice generalised.

Run ``python -m benchmarks.nest_study`` (about 30 minutes with one thread);
``--quick`` is a smoke run on small subsets with one setting.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from dataclasses import asdict, replace
from typing import Any

import torch

from benchmarks.common import markdown_table, write_results
from benchmarks.nest_lenet import (
    CONFIGS,
    QUICK,
    QUICK_CONFIG,
    Config,
    load_data,
    run_dense,
    run_nest,
    run_pruning_only,
)

SEEDS = (0, 1, 2)
ERROR_MARGIN = 0.3  # points of validation error allowed above the dense net's
GRID = {
    # Fashion-MNIST runs take minutes each: the Policy-1 rate is not varied there
    "fashion_mnist": {
        "connection_fraction": (0.15,),
        "prune_lr": (None, 0.005),
        "val_fraction": (0.1, 0.2),
    },
    "mnist5k": {
        "connection_fraction": (0.15, 0.05),
        "prune_lr": (None, 0.005),
        "val_fraction": (0.1, 0.2),
    },
}
QUICK_GRID = {
    "connection_fraction": (0.15,),
    "prune_lr": (0.005,),
    "val_fraction": (0.1,),
}
BASELINE_KEYS = ("prune_lr", "val_fraction")  # the settings pruning only depends on


def _settings(grid: dict[str, tuple]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def _label(setting: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items())


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of the final rows of one setting."""
    out: dict[str, Any] = {"seeds": len(runs)}
    for key in ("val_error_%", "test_error_%", "parameters", "flops_per_example"):
        out[key], out[key + "_std"] = _mean_std([r[key] for r in runs])
    return out


def _row(final: dict[str, Any]) -> dict[str, Any]:
    return {
        "val_error_%": 100 * (1 - final["val_accuracy"]),
        "test_error_%": 100 * (1 - final["test_accuracy"]),
        "parameters": final["parameters"],
        "flops_per_example": final["flops_per_example"],
    }


def choose(summaries: list[dict[str, Any]], dense_val_error: dict[float, float]) -> int | None:
    """Index of the setting chosen on validation: fewest parameters within the margin."""
    eligible = [
        i
        for i, s in enumerate(summaries)
        if s["val_error_%"] <= dense_val_error[s["setting"]["val_fraction"]] + ERROR_MARGIN
    ]
    if not eligible:
        return None
    return min(eligible, key=lambda i: summaries[i]["parameters"])


def run_study(name: str, grid: dict[str, tuple], seeds: tuple[int, ...], quick: bool) -> dict:
    ds = load_data(name)
    base: Config = CONFIGS[name]
    if quick:
        ds = ds.subset(**QUICK[name], seed=0)
        base = replace(base, **QUICK_CONFIG)
    settings = _settings(grid)
    dense_runs: dict[tuple, dict] = {}  # (seed, val_fraction) -> (model, opt, row)
    prune_runs: dict[tuple, dict] = {}  # (seed, prune_lr, val_fraction) -> row
    nest_runs: dict[tuple, dict] = {}
    for seed in seeds:
        for setting in settings:
            # pruning only is studied at the same retraining rate as NeST
            cfg = replace(base, seed=seed, baseline_prune_lr=setting["prune_lr"], **setting)
            dkey = (seed, cfg.val_fraction)
            if dkey not in dense_runs:
                dense_runs[dkey] = run_dense(ds, cfg)
            model, opt, dense_row = dense_runs[dkey]
            pkey = (seed, cfg.prune_lr, cfg.val_fraction)
            if pkey not in prune_runs:
                pr = run_pruning_only(model, opt, dense_row["val_accuracy"], ds, cfg)
                prune_runs[pkey] = _row(pr["final"])
            nest = run_nest(ds, cfg, dense_row["val_accuracy"])
            nest_runs[(seed, *setting.values())] = {
                **_row(nest["final"]),
                "after_growth": nest["phases"]["after_growth"],
                "prune_steps_accepted": nest["phases"]["prune_steps_accepted"],
            }
            r = nest_runs[(seed, *setting.values())]
            print(
                f"{name} seed {seed} {_label(setting)}: NeST val {r['val_error_%']:.2f} "
                f"test {r['test_error_%']:.2f} params {r['parameters']}",
                flush=True,
            )
    dense = {
        vf: _summarise([_row(dense_runs[(s, vf)][2]) for s in seeds]) for vf in grid["val_fraction"]
    }
    dense_val = {vf: d["val_error_%"] for vf, d in dense.items()}
    nest = []
    for setting in settings:
        runs = [nest_runs[(s, *setting.values())] for s in seeds]
        summary = _summarise(runs)
        summary["after_growth"] = statistics.fmean(r["after_growth"] for r in runs)
        summary["setting"] = setting
        nest.append(summary)
    baseline_settings = _settings({k: grid[k] for k in BASELINE_KEYS})
    pruning = []
    for setting in baseline_settings:
        runs = [prune_runs[(s, setting["prune_lr"], setting["val_fraction"])] for s in seeds]
        pruning.append({**_summarise(runs), "setting": setting})
    chosen_nest, chosen_prune = choose(nest, dense_val), choose(pruning, dense_val)
    return {
        "dense": {str(k): v for k, v in dense.items()},
        "nest": nest,
        "pruning_only": pruning,
        "chosen_nest": chosen_nest,
        "chosen_pruning_only": chosen_prune,
        "goal": goal(dense, nest, pruning, chosen_nest, chosen_prune),
        "base_config": asdict(base),
        "runs": {
            "nest": [{"key": list(k), **v} for k, v in nest_runs.items()],
            "pruning_only": [{"key": list(k), **v} for k, v in prune_runs.items()],
        },
    }


def goal(dense, nest, pruning, i_nest, i_prune) -> dict[str, Any]:
    """The issue's goal on mean test numbers of the settings chosen on validation."""
    if i_nest is None:
        return {"met": False, "reason": "no NeST setting within the validation margin"}
    n = nest[i_nest]
    d = dense[n["setting"]["val_fraction"]]
    compression = d["parameters"] / n["parameters"]
    out = {
        "nest_param_compression": compression,
        "nest_test_error_minus_dense": n["test_error_%"] - d["test_error_%"],
        "nest_10x_fewer_params_than_dense": compression >= 10,
        "nest_error_within_0.3_points_of_dense": n["test_error_%"] <= d["test_error_%"] + 0.3,
    }
    if i_prune is not None:
        p = pruning[i_prune]
        out["nest_fewer_params_than_pruning_only"] = n["parameters"] < p["parameters"]
        out["nest_error_within_0.3_points_of_pruning_only"] = (
            n["test_error_%"] <= p["test_error_%"] + 0.3
        )
    out["met"] = all(v for k, v in out.items() if isinstance(v, bool))
    return out


def _fmt(mean: float, std: float, digits: int = 2) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _table_rows(summaries: list[dict[str, Any]], chosen: int | None, dense_params: dict):
    rows = []
    for i, s in enumerate(summaries):
        row = {"chosen": "**yes**" if i == chosen else ""}
        row.update({k: ("default" if v is None else v) for k, v in s["setting"].items()})
        row["val_error_%"] = _fmt(s["val_error_%"], s["val_error_%_std"])
        row["test_error_%"] = _fmt(s["test_error_%"], s["test_error_%_std"])
        row["parameters"] = f"{s['parameters']:,.0f} ± {s['parameters_std']:,.0f}"
        row["compression"] = f"{dense_params[s['setting']['val_fraction']] / s['parameters']:.1f}x"
        if "after_growth" in s:
            row["after_growth"] = f"{s['after_growth']:,.0f}"
        rows.append(row)
    return rows


def _chosen_cell(summaries: list[dict], i: int | None, dense: dict[float, dict]) -> str:
    if i is None:
        return "none within the validation margin"
    c = summaries[i]
    d = dense[c["setting"]["val_fraction"]]
    return (
        f"{_fmt(c['test_error_%'], c['test_error_%_std'])} %, "
        f"{d['parameters'] / c['parameters']:.1f}× (prune_lr "
        f"{c['setting']['prune_lr'] or 'default'}, val {c['setting']['val_fraction']:g})"
    )


def summary_table(payload: dict[str, Any]) -> str:
    """One row per data set: the settings chosen on validation, their mean test numbers."""
    rows = []
    for name, res in payload["results"].items():
        dense = {float(k): v for k, v in res["dense"].items()}
        d0 = dense[min(dense)]
        rows.append(
            {
                "data": name,
                "dense test error (val 10 %)": f"{_fmt(d0['test_error_%'], d0['test_error_%_std'])} %",
                "pruning only (chosen): test error, compression": _chosen_cell(
                    res["pruning_only"], res["chosen_pruning_only"], dense
                ),
                "NeST (chosen): test error, compression": _chosen_cell(
                    res["nest"], res["chosen_nest"], dense
                ),
            }
        )
    return markdown_table(rows)


def markdown(payload: dict[str, Any]) -> str:
    parts = [
        "NeST schedule study, LeNet-300-100, seeds "
        f"{', '.join(map(str, payload['seeds']))}; mean ± std over seeds. Settings are chosen "
        "on validation only: the fewest mean active parameters among those with mean "
        f"validation error <= dense + {ERROR_MARGIN} points. Test error is only reported. "
        "`prune_lr` default = the training rate (0.05).\n"
    ]
    for name, res in payload["results"].items():
        dense_params = {float(k): v["parameters"] for k, v in res["dense"].items()}
        parts.append(f"\n## {name}\n\nDense LeNet-300-100:\n\n")
        rows = [
            {
                "val_fraction": k,
                "val_error_%": _fmt(v["val_error_%"], v["val_error_%_std"]),
                "test_error_%": _fmt(v["test_error_%"], v["test_error_%_std"]),
                "parameters": f"{v['parameters']:,.0f}",
            }
            for k, v in res["dense"].items()
        ]
        parts.append(markdown_table(rows))
        parts.append("\nPruning only (Han et al.):\n\n")
        parts.append(
            markdown_table(
                _table_rows(res["pruning_only"], res["chosen_pruning_only"], dense_params)
            )
        )
        parts.append("\nNeST:\n\n")
        parts.append(markdown_table(_table_rows(res["nest"], res["chosen_nest"], dense_params)))
        g = res["goal"]
        parts.append(
            "\nGoal on the chosen settings' mean test numbers: "
            + ", ".join(
                f"{k}: {('yes' if v else 'no') if isinstance(v, bool) else v if isinstance(v, str) else f'{v:.2f}'}"
                for k, v in g.items()
            )
            + ".\n"
        )
    parts.append(f"\nTotal wall time: {payload['wall_s'] / 60:.0f} min.\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke run: small subsets, one setting")
    ap.add_argument("--datasets", nargs="*", default=list(GRID), choices=list(GRID))
    ap.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    seeds = tuple(args.seeds[:1]) if args.quick else tuple(args.seeds)
    results = {
        name: run_study(name, QUICK_GRID if args.quick else GRID[name], seeds, args.quick)
        for name in args.datasets
    }
    payload = {
        "quick": args.quick,
        "seeds": list(seeds),
        "threads": args.threads,
        "grid": {k: QUICK_GRID if args.quick else GRID[k] for k in args.datasets},
        "results": results,
        "wall_s": time.perf_counter() - t0,
    }
    write_results(
        "nest_study",
        payload,
        markdown(payload),
        argv=argv,
        tables={"summary": summary_table(payload)},
    )
    return payload


if __name__ == "__main__":
    main()
