"""The README's ten-line example runs as printed, and grows what it says it grows."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_grows(capsys):
    code = re.search(
        r"## Grow a network in ten lines\n.*?```python\n(.*?)```", README.read_text(), re.S
    )
    assert code is not None, "README lost its example"
    namespace: dict = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(code.group(1), str(README), "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    model, grower = namespace["model"], namespace["grower"]
    assert [e.step for e in grower.events] == [100, 100, 200, 200, 300, 300, 400, 400]
    assert model.fc1.out_features == 16 + 4 * 8 and model.fc2.out_features == 16 + 4 * 8
    assert all(e.max_abs_delta <= 1e-6 for e in grower.events)
    printed = capsys.readouterr().out
    assert printed.count("->") == 8


def test_readme_own_model_example_runs(capsys):
    import pytest

    pytest.importorskip("transformers")
    code = re.search(r"### Your own model.*?```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None, "README lost its own-model example"
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(code.group(1), str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "'model.layers.0.mlp.gate_proj', 'model.layers.1.mlp.gate_proj'" in printed
    assert namespace["model"].model.layers[0].mlp.gate_proj.out_features == 64 + 16
    moved = (namespace["model"](namespace["ids"]).logits - namespace["before"]).abs().max()
    assert moved < 1e-5


def test_readme_transformer_example_runs(capsys):
    code = re.search(r"### Growing transformers.*?```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None, "README lost its transformer example"
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(code.group(1), str(README), "exec"), namespace)
    model, x, before = namespace["model"], namespace["x"], namespace["before"]
    assert len(model.blocks) == 3 and model.tok_emb.embedding_dim == 128
    assert model.blocks[0].attn.n_head == 6 and namespace["ramp"].active
    assert float((model(x) - before).detach().abs().max()) <= 1e-5
    assert float(capsys.readouterr().out.split()[-1]) <= 1e-5


def test_readme_transformer_method_example_runs(capsys):
    code = re.search(
        r"### Growing transformers.*?The methods built on them.*?```python\n(.*?)```",
        README.read_text(),
        re.S,
    )
    assert code is not None, "README lost its transformer-method example"
    torch.manual_seed(0)
    namespace: dict = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(code.group(1), str(README), "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    model, msg = namespace["model"], namespace["msg"]
    assert [e["step"] for e in msg.log] == [20, 40, 80, 100]
    assert len(model.blocks) == 4 and model.blocks[0].attn.n_head == 2
    assert model.blocks[0].mlp.up.out_features == 256
    assert all(e["max_abs_dout"] <= 1e-5 for e in msg.log)  # masked growth keeps the function
    assert "(20, 'FFN 64->256')" in capsys.readouterr().out
