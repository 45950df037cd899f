"""The documentation (guides and the API reference generated from the docstrings) builds with
warnings as errors, so a broken docstring reference or link fails the suite."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from benchmarks.common import ROOT

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")


def _build(config, site) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_docs_build_strictly_with_the_api_reference(tmp_path):
    proc = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode == 0, proc.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "training" / "index.html").read_text()
    assert "GrowthCallback" in api and "restore_architecture" in api
    grower = (tmp_path / "site" / "api" / "grower" / "index.html").read_text()
    assert "flush_subnormals_every" in grower  # a parameter from the numpy docstring


def test_a_reference_to_a_missing_object_fails_the_build(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    (docs / "api" / "grower.md").write_text("# Grower\n\n::: torchgrow.NoSuchGrower\n")
    config = tmp_path / "mkdocs.yml"
    text = (ROOT / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {docs}")
    config.write_text(text.replace("paths: [src]", f"paths: [{ROOT / 'src'}]"))
    proc = _build(config, tmp_path / "site")
    assert proc.returncode != 0
    assert "NoSuchGrower" in proc.stderr
