"""A fast check of benchmarks/gradmax_images.py's core on a small MNIST-1D run.

Runs the four methods (GradMax, Random, Small 0.25x, Big 1x) for one seed
with the benchmark's own code; writes nothing under benchmarks/results.
"""

from __future__ import annotations

import importlib
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from torchgrow import data

# the benchmarks package lives at the repository root (not installed): importable under
# `python -m pytest` and plain `pytest` alike
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
bench = importlib.import_module("benchmarks.gradmax_images")


@pytest.fixture(scope="module")
def runs():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds = data.mnist1d(n_samples=1500)  # 1,200 train / 300 test
        setup = replace(bench.SETUPS["mnist1d/mlp"], epochs=20)  # 10 x 20 = 200 steps
        out = {m: bench.run(setup, ds, m, seed=0) for m in bench.METHODS}
    finally:
        torch.set_num_threads(n)
    return out


def test_schedule_is_the_papers_scaled():
    s = bench.scaled_schedule(78_200)
    assert (s["start"], s["every"], s["events"]) == (10_000, 2_500, 12)
    s = bench.scaled_schedule(200)
    assert s == {"start": 24, "every": 6, "events": 12, "last": 90}
    with pytest.raises(ValueError):
        bench.scaled_schedule(10)


def test_every_method_trains_the_same_steps(runs):
    steps = {r["steps"] for r in runs.values()}
    assert steps == {200}
    for r in runs.values():
        assert 0.0 <= r["val_accuracy"] <= 1.0
        assert math.isfinite(r["val_loss"])


def test_grown_models_end_at_the_big_architecture(runs):
    big = runs["Big 1x"]
    small = runs["Small 0.25x"]
    assert small["widths_final"] == {"fc1": 32, "fc2": 32}
    assert big["widths_final"] == {"fc1": 128, "fc2": 128}
    for m in bench.GROWING:
        r = runs[m]
        assert r["widths_initial"] == small["widths_final"]
        assert r["widths_final"] == big["widths_final"]
        assert r["params_initial"] == small["params_final"]
        assert r["params_final"] == big["params_final"] == r["params_big"]
        assert r["matches_big"]
        # 12 events, each growing both layers by 25 % of the initial width (8 units)
        assert len(r["events"]) == 24
        assert {e["width_after"] - e["width_before"] for e in r["events"]} == {8}
        assert sorted({e["step"] for e in r["events"]}) == list(range(24, 91, 6))


def test_function_preserved_at_every_growth(runs):
    for m in bench.GROWING:
        r = runs[m]
        assert len(r["function_checks"]) == 12
        for c in r["function_checks"]:
            assert c["max_abs_output"] > 0
            # float64 copies: no change beyond float64 rounding
            assert c["max_abs_delta_float64"] <= 1e-12 * max(1.0, c["max_abs_output"]), (m, c)
            # float32 (GrowthEvent.max_abs_delta): at most float32 rounding of the outputs
            for e in r["events"]:
                if e["step"] == c["step"]:
                    assert e["max_abs_delta"] <= 1e-6 * max(1.0, c["max_abs_output"]), (m, e)


def test_initialisers_and_gradients(runs):
    assert {e["solver"] for e in runs["GradMax"]["events"]} == {"svd"}
    assert {e["solver"] for e in runs["Random"]["events"]} == {"random"}
    for m in bench.GROWING:
        assert all(e["grad_norm_fan_in"] > 0 for e in runs[m]["events"])


def test_training_flops_of_grown_runs_lie_between_small_and_big(runs):
    small = runs["Small 0.25x"]["training_flops"]
    big = runs["Big 1x"]["training_flops"]
    assert 0 < small < big
    for m in bench.GROWING:
        assert small < runs[m]["training_flops"] < big
    # both growing methods grow at the same steps to the same widths: same FLOPs
    assert runs["GradMax"]["training_flops"] == runs["Random"]["training_flops"]


def test_summary_and_markdown(runs):
    rs = list(runs.values())
    rows = bench.summarise(rs)
    assert [r["method"] for r in rows] == list(bench.METHODS)
    by = {r["method"]: r for r in rows}
    assert by["Big 1x"]["FLOPs vs big"] == 1
    assert by["GradMax"]["ends_at_big_architecture"]
    assert by["GradMax"]["solvers"] == {"fc1": ["svd"], "fc2": ["svd"]}
    text = bench.reading(rs, rows)
    assert "mnist1d/mlp" in text and "GradMax − Random" in text
