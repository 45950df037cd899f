"""The environment files' rule for results: a result is stale only when the base
environment it ran in can have changed (benchmarks/environment.py)."""

from __future__ import annotations

import re
import tomllib

import pytest

from benchmarks.common import ROOT
from benchmarks.environment import OVER_FROZEN_BASE, environment_reason

BASE = """
[build-system]
requires = ["setuptools>=77"]

[project]
name = "x"
description = "old"
requires-python = ">=3.11"
dependencies = ["torch>=2.5", "matplotlib>=3.8"]

[project.optional-dependencies]
report = []
dev = ["pytest>=8"]
lightning = ["lightning>=2.2"]

[tool.ruff]
line-length = 100
"""


def _edit(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


@pytest.mark.parametrize(
    "new",
    [
        _edit('"torch>=2.5", "matplotlib>=3.8"]', '"torch>=2.5"]').replace(
            "report = []", 'report = ["matplotlib>=3.8"]'
        ),  # a requirement moves from the core into an extra
        _edit('description = "old"', 'description = "new"'),
        _edit("line-length = 100", "line-length = 120"),
        _edit('lightning = ["lightning>=2.2"]', 'lightning = ["lightning>=2.3", "accelerate"]'),
        _edit("report = []", 'report = []\nhf = ["transformers"]'),  # an extra over the base
    ],
)
def test_the_same_base_environment_keeps_results_fresh(new):
    assert environment_reason("pyproject.toml", BASE, new) is None


@pytest.mark.parametrize(
    "new",
    [
        _edit('"torch>=2.5"', '"torch>=2.6"'),
        _edit('dev = ["pytest>=8"]', 'dev = ["pytest>=8", "scipy"]'),
        _edit('requires-python = ">=3.11"', 'requires-python = ">=3.12"'),
        _edit('requires = ["setuptools>=77"]', 'requires = ["setuptools>=80"]'),
        _edit("report = []", 'report = []\nplots = ["seaborn"]'),  # a new base extra
        "[project\nbroken",
    ],
)
def test_a_change_to_what_the_base_installs_makes_results_stale(new):
    assert environment_reason("pyproject.toml", BASE, new) is not None


def test_constraints_are_read_as_pins():
    old = "# tested torch\ntorch==2.13.0\n"
    assert (
        environment_reason("constraints.txt", old, "# the torch CI uses\n\ntorch == 2.13.0") is None
    )
    assert environment_reason("constraints.txt", old, "torch==2.13.0\nnumpy==2.4.6\n")
    assert environment_reason("constraints.txt", old, "torch==2.12.0\n")


def _installs(makefile: str) -> list[tuple[set[str], bool]]:
    """(groups, over the frozen base?) for each pip install of the package in the full install."""
    recipe = makefile.split("$(STAMP):", 1)[1].split("\ninstall:", 1)[0]
    out = []
    for line in recipe.splitlines():
        m = re.search(r"pip install .*-e '\.\[([^\]]*)\]'", line)
        if m:
            out.append(({g.strip() for g in m.group(1).split(",")}, "base-freeze.txt" in line))
    return out


def test_the_makefile_installs_the_integrations_over_a_frozen_base():
    makefile = (ROOT / "Makefile").read_text()
    assert "pip freeze --exclude-editable > $(VENV)/base-freeze.txt" in makefile
    installs = _installs(makefile)
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    base = set().union(*(g for g, frozen in installs if not frozen))
    over = set().union(*(g for g, frozen in installs if frozen))
    assert over and over <= set(OVER_FROZEN_BASE)
    assert not base & set(OVER_FROZEN_BASE)
    # the full install holds every extra (tensorboard's and the demo's mnist1d through others)
    installed = set().union(*(groups[g] for g in base | over))
    for name, reqs in groups.items():
        assert set(reqs) <= installed, name
