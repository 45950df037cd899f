"""A fast check of benchmarks/compnet_deepen.py's core on 800 mnist5k images."""

from __future__ import annotations

import importlib
import sys
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("mlxtend")

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
bench = importlib.import_module("benchmarks.compnet_deepen")


@pytest.fixture(scope="module")
def result():
    setup = replace(bench.SETUPS["mnist5k_mlp100"], **bench.QUICK)
    return bench.run_seed(setup, budgets=(0.3, 3.0))


def test_children_and_baselines(result):
    labels = [(c["variant"], c["budget"]) for c in result["children"]]
    assert labels == [
        ("CompNet", 0.3),
        ("CompNet", 3.0),
        ("CompNet (morphism)", 0.3),
        ("CompNet (morphism)", 3.0),
        (bench.NET2NET, 0.0),
        (bench.SCRATCH, None),
    ]
    by = {(c["variant"], c["budget"]): c for c in result["children"]}
    assert by["CompNet", 3.0]["max_abs_delta"] == 0.0  # the identity layer is exact
    assert by[bench.NET2NET, 0.0]["width"] == 100  # no penalty: nothing removed
    assert by["CompNet", 3.0]["lam"] == pytest.approx(10 * by["CompNet", 0.3]["lam"])
    assert by["CompNet", 3.0]["width"] <= by["CompNet", 0.3]["width"]  # more pressure, narrower
    assert by["CompNet (morphism)", 0.3]["width_at_insertion"] <= 20  # 2 x rank of 10 x 100
    q = bench.QUICK
    scratch = by[bench.SCRATCH, None]
    assert (
        scratch["epochs"] == result["parent"]["epochs"] + q["sparse_epochs"] + q["finetune_epochs"]
    )
    assert len(scratch["val_curve"]) == scratch["epochs"]  # one value per epoch from init
    child = by["CompNet", 0.3]
    assert len(child["val_curve"]) == 1 + q["sparse_epochs"] + q["finetune_epochs"]
    # same architecture, same size: the uncompacted child and the deeper net from scratch
    assert by[bench.NET2NET, 0.0]["parameters"] == scratch["parameters"]


def _row(variant, budget, val, width, test=0.9):
    return {"variant": variant, "budget": budget, "val": (val, 0.0), "test": (test, 0.0),
            "width": width, "layer_width": 100, "max_abs_delta": 0.0}  # fmt: skip


def test_choice_is_made_on_validation_only():
    rows = [
        _row("CompNet", 0.1, 0.900, 60, test=0.95),
        _row("CompNet", 1.0, 0.899, 20, test=0.80),  # within 0.2 points of Net2Net on validation
        _row("CompNet", 3.0, 0.850, 5, test=0.99),  # narrowest, but 5 points below on validation
        _row(bench.NET2NET, 0.0, 0.900, 100),
    ]
    assert bench.choose(rows, "CompNet") == 1  # test accuracy plays no part
    g = bench.goal(rows, 1)
    assert g["width_ratio"] == 0.2 and g["width_at_most_30_percent"]
    assert not g["accuracy_within_0.2_points_of_net2net"]  # 0.80 vs 0.90 on test
    rows[1]["val"] = (0.89, 0.0)  # nothing within the margin: the best validation accuracy
    assert bench.choose(rows, "CompNet") == 0


def test_epochs_to_a_level():
    assert bench.epochs_to([0.5, 0.7, 0.9], 0.7, offset=0) == 1
    assert bench.epochs_to([0.5, 0.7, 0.9], 0.7, offset=1) == 2
    assert bench.epochs_to([0.5, 0.6], 0.7, offset=0) is None


def test_summary_and_markdown_from_two_seeds(result):
    other = {**result, "seed": 1}
    summary = bench.summarise({"0": result, "1": other})
    assert summary["seeds"] == [0, 1]
    by = {(r["variant"], r["budget"]): r for r in summary["rows"]}
    mine = next(c for c in result["children"] if c["variant"] == "CompNet" and c["budget"] == 0.3)
    assert by["CompNet", 0.3]["test"] == (mine["test_accuracy"], 0.0)  # identical seeds: std 0
    assert by["CompNet", 0.3]["dip_points"] == pytest.approx(
        100 * (min(mine["val_curve"]) - result["parent"]["val_accuracy"])
    )
    assert set(summary["chosen"]) == {"CompNet", "CompNet (morphism)"}
    text = bench.markdown({"summary": {"mnist5k_mlp100": summary}, "repeated": {}})
    assert "| CompNet 0.3 |" in text or "| **CompNet 0.3** |" in text
    assert "Targets (CompNet, chosen budget)" in text
