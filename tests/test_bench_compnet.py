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
    return bench.run_setup(replace(bench.SETUPS["mnist5k_mlp100"], **bench.QUICK))


def test_children_and_baselines(result):
    by = {c["variant"]: c for c in result["children"]}
    assert set(by) == {
        "CompNet",
        "CompNet (morphism)",
        "Net2Net (no compaction)",
        "Scratch (deeper)",
    }
    assert by["CompNet"]["max_abs_delta"] == 0.0  # the identity layer is exact
    assert by["Net2Net (no compaction)"]["width"] == 100  # no penalty: nothing removed
    assert by["CompNet"]["width"] < 100
    assert by["CompNet (morphism)"]["width_at_insertion"] <= 20  # 2 x rank of a 10 x 100 weight
    total = (
        result["parent"]["epochs"] + bench.QUICK["sparse_epochs"] + bench.QUICK["finetune_epochs"]
    )
    assert by["Scratch (deeper)"]["epochs"] == total  # the same epochs as a child's whole history
    # same architecture, same size: the uncompacted child and the deeper net from scratch
    assert by["Net2Net (no compaction)"]["parameters"] == by["Scratch (deeper)"]["parameters"]


def test_goal_is_computed_from_the_rows(result):
    g = result["goal"]
    by = {c["variant"]: c for c in result["children"]}
    assert g["width_ratio"] == by["CompNet"]["width"] / 100
    assert g["width_at_most_30_percent"] == (g["width_ratio"] <= 0.3)
    text = bench.markdown({"results": {"mnist5k_mlp100": result}, "wall_s": 1.0})
    assert "| CompNet |" in text and "Targets (CompNet)" in text
