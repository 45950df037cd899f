"""The committed benchmark results: stamped, made from a clean tree, and quoted verbatim.

README.md and docs/ quote tables that the benchmarks wrote into their results
(``benchmarks.render``): if a quote differs from its result, or a result lacks
its stamp, this fails. (Whether a result is older than the code it measured is
``python -m benchmarks.render --fresh``, run before work is called done.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import render  # noqa: E402
from benchmarks.common import RESULTS  # noqa: E402
from benchmarks.run_all import BENCHMARKS  # noqa: E402

RESULT_FILES = sorted(RESULTS.glob("*.json"))


def test_every_benchmark_has_a_committed_result():
    assert {p.stem for p in RESULT_FILES} == set(BENCHMARKS)


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.stem)
def test_results_are_stamped_and_made_from_a_clean_tree(path):
    saved = json.loads(path.read_text())
    meta = saved["meta"]
    assert len(meta["commit"]) == 40 and meta["dirty"] is False, meta
    assert meta["command"].startswith(f"python -m benchmarks.{path.stem}")
    assert "--quick" not in meta["command"] and saved.get("quick") is False
    assert meta["torch"] and isinstance(meta["threads"], int) and meta["date"]
    assert meta["machine"]["cpu_count"]
    for commit in saved.get("run_commits", []):  # results merged over invocations
        assert commit == meta["commit"], f"{path.stem}: a run made at {commit}"


def test_readme_and_docs_quote_the_results_as_they_were_made():
    problems = render.render(check=True)
    assert not problems, "\n".join(problems) + "\nrun: python -m benchmarks.render"


def test_every_quote_names_a_benchmark():
    names = {m["name"] for d in render.documents() for m in render.MARKER.finditer(d.read_text())}
    assert names and names <= set(BENCHMARKS)


def test_a_result_depends_on_the_library_and_the_benchmark_modules_it_imports():
    deps = render.dependencies("nest_study")
    assert {"src/torchgrow/__init__.py", "src/torchgrow/methods/nest.py"} <= set(deps)
    assert {"constraints.txt", "benchmarks/common.py"} <= set(deps)
    # library modules it cannot import are not what it measured; a subprocess counts
    assert "src/torchgrow/compare/runner.py" not in deps
    assert "src/torchgrow/compare/runner.py" in render.dependencies("compare_fashion_mnist")
    assert "src/torchgrow/cli/__init__.py" in render.dependencies(
        "growth_cost"
    )  # python -m torchgrow
    assert {"benchmarks/nest_study.py", "benchmarks/nest_lenet.py"} <= set(deps)
    # another benchmark's script, the renderer and the tests are not what it measured
    assert not {"benchmarks/overhead.py", "benchmarks/render.py", "tests"} & set(deps)
    assert "benchmarks/graph_zoo.py" in render.dependencies("graph_coverage")
