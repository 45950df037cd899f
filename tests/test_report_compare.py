"""The comparison report: numbers equal to the run logs, plots, HTML that a browser opens."""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
import statistics
import subprocess
import warnings

import pytest

from torchgrow import cli
from torchgrow.compare import CompareConfig, load_results, run_compare, run_dir
from torchgrow.plots import epoch_curves, pareto_front
from torchgrow.report import (
    PLOTS,
    RUNS_HEADER,
    TABLE_HEADER,
    TIMELINE_HEADER,
    load_comparison,
    summarise_comparison,
    write_report,
)

TINY = dict(data="digits", budget_epochs=3, width=8, batch_size=64, threads=1)


def _table(md: str, header: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of the Markdown table whose header is ``header``, as dicts."""
    lines = md.splitlines()
    start = lines.index("| " + " | ".join(h.replace("|", "\\|") for h in header) + " |")
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip().replace("\\|", "|") for c in line.strip()[2:-2].split(" | ")]
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


# ---------------------------------------------------------------- Pareto front
def test_pareto_front_keeps_exactly_the_undominated_points():
    pts = [(10, 0.5), (20, 0.7), (15, 0.4), (30, 0.7), (5, 0.2), (25, 0.9), (20, 0.7)]
    # (15, 0.4) is beaten by (10, 0.5); (30, 0.7) by (20, 0.7); the second (20, 0.7) is a duplicate
    assert pareto_front(pts) == [4, 0, 1, 5]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 0.1)]) == [0]


# ---------------------------------------------------------------- end to end, from the CLI
@pytest.fixture(scope="module")
def cli_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "digits"
    argv = ["compare", "--methods", "static,gradmax", "--data", "digits", "--budget", "3"]
    argv += ["--seeds", "1", "--width", "8", "--batch-size", "64", "--threads", "1"]
    argv += ["--out", str(out), "--name", "tiny", "--no-progress"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradMax's rank warning on tiny layers
        assert cli.main(argv) == 0
    return out


def test_compare_writes_the_report_and_its_plots(cli_report):
    out = cli_report
    for name in ("report.md", "report.html", *(p for p, _ in PLOTS)):
        assert (out / name).stat().st_size > 0, name
    for name, _ in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    md = (out / "report.md").read_text()
    assert "# torchgrow compare: tiny" in md and "## How to read this report" in md
    for name, _ in PLOTS:
        assert f"]({name})" in md


def test_the_tables_numbers_equal_the_run_logs(cli_report):
    out = cli_report
    md = (out / "report.md").read_text()
    results = {r["method"]: r for r in load_results(out)}
    assert set(results) == {"static", "gradmax"}
    methods = {row["Method"]: row for row in _table(md, TABLE_HEADER)}
    for method, r in results.items():
        row = methods[r["description"]["name"]]
        for q in ("why", "when", "where", "how"):
            assert row[q.capitalize()] == r["description"][q]
        assert row["Test acc. %"] == f"{100 * r['test_accuracy']:.2f}"
        assert row["Parameters"] == f"{r['parameters']:,}"
        assert row["Growth events"] == str(r["growth_events"])
        # the logs: the last metrics row and the events agree with the table
        with open(run_dir(out, method, 0) / "metrics.csv") as fh:
            last = list(csv.DictReader(fh))[-1]
        assert int(last["parameters"]) == r["parameters"]
        assert int(last["training_flops"]) == r["training_flops"]
        events = (run_dir(out, method, 0) / "events.jsonl").read_text().splitlines()
        assert len([e for e in events if json.loads(e)["kind"] == "grow"]) == r["growth_events"]
    runs = {row["Method"]: row for row in _table(md, RUNS_HEADER)}
    for method, r in results.items():
        row = runs[method]
        assert row["Parameters"] == str(r["parameters"])
        assert row["FLOPs/example"] == str(r["flops_per_example"])
        assert row["Training FLOPs"] == str(r["training_flops"])
        assert row["Test acc. %"] == f"{100 * r['test_accuracy']:.2f}"
        delta = r["max_abs_delta"]
        assert row["max |Δout|"] == ("-" if delta is None else f"{delta:.1e}")
    assert results["gradmax"]["growth_events"] > 0 == results["static"]["growth_events"]


def test_the_growth_timeline_lists_every_event_of_the_logs(cli_report):
    md = (cli_report / "report.md").read_text()
    rows = _table(md, TIMELINE_HEADER)
    logged = [
        json.loads(line)
        for line in (run_dir(cli_report, "gradmax", 0) / "events.jsonl").read_text().splitlines()
    ]
    assert len(rows) == len(logged) > 0  # static has no event
    for row, e in zip(rows, logged, strict=True):
        assert row["Method"] == "GradMax" and row["Seed"] == "0"
        assert (row["Epoch"], row["Kind"], row["What"]) == (str(e["epoch"]), e["kind"], e["detail"])
        assert row["Parameters after"] == f"{e['parameters_after']:,}"
        assert row["max |Δout|"] == f"{e['max_abs_delta']:.1e}"
    page = (cli_report / "report.html").read_text()
    assert "<h2>Growth timeline</h2>" in page
    assert f"<td>{html.escape(logged[0]['detail'])}</td>" in page


def test_the_learning_curves_are_the_runs_per_epoch_logs(cli_report):
    comparison = load_comparison(cli_report)
    for method in ("static", "gradmax"):
        with open(run_dir(cli_report, method, 0) / "metrics.csv") as fh:
            logged = list(csv.DictReader(fh))
        for key in ("val_accuracy", "val_loss"):
            epochs, mean, low, high = epoch_curves(comparison, method, key)
            assert epochs == [int(r["epoch"]) for r in logged]
            assert mean == low == high == [float(r[key]) for r in logged]  # one seed
    assert epoch_curves(comparison, "static", "no such metric") is None


def test_the_html_report_is_self_contained(cli_report):
    page = (cli_report / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(PLOTS)
    assert "http://" not in page and "https://" not in page and "<link" not in page
    results = load_results(cli_report)
    for r in results:
        assert f"<td>{r['description']['name']}</td>" in page
        assert f'<td class="num">{r["training_flops"]}</td>' in page


def test_the_report_command_rewrites_it_and_reports_missing_runs(cli_report, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(cli_report, out)
    (run_dir(out, "gradmax", 0) / "result.json").unlink()  # as if it had not finished
    assert cli.main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "**Not finished (not in the table):** gradmax seed 0." in md
    assert [row["Method"] for row in _table(md, TABLE_HEADER)] == ["static"]
    capsys.readouterr()


def test_report_of_a_directory_without_a_comparison_says_so(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "not a comparison directory" in capsys.readouterr().err
    # valid settings, but nothing run yet
    (tmp_path / "config.toml").write_text(CompareConfig(methods=("static",), **TINY).to_toml())
    with pytest.raises(FileNotFoundError, match="no finished run"):
        write_report(tmp_path)
    assert not (tmp_path / "report.md").exists()


# ---------------------------------------------------------------- mean and std over seeds
def test_the_curves_average_seeds_at_the_epochs_all_of_them_reached():
    runs = [
        {"metrics": [{"epoch": 1, "v": 0.2}, {"epoch": 1, "v": 0.4}, {"epoch": 2, "v": 0.6}]},
        {"metrics": [{"epoch": 1, "v": 0.6}, {"epoch": 2, "v": 1.0}, {"epoch": 3, "v": 1.0}]},
    ]  # a run's value at an epoch is its last row there; epoch 3 has one seed only
    comparison = {"methods": {"m": {"runs": runs}}}
    epochs, mean, low, high = epoch_curves(comparison, "m", "v")
    assert epochs == [1, 2] and low == [0.4, 0.6] and high == [0.6, 1.0]
    assert mean == pytest.approx([0.5, 0.8])


def test_summary_is_the_mean_and_sample_std_over_seeds(tmp_path):
    cfg = CompareConfig(methods=("static",), seeds=(0, 1, 2), **TINY)
    results = run_compare(cfg, tmp_path)
    (row,) = summarise_comparison(load_comparison(tmp_path))
    assert row["seeds"] == 3
    for key in ("test_accuracy", "parameters", "training_flops", "wall_seconds"):
        values = [float(r[key]) for r in results]
        mean, std = row[key]
        assert mean == pytest.approx(statistics.fmean(values))
        assert std == pytest.approx(statistics.stdev(values))
    accs = [r["test_accuracy"] for r in results]
    md, _ = write_report(tmp_path)
    (table_row,) = _table(md.read_text(), TABLE_HEADER)
    expected = f"{100 * statistics.fmean(accs):.2f} ± {100 * statistics.stdev(accs):.2f}"
    assert table_row["Test acc. %"] == expected


# ---------------------------------------------------------------- a real browser
def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (make test installs it)")
def test_the_html_report_opens_in_a_headless_browser(cli_report, tmp_path):
    page = (cli_report / "report.html").resolve()
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body[^>]*>", proc.stdout)
    assert body is not None, proc.stdout[:2000]
    body = body.group(0)
    assert f'data-images-loaded="{len(PLOTS)}"' in body, body
    assert 'data-errors="0"' in body, body
    assert "Test acc. %" in proc.stdout
