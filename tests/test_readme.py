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
