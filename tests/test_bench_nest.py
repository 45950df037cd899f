"""A fast check of benchmarks/nest_lenet.py's core on 1,000 mnist5k images.

Runs the three variants (Dense, Pruning only, NeST) with the benchmark's own
code; writes nothing under benchmarks/results.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from torchgrow import data

pytest.importorskip("mlxtend")

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
bench = importlib.import_module("benchmarks.nest_lenet")


@pytest.fixture(scope="module")
def result():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds = data.mnist5k().subset(1000, 300, seed=0)
        cfg = replace(
            bench.CONFIGS["mnist5k"],
            dense_epochs=2,
            grow_epochs=1,
            retrain_epochs=1,
            max_grow_rounds=2,
            max_prune_rounds=3,
            target=None,  # growth runs its whole budget of 2 rounds
            tolerance=1.0,  # every pruning step is accepted
        )
        out = bench.run_dataset(ds, cfg)
    finally:
        torch.set_num_threads(n)
    return out


def test_all_variants_run(result):
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == set(bench.VARIANTS)
    for r in rows.values():
        assert 0.0 <= r["test_error_%"] <= 100.0
        assert 0.0 <= r["val_error_%"] <= 100.0
        assert r["parameters"] > 0 and r["flops_per_example"] > 0
    dense = rows["Dense"]
    assert dense["parameters"] == 266_610
    assert dense["flops_per_example"] == 532_400
    assert dense["param_compression"] == 1.0


def test_pruning_only_is_smaller_than_dense(result):
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["Pruning only"]["parameters"] < rows["Dense"]["parameters"]
    assert rows["Pruning only"]["flops_per_example"] < rows["Dense"]["flops_per_example"]
    hist = result["pruning_only_history"]
    accepted = [h["parameters"] for h in hist if h["phase"] == "dense" or h.get("accepted")]
    assert len(accepted) == 4  # dense + 3 accepted steps (tolerance 1.0)
    assert all(b < a for a, b in zip(accepted, accepted[1:], strict=False))


def test_nest_grows_then_prunes(result):
    hist = result["nest_history"]
    phases = [h["phase"] for h in hist]
    assert phases == ["seed", "grow", "grow", "prune", "prune", "prune"]
    grow = [h["parameters"] for h in hist if h["phase"] in ("seed", "grow")]
    assert all(b > a for a, b in zip(grow, grow[1:], strict=False)), grow
    pruned = [grow[-1]] + [h["parameters"] for h in hist if h["phase"] == "prune"]
    assert all(h["accepted"] for h in hist if h["phase"] == "prune")
    assert all(b < a for a, b in zip(pruned, pruned[1:], strict=False)), pruned
    ph = result["nest_phases"]
    assert ph["seed"] < ph["after_growth"]
    assert ph["after_pruning"] < ph["after_growth"]
    assert ph["after_pruning"] == pruned[-1]
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["NeST"]["parameters"] == ph["after_pruning"]
    # seed 784-120-40-10 at 10 % connectivity, plus full biases (120 + 40 + 10)
    assert ph["seed"] < 0.11 * (784 * 120 + 120 * 40 + 40 * 10) + 170


def test_goal_keys(result):
    g = result["goal"]
    assert set(g) >= {"met", "nest_10x_fewer_params_than_dense"}
    assert g["met"] == all(v for k, v in g.items() if k != "met")


def test_study_chooses_on_validation_only():
    study = importlib.import_module("benchmarks.nest_study")

    def s(val, params, test, vf=0.1):
        return {"val_error_%": val, "parameters": params, "test_error_%": test,
                "setting": {"val_fraction": vf}}  # fmt: skip

    dense_val = {0.1: 10.0, 0.2: 11.0}
    rows = [s(10.2, 5000, 20.0), s(10.4, 1000, 10.0), s(11.2, 3000, 30.0, vf=0.2)]
    # 10.4 is above dense + 0.3; the test errors play no part in the choice
    assert study.choose(rows, dense_val) == 2
    assert study.choose([s(10.4, 1000, 10.0)], dense_val) is None
    dense = {0.1: {"parameters": 266_610, "test_error_%": 12.0}}
    prune = [s(10.0, 4000, 12.1)]
    g = study.goal(dense, [s(10.1, 3000, 12.2)], prune, 0, 0)
    assert g["met"] and g["nest_param_compression"] == pytest.approx(266_610 / 3000)
    g = study.goal(dense, [s(10.1, 30000, 12.2)], prune, 0, 0)
    assert not g["met"] and not g["nest_10x_fewer_params_than_dense"]
