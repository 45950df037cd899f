"""The README's ten-line example runs as printed, and grows what it says it grows."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _run(pattern: str, what: str, *, one_thread: bool = False, seed: int | None = None) -> dict:
    """Run the first Python block after ``pattern`` in the README; returns its namespace."""
    code = re.search(pattern + r".*?```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None, f"README lost its {what}"
    if seed is not None:
        torch.manual_seed(seed)
    namespace: dict = {}
    threads = torch.get_num_threads()
    if one_thread:
        torch.set_num_threads(1)
    try:
        exec(compile(code.group(1), str(README), "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    return namespace


def _grew_as_promised(namespace: dict) -> None:
    model, grower = namespace["model"], namespace["grower"]
    assert [e.step for e in grower.events] == [100, 100, 200, 200, 300, 300, 400, 400]
    assert model.fc1.out_features == 16 + 4 * 8 and model.fc2.out_features == 16 + 4 * 8
    assert all(e.max_abs_delta <= 1e-6 for e in grower.events)


def test_readme_example_is_ten_lines_that_run_and_grow(capsys):
    block = re.search(
        r"## Grow a network in ten lines\n+```python\n(.*?)```", README.read_text(), re.S
    )
    assert block is not None
    assert len([line for line in block.group(1).splitlines() if line.strip()]) == 10
    namespace = _run(r"## Grow a network in ten lines\n", "example", one_thread=True)
    _grew_as_promised(namespace)
    assert capsys.readouterr().out.count("->") == 8
    assert namespace["history"].last["val_accuracy"] > 0.3


def test_readme_own_loop_example_runs_and_grows(capsys):
    namespace = _run(r"In your own training loop", "own-loop example", one_thread=True)
    _grew_as_promised(namespace)
    assert capsys.readouterr().out.count("->") == 8


def test_readme_own_model_example_runs(capsys):
    import pytest

    pytest.importorskip("transformers")
    namespace = _run(r"### Your own model", "own-model example", seed=0)
    printed = capsys.readouterr().out
    assert "'model.layers.0.mlp.gate_proj', 'model.layers.1.mlp.gate_proj'" in printed
    assert namespace["model"].model.layers[0].mlp.gate_proj.out_features == 64 + 16
    moved = (namespace["model"](namespace["ids"]).logits - namespace["before"]).abs().max()
    assert moved < 1e-5


def test_readme_transformer_example_runs(capsys):
    namespace = _run(r"### Growing transformers", "transformer example", seed=0)
    model, x, before = namespace["model"], namespace["x"], namespace["before"]
    assert len(model.blocks) == 3 and model.tok_emb.embedding_dim == 128
    assert model.blocks[0].attn.n_head == 6 and namespace["ramp"].active
    assert float((model(x) - before).detach().abs().max()) <= 1e-5
    assert float(capsys.readouterr().out.split()[-1]) <= 1e-5


def test_readme_transformer_method_example_runs(capsys):
    namespace = _run(
        r"### Growing transformers.*?The methods built on them",
        "transformer-method example",
        one_thread=True,
        seed=0,
    )
    model, msg = namespace["model"], namespace["msg"]
    assert [e["step"] for e in msg.log] == [20, 40, 80, 100]
    assert len(model.blocks) == 4 and model.blocks[0].attn.n_head == 2
    assert model.blocks[0].mlp.up.out_features == 256
    assert all(e["max_abs_dout"] <= 1e-5 for e in msg.log)  # masked growth keeps the function
    assert "(20, 'FFN 64->256')" in capsys.readouterr().out
