"""A fast check of benchmarks/autogrow_depth.py's core on a small MNIST-1D subset.

Runs two AutoGrow variants and the from-scratch sweep with the benchmark's own
code; writes nothing under benchmarks/results.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
bench = importlib.import_module("benchmarks.autogrow_depth")


@pytest.fixture(scope="module")
def result():
    setup = replace(bench.SETUPS["mnist1d_mlp"], **bench.QUICK)
    return bench.run_setup(setup, bench.QUICK_VARIANTS)


def test_variants_grow_and_zero_init_preserves(result):
    by = {f["variant"]: f for f in result["autogrow"]}
    assert set(by) == set(bench.QUICK_VARIANTS)
    gau, zero = by["p-AutoGrow K=1, GauInit"], by["c-AutoGrow K=6, ZeroInit"]
    assert sum(gau["arch"]) > 3  # K=1 grew within the 4-epoch budget
    assert all(1 <= a <= bench.QUICK["max_blocks"] for a in gau["arch"])
    assert gau["max_abs_delta"] > 0.0
    assert zero["max_abs_delta"] == 0.0
    for f in result["autogrow"]:
        assert 0.0 <= f["test_accuracy"] <= 1.0 and f["training_flops"] > 0


def test_scratch_sweep_covers_the_found_depths(result):
    depths = {tuple(r["arch"]) for r in result["scratch"]}
    assert (1, 1, 1) in depths
    assert all(tuple(f["arch"]) in depths for f in result["autogrow"])
    params = {tuple(r["arch"]): r["parameters"] for r in result["scratch"]}
    for f in result["autogrow"]:
        assert f["parameters"] == params[tuple(f["arch"])]  # same network, same size


def test_markdown_tables_are_well_formed(result):
    text = bench.markdown({"results": {"mnist1d_mlp": result}, "wall_s": 1.0})
    table_lines = [line for line in text.splitlines() if line.startswith("|")]
    assert table_lines
    widths = {line.count("|") for line in table_lines if "variant" in line or "p-AutoGrow" in line}
    assert len(widths) == 1  # no stray pipes inside cells
