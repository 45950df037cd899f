"""The GradMax student-teacher benchmark's core, shortened (1 seed, 300 steps, 3 growths)."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest
import torch

# the benchmarks package lives at the repository root (not installed): importable under
# `python -m pytest` and plain `pytest` alike
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
st = importlib.import_module("benchmarks.gradmax_student_teacher")

GROWTH = (60, 120, 180)
STEPS = 300


@pytest.fixture(scope="module")
def runs():
    with st.torch_threads(1):
        return st.run_seed(0, st.METHODS, steps=STEPS, growth_steps=GROWTH, opt_lrs=(0.1,))


def test_setup_matches_the_notebook():
    x, y = st.teacher_data()
    assert x.shape == (1000, 10) and y.shape == (1000, 10)
    model = st.student(3)
    assert [n for n, _ in model.named_parameters()] == ["fc1.weight", "fc2.weight"]  # no biases
    limit = math.sqrt(6 / 15)
    for w in (model.fc1.weight, model.fc2.weight):
        assert w.abs().max() <= limit
    # same seed, same small init across methods
    assert torch.equal(st.student(3).fc1.weight, model.fc1.weight)


def test_gradmax_beats_random_at_the_same_state(runs):
    probes = runs["Random"]["same_state"]
    assert [p["step"] for p in probes] == list(GROWTH)
    for p in probes:
        g, r = p["GradMax"]["grad_norm_fan_in"], p["Random"]["grad_norm_fan_in"]
        assert g > r > 0
        # GradMax attains the closed-form optimum r * sigma_1 for one unit
        assert g == pytest.approx(p["gradmax_optimum"], rel=1e-4)
        # GradMaxOpt optimises the same objective: never above the optimum
        assert p["GradMaxOpt"]["grad_norm_fan_in"] <= p["gradmax_optimum"] * (1 + 1e-4)
        assert p["GradMaxOpt_lr_sweep"]["0.1"] <= p["gradmax_optimum"] * (1 + 1e-4)
    # the same-state Random copy draws what the run draws
    for ev, p in zip(runs["Random"]["events"], probes, strict=True):
        assert ev["grad_norm_fan_in"] == pytest.approx(p["Random"]["grad_norm_fan_in"], rel=1e-6)


def test_growth_preserves_the_function(runs):
    for m in st.GROWING:
        events = runs[m]["events"]
        assert [e["step"] for e in events] == list(GROWTH)
        assert [e["width_after"] for e in events] == [6, 7, 8]
        for e in events:
            # float32 rounding only: a few ulps of the output's magnitude
            assert e["max_abs_delta"] <= 4 * torch.finfo(torch.float32).eps * e["max_abs_output"]
            # and the loss curve does not jump at the growth step
            before, after = runs[m]["losses"][e["step"] - 1], runs[m]["losses"][e["step"]]
            assert after < before * 1.01
    for p in runs["Random"]["same_state"]:
        assert max(p["max_abs_delta_float64"].values()) < 1e-12


def test_losses_finite_and_ordered(runs):
    for m, run in runs.items():
        assert len(run["losses"]) == STEPS + 1
        assert all(math.isfinite(v) for v in run["losses"]), m
        assert run["losses"][-1] < run["losses"][0], m
    assert runs["Baseline-small"]["hidden_final"] == 5
    assert runs["Baseline-big"]["hidden_final"] == 10
    assert runs["Random"]["hidden_final"] == 8
    assert runs["Baseline-small"]["final_loss"] > runs["Baseline-big"]["final_loss"]
    # the same student init for every method of a seed: identical until the first growth
    for m in st.GROWING:
        assert runs[m]["losses"][: GROWTH[0]] == runs["Baseline-small"]["losses"][: GROWTH[0]]


def test_summaries_and_plot(runs, tmp_path):
    table = st.grad_norm_rows([runs])
    assert [r["growth"] for r in table] == [1, 2, 3]
    assert all(float(r["GradMax/Random (ratio of means)"]) > 1 for r in table)
    rows = st.loss_rows([runs], st.METHODS)
    assert [r["method"] for r in rows] == list(st.METHODS)
    png = tmp_path / "st.png"
    st.plot([runs, runs], st.METHODS, GROWTH, png)
    assert png.stat().st_size > 10_000
