"""torchgrow compare: settings, the runs' logs, resuming, and the command line."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import pytest
import torch

from torchgrow import contenders
from torchgrow.compare import CompareConfig, parse_budget, run_compare, run_dir
from torchgrow.contenders import CONTENDERS, Interrupted
from torchgrow.errors import GrowthInputError

TINY = dict(data="digits", budget_epochs=3, width=8, batch_size=64, threads=1)
MLP_METHODS = [n for n, c in CONTENDERS.items() if c.family == "mlp"]  # the gpt family: own test


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "events.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- settings
def test_config_round_trips_through_toml(tmp_path):
    cfg = CompareConfig(
        name="t", methods=("static", "gradmax"), seeds=(0, 3), train_size=500, **TINY
    )
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert CompareConfig.from_toml(path) == cfg
    assert "train_size = 500" in path.read_text() and "test_size" not in path.read_text()


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"methods": ("static", "magic")}, "unknown methods"),
        ({"methods": ("static", "static")}, "repeated"),
        ({"data": "imagenet"}, "unknown data set"),
        ({"budget_epochs": 2}, "at least 3"),
        ({"seeds": ()}, "seeds"),
        ({"lr": 0.0}, "lr"),
    ],
)
def test_bad_settings_say_what_is_wrong(bad, match):
    with pytest.raises(GrowthInputError, match=match):
        CompareConfig(**{**TINY, **bad})


def test_unknown_toml_keys_and_budgets_are_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('data = "digits"\nepochs = 3\n')
    with pytest.raises(GrowthInputError, match="unknown settings \\['epochs'\\]"):
        CompareConfig.from_toml(path)
    assert parse_budget("12") == parse_budget("12ep") == parse_budget("12 epochs") == 12
    with pytest.raises(GrowthInputError, match="FLOPs budget is not supported"):
        parse_budget("1e12flops")
    with pytest.raises(GrowthInputError, match="number of epochs"):
        parse_budget("ten")


def test_a_directory_of_other_settings_is_not_reused(tmp_path):
    cfg = CompareConfig(methods=("static",), **TINY)
    run_compare(cfg, tmp_path)
    other = CompareConfig(methods=("static",), **{**TINY, "width": 9})
    with pytest.raises(GrowthInputError, match="other settings .*width"):
        run_compare(other, tmp_path)


# ---------------------------------------------------------------- runs and their logs
@pytest.fixture(scope="module")
def every_method(tmp_path_factory):
    out = tmp_path_factory.mktemp("all")
    cfg = CompareConfig(methods=tuple(MLP_METHODS), **TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradMax's rank warning on tiny layers
        results = run_compare(cfg, out)
    return out, cfg, results


def test_every_method_runs_and_its_logs_agree_with_its_result(every_method):
    out, cfg, results = every_method
    assert [r["method"] for r in results] == MLP_METHODS
    for r in results:
        path = run_dir(out, r["method"], 0)
        rows, events = _rows(path), _events(path)
        assert rows, r["method"]
        flops = [int(float(x["training_flops"])) for x in rows]
        assert flops == sorted(flops) and flops[-1] == r["training_flops"] > 0, r["method"]
        assert int(float(rows[-1]["epoch"])) == r["epochs"] <= cfg.budget_epochs, r["method"]
        grows = [e for e in events if e["kind"] in ("grow", "deepen")]
        assert r["growth_events"] == len(grows), r["method"]
        deltas = [e["max_abs_delta"] for e in events if e["max_abs_delta"] is not None]
        assert r["max_abs_delta"] == (max(deltas) if deltas else None), r["method"]
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["parameters"] > 0
        assert set(r["description"]) >= {"why", "when", "where", "how"}
        assert r["description"]["why"] == CONTENDERS[r["method"]].description["why"]


def test_growth_happened_where_it_should(every_method):
    _, cfg, results = every_method
    by = {r["method"]: r for r in results}
    assert by["static"]["growth_events"] == 0
    w, g = cfg.width, cfg.grow_factor
    for m in ("random", "gradmax"):
        assert by[m]["growth_events"] == 2 * cfg.grow_times  # both hidden layers, each time
        assert f"-{int(w * g)}-{int(w * g)}-" in by[m]["model"]
        assert by[m]["max_abs_delta"] < 1e-5  # zero fan-in: function-preserving
        assert by[m]["parameters"] > by["static"]["parameters"]
    assert by["compnet"]["growth_events"] == 1 and by["compnet"]["max_abs_delta"] == 0.0
    assert by["autogrow"]["growth_events"] >= 1


def test_finished_runs_are_not_repeated(every_method, monkeypatch):
    out, cfg, results = every_method
    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed0/result.json")}

    def boom(ctx):
        raise AssertionError("a finished run was run again")

    for name, c in CONTENDERS.items():
        monkeypatch.setitem(
            CONTENDERS, name, contenders.Contender(name, c.description, boom, family=c.family)
        )
    again = run_compare(cfg, out)
    assert again == results
    assert {p: p.stat().st_mtime_ns for p in before} == before


# ---------------------------------------------------------------- interruption
@pytest.mark.parametrize("method", ["static", "gradmax"])
def test_an_interrupted_run_resumes_to_the_same_numbers(method, tmp_path):
    cfg = CompareConfig(methods=(method,), **{**TINY, "budget_epochs": 4})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (whole,) = run_compare(cfg, tmp_path / "whole")
        with pytest.raises(Interrupted, match="after epoch 2 of 4"):
            run_compare(cfg, tmp_path / "cut", stop_after=2)
        path = run_dir(tmp_path / "cut", method, 0)
        assert not (path / "result.json").exists() and (path / "fit" / "checkpoint.pt").exists()
        torch.manual_seed(999)  # scramble the global generator: resuming must not depend on it
        (resumed,) = run_compare(cfg, tmp_path / "cut")
    for key in ("test_accuracy", "val_accuracy", "parameters", "training_flops", "growth_events"):
        assert resumed[key] == whole[key], key
    cols = ("epoch", "val_accuracy", "parameters", "training_flops")
    strip = [{k: r[k] for k in cols} for r in _rows(run_dir(tmp_path / "whole", method, 0))]
    assert [{k: r[k] for k in cols} for r in _rows(path)] == strip


# ---------------------------------------------------------------- TensorBoard
def test_tensorboard_curves_equal_the_csv_log(tmp_path):
    pytest.importorskip("tensorboard", reason="pip install torchgrow[tensorboard]")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = CompareConfig(methods=("compnet",), **TINY)
    (result,) = run_compare(cfg, tmp_path, tensorboard=True)
    path = run_dir(tmp_path, "compnet", 0)
    acc = EventAccumulator(str(path / "tensorboard"))
    acc.Reload()
    rows = _rows(path)
    logged = [(e.step, e.value) for e in acc.Scalars("by_flops/parameters")]
    assert logged == [(int(r["training_flops"]), float(r["parameters"])) for r in rows]
    (final,) = acc.Scalars("final/test_accuracy")
    assert final.value == pytest.approx(result["test_accuracy"])
    assert len(acc.Scalars("events/deepen_parameters_after")) == result["growth_events"] == 1


def test_tensorboard_without_the_package_fails_before_running(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    cfg = CompareConfig(methods=("static",), **TINY)
    with pytest.raises(ImportError, match="pip install torchgrow\\[tensorboard\\]"):
        run_compare(cfg, tmp_path, tensorboard=True)
    assert not run_dir(tmp_path, "static", 0).exists()


# ---------------------------------------------------------------- backends
MEASURED = ("test_accuracy", "val_accuracy", "parameters", "flops_per_example", "training_flops")


def test_the_ray_backend_gives_the_local_backends_results(tmp_path):
    pytest.importorskip("ray", reason="pip install torchgrow[ray]")
    cfg = CompareConfig(methods=("static", "compnet"), **TINY)
    local = run_compare(cfg, tmp_path / "local")
    remote = run_compare(cfg, tmp_path / "ray", backend="ray")
    assert [(r["method"], r["seed"]) for r in remote] == [(r["method"], r["seed"]) for r in local]
    for a, b in zip(local, remote, strict=True):
        assert {k: a[k] for k in MEASURED} == {k: b[k] for k in MEASURED}, a["method"]
        path = run_dir(tmp_path / "ray", a["method"], 0)
        assert json.loads((path / "result.json").read_text())["test_accuracy"] == a["test_accuracy"]
        assert _rows(path) and (path / "events.jsonl").exists()
    # the same report, but for the wall-clock column
    from torchgrow.report import load_comparison, summarise_comparison

    tables = [summarise_comparison(load_comparison(tmp_path / d)) for d in ("local", "ray")]
    for a, b in zip(*tables, strict=True):
        assert {k: v for k, v in a.items() if k != "wall_seconds"} == {
            k: v for k, v in b.items() if k != "wall_seconds"
        }
    # finished runs are not repeated on Ray either
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("runs/*/seed0/result.json")}
    run_compare(cfg, tmp_path / "ray", backend="ray")
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_backend_settings_are_checked(tmp_path):
    cfg = CompareConfig(methods=("static",), **TINY)
    with pytest.raises(GrowthInputError, match="backend must be one of"):
        run_compare(cfg, tmp_path, backend="dask")
    with pytest.raises(GrowthInputError, match="--address is the address of a Ray cluster"):
        run_compare(cfg, tmp_path, address="auto")
    assert not (tmp_path / "runs").exists()
